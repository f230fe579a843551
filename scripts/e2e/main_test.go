// Package e2e starts the real binaries together (control plane, data-plane workers, gatewayctl) with
// real backends and checks what an operator would see. `make e2e` runs it.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries under test, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
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
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary whose output goes to a log file shown when the test fails.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- %s log ----\n%s", name, tail(string(b), 60))
		}
	})
	return p
}

// stop sends SIGTERM and waits, then SIGKILL after 10s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// ctlCreds are the credential flags gatewayctl passes to each control plane (by address), set by
// the test that starts it (see pkiFlags).
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

// certsInit runs `controlplane certs init --dir DIR` and returns DIR.
func certsInit(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if out, err := exec.Command(filepath.Join(binDir, "controlplane"), "certs", "init", "--dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("controlplane certs init: %v\n%s", err, out)
	}
	return dir
}

// ctl runs gatewayctl and returns its stdout, stderr and exit code.
func ctl(t *testing.T, server string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctlCredsMu.Lock()
	creds := ctlCreds[server]
	ctlCredsMu.Unlock()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gatewayctl"), append(append([]string{"--server", server}, creds...), args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gatewayctl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

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

// backend serves "NAME PATH" on addr until the test ends.
func backend(t *testing.T, addr, name string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

// get sends one request with an optional Host header; it returns the body and status (0 on error).
func get(url, host string) (string, int) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return err.Error(), 0
	}
	if host != "" {
		req.Host = host
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
