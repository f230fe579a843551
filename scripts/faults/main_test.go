package faults

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"
)

// binDir holds the binaries under test, built once by TestMain.
var binDir string

// raceEnabled is set by race_test.go: these tests time real processes and are not run under -race.
var raceEnabled bool

var soakFlag = flag.Duration("soak", 0, "duration of TestSoak (default 60s, or 2m when $CI is set)")

func TestMain(m *testing.M) {
	flag.Parse()
	if raceEnabled || testing.Short() {
		os.Exit(m.Run()) // every test skips; nothing to build
	}
	dir, err := os.MkdirTemp("", "fleetgate-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/fleetgate/fleetgate/controlplane/cmd/controlplane",
		"github.com/fleetgate/fleetgate/controlplane/cmd/gatewayctl",
		"github.com/fleetgate/fleetgate/dataplane/cmd/dataplane",
	)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	detectSecurity()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// security is how the tests connect the binaries, found from their flags: TLS from a per-test PKI
// (--pki-dir) when all three take it, else plaintext (--insecure where a binary takes it).
var security struct {
	tls                                 bool
	cpInsecure, dpInsecure, ctlInsecure bool
}

func detectSecurity() {
	help := func(bin string, arg string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, filepath.Join(binDir, bin), arg).CombinedOutput()
		return string(out)
	}
	cp, dp, gc := help("controlplane", "-h"), help("dataplane", "-h"), help("gatewayctl", "--help")
	has := func(usage, flag string) bool {
		return strings.Contains(usage, "-"+flag+" ") || strings.Contains(usage, "-"+flag+"\n") || strings.Contains(usage, "-"+flag+"\t")
	}
	security.tls = has(cp, "pki-dir") && has(dp, "pki-dir") && has(gc, "pki-dir")
	security.cpInsecure, security.dpInsecure, security.ctlInsecure = has(cp, "insecure"), has(dp, "insecure"), has(gc, "insecure")
	mode := "plaintext"
	if security.tls {
		mode = "TLS (per-test --pki-dir)"
	}
	fmt.Fprintf(os.Stderr, "faults: connecting the binaries with %s\n", mode)
}

// pkiDirs holds each test's PKI directory, made by its first control plane.
var pkiDirs sync.Map // *testing.T -> string

func pkiDir(t *testing.T) string {
	if d, ok := pkiDirs.Load(t); ok {
		return d.(string)
	}
	d := t.TempDir()
	pkiDirs.Store(t, d)
	t.Cleanup(func() { pkiDirs.Delete(t) })
	return d
}

// securityArgs are the flags of one binary ("controlplane", "dataplane", "gatewayctl").
func securityArgs(t *testing.T, bin string) []string {
	if security.tls {
		return []string{"--pki-dir", pkiDir(t)}
	}
	insecure := map[string]bool{"controlplane": security.cpInsecure, "dataplane": security.dpInsecure, "gatewayctl": security.ctlInsecure}
	if insecure[bin] {
		return []string{"--insecure"}
	}
	return nil
}

// needBinaries skips a test that cannot run here.
func needBinaries(t *testing.T) {
	t.Helper()
	switch {
	case raceEnabled:
		t.Skip("fault tests time real processes and are not run under -race: run `go test -v ./scripts/faults/`")
	case testing.Short():
		t.Skip("fault tests are skipped with -short")
	}
}

// etcdBinary returns the Debian etcd binary or skips the test.
func etcdBinary(t *testing.T) string {
	t.Helper()
	p, ok := lookEtcd()
	if !ok {
		t.Skip("etcd binary not installed: apt-get install etcd-server (CI installs it), or set $ETCD_BIN")
	}
	return p
}

// lookEtcd finds the etcd binary: $ETCD_BIN, /usr/bin/etcd, or etcd on $PATH.
func lookEtcd() (string, bool) {
	for _, p := range []string{os.Getenv("ETCD_BIN"), "/usr/bin/etcd"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, true
	}
	return "", false
}

// gap records a known gap between what the product does and what the issue asks: logged, and a
// failure when $FAULTS_STRICT is set (to check a fix).
func gap(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("FAULTS_STRICT") != "" {
		t.Errorf("KNOWN GAP: "+format, args...)
		return
	}
	t.Logf("KNOWN GAP (set FAULTS_STRICT=1 to fail on it): "+format, args...)
}

