package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/ctl"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func runArgs(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestFlagConflicts(t *testing.T) {
	for _, args := range [][]string{
		{"--insecure", "--token-file", "tokens"},
		{"--insecure", "--tls-san", "x.example.com"},
		{"--insecure", "--pki-dir", "d"},
		{"--tls-cert-file", "a.crt"},
		{"--tls-cert-file", "a.crt", "--tls-key-file", "a.key"},
		{"--tls-cert-file", "a.crt", "--tls-key-file", "a.key", "--tls-client-ca-file", "ca.crt", "--pki-dir", "d"},
		{"extra"},
		{"certs"},
		{"certs", "bogus"},
		{"certs", "init"},
		{"certs", "issue", "--dir", "d"},
		{"certs", "issue", "--dir", "d", "--admin", "a", "--reader", "b"},
		{"certs", "issue", "--dir", "d", "--admin", "a", "--validity", "-1h"},
	} {
		if code, _, stderr := runArgs(args...); code != exitUsage {
			t.Errorf("controlplane %s: exit %d, want 2\n%s", strings.Join(args, " "), code, stderr)
		}
	}
}

// `certs init` and `certs issue` make files a control plane, workers and gatewayctl can use.
func TestCertsInitAndIssue(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, stderr := runArgs("certs", "init", "--dir", dir, "--san", "cp.example.com,10.9.8.7")
	if code != exitOK || !strings.Contains(out, "created CA") || !strings.Contains(out, "--pki-dir "+dir) {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, stderr)
	}
	for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key", "dataplane.crt", "dataplane.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", f, fi.Mode().Perm())
		}
	}
	if code, out, _ := runArgs("certs", "init", "--dir", dir, "--san", "cp.example.com"); code != exitOK || !strings.Contains(out, "nothing to do") {
		t.Errorf("certs init again: exit %d\n%s", code, out)
	}
	code, out, stderr = runArgs("certs", "issue", "--dir", dir, "--dataplane", "dp-1")
	if code != exitOK || !strings.Contains(out, "dataplane-dp-1.crt") || !strings.Contains(out, "--id dp-1") {
		t.Fatalf("certs issue --dataplane: exit %d\n%s%s", code, out, stderr)
	}
	outDir := t.TempDir()
	if code, out, stderr := runArgs("certs", "issue", "--dir", dir, "--reader", "rita", "--out-dir", outDir, "--validity", "24h"); code != exitOK {
		t.Fatalf("certs issue --reader: exit %d\n%s%s", code, out, stderr)
	}
	if code, _, stderr := runArgs("certs", "issue", "--dir", t.TempDir(), "--admin", "x"); code != exitError || !strings.Contains(stderr, "ca.crt") {
		t.Errorf("certs issue without a CA: exit %d %s", code, stderr)
	}

	// A control plane on those files, as the binary builds it.
	tlsCfg, err := pki.ServerTLS(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(t.Context(), server.Config{EtcdEndpoints: []string{cptest.Etcd(t)}, TLS: tlsCfg, Log: cptest.Logger(t), LeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	addr := lis.Addr().String()

	gatewayctl := func(args ...string) (int, string) {
		var b bytes.Buffer
		code := ctl.Run(context.Background(), append([]string{"--server", addr, "--timeout", "5s"}, args...), ctl.Env{Stdout: &b, Stderr: &b})
		return code, b.String()
	}
	cptest.Eventually(t, 30*time.Second, func() bool { c, _ := gatewayctl("--pki-dir", dir, "list"); return c == 0 }, "admin.crt does not list")
	doc := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(doc, []byte(`
name: gw
httpListeners: [{name: l, port: 8080}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: 9001}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := gatewayctl("--pki-dir", dir, "apply", "-f", doc); code != 0 {
		t.Fatalf("apply with admin.crt: %d %s", code, out)
	}
	reader := []string{"--ca-file", filepath.Join(dir, "ca.crt"), "--cert-file", filepath.Join(outDir, "reader-rita.crt"), "--key-file", filepath.Join(outDir, "reader-rita.key")}
	if code, out := gatewayctl(append(reader, "get", "gw")...); code != 0 {
		t.Fatalf("get with the reader certificate: %d %s", code, out)
	}
	if code, out := gatewayctl(append(reader, "delete", "gw")...); code != 1 || !strings.Contains(out, "permission denied") {
		t.Fatalf("delete with the reader certificate: %d %s", code, out)
	}
	if code, out := gatewayctl("--ca-file", filepath.Join(dir, "ca.crt"), "list"); code != 1 || !strings.Contains(out, "not authenticated") {
		t.Fatalf("list without a certificate: %d %s", code, out)
	}

	// The per-worker certificate: dp-1 only.
	connect := func(id string) error {
		cfg, err := pki.ClientTLS(pki.ClientFiles{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "dataplane-dp-1.crt"), KeyFile: filepath.Join(dir, "dataplane-dp-1.key")})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		stream, err := fgv1.NewDataPlaneServiceClient(conn).Connect(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: &fgv1.Hello{DataplaneId: id, Gateway: "gw"}}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err == nil && resp.GetSnapshot().GetVersion() == 0 {
			t.Errorf("%s: no snapshot", id)
		}
		return err
	}
	if err := connect("dp-1"); err != nil {
		t.Fatalf("dp-1 with its certificate: %v", err)
	}
	if err := connect("dp-2"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("dp-2 with dp-1's certificate: %v", err)
	}
}

func TestListenHosts(t *testing.T) {
	host, _ := os.Hostname()
	for listen, want := range map[string]string{
		"127.0.0.2:7070":       "127.0.0.2",
		"cp.example.com:7070":  "cp.example.com",
		"[fd00::1]:7070":       "fd00::1",
		"0.0.0.0:7070":         host,
		":7070":                host,
		"garbage-without-port": "",
	} {
		got := strings.Join(listenHosts(listen), ",")
		if got != want {
			t.Errorf("listenHosts(%q) = %q, want %q", listen, got, want)
		}
	}
}
