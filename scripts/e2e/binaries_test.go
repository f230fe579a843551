package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- the fleet's binaries, as the fault tests start them ----
//
// Their command lines are built here, so that a change of their flags is adapted in one place. The
// binaries are connected as in production: TLS from one PKI per test (--pki-dir), made by the
// test's first control plane.

// pkiDirs holds each test's PKI directory.
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
	args := append([]string{"--listen", listen, "--etcd-endpoints", endpoints, "--replica", name, "--data-dir", sharedDataDir(t),
		"--pki-dir", pkiDir(t)}, extra...)
	useCreds(t, listen, "--pki-dir", pkiDir(t))
	return start(t, name, "controlplane", args...)
}

// startEmbeddedControlPlane runs a replica on its own embedded etcd (client address returned).
func startEmbeddedControlPlane(t *testing.T, name, listen, host string, extra ...string) (*proc, string) {
	t.Helper()
	client := fmt.Sprintf("%s:%d", host, freePort(t, host))
	args := append([]string{"--listen", listen, "--replica", name, "--data-dir", t.TempDir(),
		"--etcd-client-addr", client, "--etcd-peer-addr", fmt.Sprintf("%s:%d", host, freePort(t, host)), "--pki-dir", pkiDir(t)}, extra...)
	useCreds(t, listen, "--pki-dir", pkiDir(t))
	return start(t, name, "controlplane", args...), "http://" + client
}

// worker is a running data-plane worker.
type worker struct {
	*proc
	id    string
	bind  string
	admin string // host:port of /healthz, /readyz, /metrics
}

// startWorker starts a data-plane worker; controlplane may list several replicas (a,b); extra
// flags are appended.
func startWorker(t *testing.T, id, controlplane, bind string, extra ...string) *worker {
	t.Helper()
	admin := fmt.Sprintf("%s:%d", bind, freePort(t, bind))
	args := []string{"--controlplane", controlplane, "--gateway", gatewayName, "--id", id,
		"--bind-address", bind, "--state-dir", t.TempDir(), "--admin-address", admin, "--shutdown-grace", "2s", "--pki-dir", pkiDir(t)}
	args = append(args, extra...)
	p := start(t, id, "dataplane", args...)
	return &worker{proc: p, id: id, bind: bind, admin: admin}
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