// ---- processes ----

// proc is a running program whose output goes to a log file shown when the test fails.
type proc struct {
	t    *testing.T
	name string
	path string
	args []string
	cmd  *exec.Cmd
	log  string
	done chan struct{}

	mu      sync.Mutex
	stopped bool // SIGSTOPped
}

var logSeq struct {
	sync.Mutex
	n int
}

// start runs one of our binaries (bin without a slash, from binDir) or a program by absolute path.
func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	path := bin
	if !strings.Contains(bin, "/") {
		path = filepath.Join(binDir, bin)
	}
	logSeq.Lock()
	logSeq.n++
	n := logSeq.n
	logSeq.Unlock()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("%02d-%s.log", n, name))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, path: bin, args: args, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if dir := os.Getenv("FAULTS_LOGDIR"); dir != "" { // keep every log
			if b, err := os.ReadFile(logPath); err == nil && os.MkdirAll(dir, 0o755) == nil {
				_ = os.WriteFile(filepath.Join(dir, t.Name()+"-"+filepath.Base(logPath)), b, 0o644)
			}
		}
		if t.Failed() || os.Getenv("FAULTS_LOGS") != "" {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- %s log (pid %d) ----\n%s", name, p.pid(), tail(string(b), 40))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits, then SIGKILL after 10s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	p.cont()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s did not die after SIGKILL", p.name)
	}
}

// freeze sends SIGSTOP: the process keeps its sockets open and answers nothing.
func (p *proc) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	p.stopped = true
}

// cont sends SIGCONT to a frozen process.
func (p *proc) cont() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.stopped = false
	}
}

// restart starts the same program with the same arguments (the old one must be gone).
func (p *proc) restart() *proc {
	p.t.Helper()
	return start(p.t, p.name+"-restarted", p.path, p.args...)
}

// logText returns the process's output so far.
func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// ---- the fleet's binaries ----
//
// Every command line of our binaries is built here, so that a change of their flags (transport
// security, for one) is adapted in one place.

// sharedDirs holds each test's data directory of its control planes on external etcd: their
// replicas share what the control plane keeps there (the key file sealing listener keys).
var sharedDirs sync.Map // *testing.T -> string

func sharedDataDir(t *testing.T) string {
	if d, ok := sharedDirs.Load(t); ok {
		return d.(string)
	}
	d := t.TempDir()
	sharedDirs.Store(t, d)
	t.Cleanup(func() { sharedDirs.Delete(t) })
	return d
}

// startControlPlane runs a replica on external etcd endpoints (comma-separated client URLs).
func startControlPlane(t *testing.T, name, listen, endpoints string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--listen", listen, "--etcd-endpoints", endpoints, "--replica", name, "--data-dir", sharedDataDir(t)}, extra...)
	return start(t, name, "controlplane", append(args, securityArgs(t, "controlplane")...)...)
}

// startEmbeddedControlPlane runs a replica on its own embedded etcd (client address returned).
func startEmbeddedControlPlane(t *testing.T, name, listen, host string, extra ...string) (*proc, string) {
	t.Helper()
	client := fmt.Sprintf("%s:%d", host, freePort(t, host))
	args := append([]string{"--listen", listen, "--replica", name, "--data-dir", t.TempDir(),
		"--etcd-client-addr", client, "--etcd-peer-addr", fmt.Sprintf("%s:%d", host, freePort(t, host))}, extra...)
	return start(t, name, "controlplane", append(args, securityArgs(t, "controlplane")...)...), "http://" + client
}

// worker is a running data-plane worker.
type worker struct {
	*proc
	id    string
	bind  string
	admin string // host:port of /healthz, /readyz, /metrics
}

func startWorker(t *testing.T, id, controlplane, bind string) *worker {
	t.Helper()
	admin := fmt.Sprintf("%s:%d", bind, freePort(t, bind))
	args := []string{"--controlplane", controlplane, "--gateway", gatewayName, "--id", id,
		"--bind-address", bind, "--state-dir", t.TempDir(), "--admin-address", admin, "--shutdown-grace", "2s"}
	p := start(t, id, "dataplane", append(args, securityArgs(t, "dataplane")...)...)
	return &worker{proc: p, id: id, bind: bind, admin: admin}
}

