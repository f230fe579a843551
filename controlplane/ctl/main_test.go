package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
)

// cpAddr is the address of the control plane every test of the package shares; pkiDir is its
// auto PKI, whose admin certificate every run presents (see runWith).
var cpAddr, pkiDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests starts one real control plane (embedded etcd included) on loopback for the package's
// tests, runs them and stops it.
func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gatewayctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	pkiDir = filepath.Join(dir, "pki")
	if _, err := pki.Ensure(pkiDir, nil); err != nil {
		fmt.Fprintln(os.Stderr, "PKI:", err)
		return 1
	}
	tlsCfg, err := pki.ServerTLS(filepath.Join(pkiDir, "server.crt"), filepath.Join(pkiDir, "server.key"), filepath.Join(pkiDir, pki.CACertFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, "TLS:", err)
		return 1
	}
	srv, err := server.New(ctx, server.Config{
		DataDir:        dir,
		EtcdClientAddr: "127.0.0.1:0",
		EtcdPeerAddr:   "127.0.0.1:0",
		Replica:        "cp-test",
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		TLS:            tlsCfg,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	defer srv.Stop()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = srv.Serve(lis) }()
	cpAddr = lis.Addr().String()

	// Serve answers once the gateways have been read from etcd.
	deadline := time.Now().Add(30 * time.Second)
	for Run(ctx, []string{"--pki-dir", pkiDir, "--server", cpAddr, "--timeout", "2s", "list"}, Env{}) != ExitOK {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "control plane did not become ready")
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m.Run()
}

// result is one gatewayctl run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs gatewayctl against the shared control plane.
func run(t *testing.T, args ...string) result {
	t.Helper()
	return runWith(t, "", nil, append([]string{"--server", cpAddr}, args...)...)
}

// runWith runs gatewayctl with stdin, an environment and args as given, presenting the shared
// control plane's admin certificate (--pki-dir first).
func runWith(t *testing.T, stdin string, getenv func(string) string, args ...string) result {
	t.Helper()
	return runExactly(t, stdin, getenv, append([]string{"--pki-dir", pkiDir}, args...)...)
}

// runExactly runs gatewayctl with stdin, an environment and args exactly as given.
func runExactly(t *testing.T, stdin string, getenv func(string) string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(t.Context(), args, Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
		Getenv: getenv,
	})
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustRun runs gatewayctl and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != ExitOK {
		t.Fatalf("gatewayctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// validDoc is a valid gateway document; %s is its name. Two listeners, two rules, one pool. Its
// "basic" rule type and omitted defaults differ from the stored (normalized) form.
const validDoc = `name: %s
httpListeners:
  - {name: web, port: 8080}
  - {name: api, port: 8081, hostNames: [api.example.com]}
backendAddressPools:
  - name: pool1
    backendAddresses: [{ipAddress: 127.0.0.10}, {fqdn: app.internal.example}]
backendHttpSettingsCollection:
  - {name: settings1, port: 9001, probe: probe1}
probes:
  - {name: probe1, path: /health}
requestRoutingRules:
  - {name: r1, ruleType: Basic, priority: 100, httpListener: web, backendAddressPool: pool1, backendHttpSettings: settings1}
  - {name: r2, ruleType: basic, priority: 200, httpListener: api, backendAddressPool: pool1, backendHttpSettings: settings1}
`

// invalidDoc decodes but has exactly three invalid fields; %s is its name.
const invalidDoc = `name: %s
httpListeners:
  - {name: web, port: 0}
backendAddressPools:
  - {name: pool1, backendAddresses: [{ipAddress: 127.0.0.10}]}
backendHttpSettingsCollection:
  - {name: settings1, port: 70000}
requestRoutingRules:
  - {name: r1, ruleType: Basic, httpListener: web, backendAddressPool: pool1, backendHttpSettings: settings1}
`

// invalidFields are invalidDoc's three invalid fields.
var invalidFields = []string{
	"httpListeners[0].port",
	"backendHttpSettingsCollection[0].port",
	"requestRoutingRules[0].priority",
}

// writeDoc writes a document into the test's temporary directory and returns its path.
func writeDoc(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// silentServer is a loopback address that accepts connections and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { lis.Close(); <-done })
	return lis.Addr().String()
}

var names atomic.Int64

// uniqueName is a gateway name no other test (nor another run with -count) uses; the gateway is
// deleted when the test ends.
func uniqueName(t *testing.T, base string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", base, names.Add(1))
	t.Cleanup(func() {
		Run(context.Background(), []string{"--pki-dir", pkiDir, "--server", cpAddr, "delete", name}, Env{})
	})
	return name
}
