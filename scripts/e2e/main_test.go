package e2e

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

// raceEnabled is set by race_test.go: the fault tests time real processes and are not run under -race.
var raceEnabled bool

var soakFlag = flag.Duration("soak", 0, "duration of TestSoak (default 60s, or 2m when $CI is set)")

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "fleetgate-e2e-bin-")
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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// faultTest skips a fault or soak test where it cannot run as meant.
func faultTest(t *testing.T) {
	t.Helper()
	switch {
	case raceEnabled:
		t.Skip("fault tests time real processes and are not run under -race: run `make faults`")
	case testing.Short():
		t.Skip("fault and soak tests are skipped with -short")
	}
}

// etcdBinary returns the Debian etcd binary, or skips the test without it (fails it when
// $FLEETGATE_REQUIRE_ETCD is set, as in CI).
func etcdBinary(t *testing.T) string {
	t.Helper()
	p, ok := lookEtcd()
	if !ok {
		const msg = "etcd binary not found ($ETCD_BIN, /usr/bin/etcd, $PATH): apt-get install etcd-server"
		if os.Getenv("FLEETGATE_REQUIRE_ETCD") != "" {
			t.Fatal(msg + " ($FLEETGATE_REQUIRE_ETCD is set: this run must test against it)")
		}
		t.Skip(msg + " (CI installs it)")
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

// gap records a known gap between what the product does and what it should: logged, and a
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
		if dir := os.Getenv("E2E_LOGDIR"); dir != "" { // keep every log
			if b, err := os.ReadFile(logPath); err == nil && os.MkdirAll(dir, 0o755) == nil {
				_ = os.WriteFile(filepath.Join(dir, t.Name()+"-"+filepath.Base(logPath)), b, 0o644)
			}
		}
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- %s log (pid %d) ----\n%s", name, p.pid(), tail(string(b), 50))
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

// ---- gatewayctl ----

// ctlCreds are the credential flags gatewayctl passes to each control plane (by address), set by
// the test or fixture that starts it.
var (
	ctlCredsMu sync.Mutex
	ctlCreds   = map[string][]string{}
)

// useCreds makes ctl pass flags (--pki-dir DIR, say) to the control plane at server.
func useCreds(t *testing.T, server string, flags ...string) {
	ctlCredsMu.Lock()
	defer ctlCredsMu.Unlock()
	ctlCreds[server] = flags
	t.Cleanup(func() {
		ctlCredsMu.Lock()
		defer ctlCredsMu.Unlock()
		delete(ctlCreds, server)
	})
}

// ctlResult is one gatewayctl run.
type ctlResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// ctl runs gatewayctl against server, with the credentials registered for it (useCreds) and args.
func ctl(t *testing.T, server string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctlCredsMu.Lock()
	creds := ctlCreds[server]
	ctlCredsMu.Unlock()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gatewayctl"), append(append([]string{"--server", server}, creds...), args...)...)
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

// certsInit runs `controlplane certs init --dir DIR` and returns DIR.
func certsInit(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if out, err := exec.Command(filepath.Join(binDir, "controlplane"), "certs", "init", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("controlplane certs init: %v\n%s", err, out)
	}
	return dir
}

// ---- network, HTTP, files ----

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
func get(url string) (string, int) { return getHost(url, "") }

// getHost is get with a Host header (none when host is empty).
func getHost(url, host string) (string, int) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err.Error(), 0
	}
	if host != "" {
		req.Host = host
	}
	resp, err := plainClient.Do(req)
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

// eventually polls cond every 50 ms until it holds or timeout passes, and returns how long it took.
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

// writeFile writes a file in the test's temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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