// ctlResult is one gatewayctl run.
type ctlResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// ctl runs gatewayctl against server.
func ctl(t *testing.T, server string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gatewayctl"), append(append([]string{"--server", server}, securityArgs(t, "gatewayctl")...), args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	begin := time.Now()
	err := cmd.Run()
	r := ctlResult{stdout: out.String(), stderr: errb.String(), took: time.Since(begin)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gatewayctl %v: %v", args, err)
	}
	return r
}

// waitServing waits until a control plane answers.
func waitServing(t *testing.T, server string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() bool { return ctl(t, server, "--timeout", "2s", "list").code == 0 }, "control plane %s does not answer", server)
}

// ---- configuration and applies ----

const gatewayName = "appgw1"

// gwSpec is the gateway the tests apply. Marker goes into the backend settings' hostName, which the
// backends echo: a response names the configuration that routed it.
type gwSpec struct {
	web     int      // listener port
	bport   int      // backend port
	pool    []string // pool1 server IPs
	slow    string   // optional: /slow/* goes to this server, requestTimeout 1 s
	reset   string   // optional: /reset/* goes to this server
	marker  int
	timeout int // pool1 requestTimeout (default 5)
	// The probe: every second, /health, Host 127.0.0.1. Default: timeout 2 s, 3 failures (a machine
	// shared with other work may stall a worker for a second). flappy: timeout 1 s, 1 failure, and
	// minServers 1, so that a stall that times out every probe at once fails open to the first
	// server instead of answering 502.
	flappy bool
}

func (g gwSpec) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nhttpListeners:\n  - {name: web, protocol: Http, port: %d}\n", gatewayName, g.web)
	b.WriteString("backendAddressPools:\n  - name: pool1\n    backendAddresses: [")
	for i, ip := range g.pool {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "{ipAddress: %s}", ip)
	}
	b.WriteString("]\n")
	if g.slow != "" {
		fmt.Fprintf(&b, "  - {name: slow, backendAddresses: [{ipAddress: %s}]}\n", g.slow)
	}
	if g.reset != "" {
		fmt.Fprintf(&b, "  - {name: reset, backendAddresses: [{ipAddress: %s}]}\n", g.reset)
	}
	timeout := g.timeout
	if timeout == 0 {
		timeout = 5
	}
	fmt.Fprintf(&b, "backendHttpSettingsCollection:\n  - {name: settings1, port: %d, protocol: Http, requestTimeout: %d, hostName: %s, probe: probe1}\n",
		g.bport, timeout, markerHost(g.marker))
	if g.slow != "" {
		fmt.Fprintf(&b, "  - {name: fast-timeout, port: %d, protocol: Http, requestTimeout: 1, probe: probe1}\n", g.bport)
	}
	if g.flappy {
		b.WriteString("probes:\n  - {name: probe1, protocol: Http, host: 127.0.0.1, path: /health, interval: 1, timeout: 1, unhealthyThreshold: 1, minServers: 1}\n")
	} else {
		b.WriteString("probes:\n  - {name: probe1, protocol: Http, host: 127.0.0.1, path: /health, interval: 1, timeout: 2, unhealthyThreshold: 3}\n")
	}
	if g.slow != "" || g.reset != "" {
		b.WriteString("urlPathMaps:\n  - name: map1\n    defaultBackendAddressPool: pool1\n    defaultBackendHttpSettings: settings1\n    pathRules:\n")
		if g.slow != "" {
			b.WriteString("      - {name: slow, paths: [\"/slow/*\"], backendAddressPool: slow, backendHttpSettings: fast-timeout}\n")
		}
		if g.reset != "" {
			b.WriteString("      - {name: reset, paths: [\"/reset/*\"], backendAddressPool: reset, backendHttpSettings: settings1}\n")
		}
		b.WriteString("requestRoutingRules:\n  - {name: r1, ruleType: PathBasedRouting, priority: 100, httpListener: web, urlPathMap: map1}\n")
	} else {
		b.WriteString("requestRoutingRules:\n  - {name: r1, ruleType: Basic, priority: 100, httpListener: web, backendAddressPool: pool1, backendHttpSettings: settings1}\n")
	}
	return b.String()
}

func markerHost(m int) string { return fmt.Sprintf("m%06d.fleet.test", m) }

var markerRE = regexp.MustCompile(`host=m(\d{6})\.fleet\.test`)

// markerOf returns the configuration marker a response body names, or -1.
func markerOf(body string) int {
	m := markerRE.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var appliedRE = regexp.MustCompile(`gateway/\S+ (applied|unchanged) \(revision (\d+)\)`)

// ack is an apply that gatewayctl reported as done.
type ack struct {
	marker   int
	revision int64
	at       time.Time     // when gatewayctl returned
	took     time.Duration // how long gatewayctl took
}

// applier applies configurations and keeps the acknowledged ones.
type applier struct {
	t    *testing.T
	dir  string
	mu   sync.Mutex
	acks []ack
	// failed counts applies that returned an error (their outcome is unknown to the caller).
	failed int
	errors []string
}

func newApplier(t *testing.T) *applier { return &applier{t: t, dir: t.TempDir()} }

// apply applies g through server; on success the ack is recorded and returned.
func (a *applier) apply(server string, g gwSpec, extra ...string) (ack, ctlResult, bool) {
	a.t.Helper()
	file := filepath.Join(a.dir, fmt.Sprintf("gw-%06d.yaml", g.marker))
	if err := os.WriteFile(file, []byte(g.yaml()), 0o600); err != nil {
		a.t.Fatal(err)
	}
	r := ctl(a.t, server, append(extra, "apply", "-f", file)...)
	a.mu.Lock()
	defer a.mu.Unlock()
	m := appliedRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		a.failed++
		a.errors = append(a.errors, strings.TrimSpace(r.stderr))
		return ack{}, r, false
	}
	rev, _ := strconv.ParseInt(m[2], 10, 64)
	k := ack{marker: g.marker, revision: rev, at: time.Now(), took: r.took}
	a.acks = append(a.acks, k)
	return k, r, true
}

// mustApply applies and fails the test if the apply is not acknowledged.
func (a *applier) mustApply(server string, g gwSpec) ack {
	a.t.Helper()
	k, r, ok := a.apply(server, g, "--timeout", "20s") // generous: the machine may be shared and slow
	if !ok {
		a.t.Fatalf("apply of marker %d via %s: exit %d after %s\n%s%s", g.marker, server, r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	}
	return k
}

func (a *applier) acked() []ack {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]ack(nil), a.acks...)
}

func (a *applier) last() ack {
	acks := a.acked()
	if len(acks) == 0 {
		return ack{}
	}
	return acks[len(acks)-1]
}

// ---- HTTP ----

// freePort returns a port free on host now.
func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var plainClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get sends one request; it returns the body and status (0 on error, the body then the error).
func get(url string) (string, int) {
	resp, err := plainClient.Get(url)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err.Error(), 0
	}
	return string(b), resp.StatusCode
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) time.Duration {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(begin)
}

// waitMarker waits until the worker routes with the configuration of marker (or a later one) and
// returns how long that took.
func waitMarker(t *testing.T, w *worker, web, marker int, timeout time.Duration) time.Duration {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d/probe-marker", w.bind, web)
	begin := time.Now()
	for {
		body, code := get(url)
		if code == 200 && markerOf(body) >= marker {
			return time.Since(begin)
		}
		if time.Since(begin) > timeout {
			t.Fatalf("after %s: worker %s does not serve marker %d (last answer %d %q)", timeout, w.id, marker, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads one unlabelled sample (e.g. go_goroutines) from a Prometheus text endpoint.
func metric(url, name string) (float64, bool) {
	body, code := get(url)
	if code != 200 {
		return 0, false
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// rssKiB reads VmRSS of a process from /proc.
func rssKiB(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// summary logs a two-column table.
func summary(t *testing.T, title string, rows [][2]string) {
	t.Helper()
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\n== %s ==\n", title)
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\n", r[0], r[1])
	}
	w.Flush()
	t.Log(b.String())
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
