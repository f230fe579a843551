package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/store"
)

// etcdPKI writes a CA of etcd's own, a server certificate for 127.0.0.1 and a client certificate
// signed by it into dir (ca.crt, server.crt/.key, client.crt/.key).
func etcdPKI(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.NewCA("e2e etcd CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(pki.Request{CommonName: "etcd", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	// pki's client certificates carry a Fleetgate role; etcd looks only at the chain and the key usage.
	cli, err := ca.Issue(pki.Request{CommonName: "controlplane", Roles: []string{pki.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"ca.crt": ca.CertPEM(), "server.crt": srv.CertPEM, "server.key": srv.KeyPEM, "client.crt": cli.CertPEM, "client.key": cli.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// The control plane on the Debian etcd serving TLS with client certificates required: with
// --etcd-ca-file, --etcd-cert-file and --etcd-key-file it stores and serves a gateway; a missing
// file or a refused handshake stops it at start with an error naming the flag.
func TestControlPlaneOnTLSEtcd(t *testing.T) {
	bin := etcdBinary(t)
	dir := t.TempDir()
	etcdPKI(t, dir)
	file := func(name string) string { return filepath.Join(dir, name) }
	endpoint := startEtcdCluster(t, bin, []string{"127.0.0.1"}, "--client-cert-auth", "--trusted-ca-file", file("ca.crt"),
		"--cert-file", file("server.crt"), "--key-file", file("server.key"))[0].client
	if !strings.HasPrefix(endpoint, "https://") {
		t.Fatalf("etcd endpoint %s", endpoint)
	}
	files := store.EtcdTLS{CAFile: file("ca.crt"), CertFile: file("client.crt"), KeyFile: file("client.key")}
	tlsCfg, err := store.EtcdClientTLS([]string{endpoint}, files)
	if err != nil {
		t.Fatal(err)
	}
	etcd := etcdClientTLS(t, []string{endpoint}, tlsCfg)
	eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := etcd.Get(ctx, "/e2e/ready")
		return err == nil
	}, "etcd over TLS does not answer")

	// Refusals at start: each exits with an error that names what to fix.
	pkiDir := certsInit(t)
	base := []string{"--listen", "127.0.0.1:0", "--etcd-endpoints", endpoint, "--pki-dir", pkiDir, "--data-dir", t.TempDir(),
		"--encryption-key-file", filepath.Join(pkiDir, "encryption.key")}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"key file missing", []string{"--etcd-ca-file", file("ca.crt"), "--etcd-cert-file", file("client.crt"), "--etcd-key-file", file("nope.key")},
			"--etcd-key-file: stat " + file("nope.key")},
		{"certificate without key", []string{"--etcd-ca-file", file("ca.crt"), "--etcd-cert-file", file("client.crt")},
			"--etcd-cert-file and --etcd-key-file go together"},
		{"no client certificate", []string{"--etcd-ca-file", file("ca.crt")},
			"refused the client certificate: give --etcd-cert-file and --etcd-key-file"},
		{"etcd's CA not given", []string{"--etcd-cert-file", file("client.crt"), "--etcd-key-file", file("client.key")},
			"not signed by a CA of --etcd-ca-file"},
		{"plaintext endpoint with TLS files", []string{"--etcd-endpoints", "http://" + strings.TrimPrefix(endpoint, "https://"), "--etcd-ca-file", file("ca.crt")},
			"--etcd-endpoints are http:// (plaintext): use https://"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "controlplane"), append(append([]string{}, base...), c.args...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: controlplane exit %d (%v), want 1 and %q:\n%s", c.name, cmd.ProcessState.ExitCode(), err, c.want, tail(string(out), 10))
		}
	}

	// With the three files: the control plane stores in and serves from that etcd.
	cpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	start(t, "cp-tls", "controlplane", append(base[2:], "--listen", cpAddr, "--replica", "cp-tls",
		"--etcd-ca-file", file("ca.crt"), "--etcd-cert-file", file("client.crt"), "--etcd-key-file", file("client.key"))...)
	useCreds(t, cpAddr, "--pki-dir", pkiDir)
	waitServing(t, cpAddr, 30*time.Second)
	bport := freePort(t, "127.0.0.13")
	newBackend(t, "T", fmt.Sprintf("127.0.0.13:%d", bport), modeEcho)
	web := freePort(t, "127.0.0.7")
	start(t, "dp-tls", "dataplane", "--controlplane", cpAddr, "--gateway", "appgw1", "--id", "dp-tls", "--bind-address", "127.0.0.7",
		"--state-dir", t.TempDir(), "--pki-dir", pkiDir)
	doc := writeFile(t, "gw.yaml", fmt.Sprintf(`
name: appgw1
httpListeners: [{name: web, port: %d}]
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.13}]}]
backendHttpSettingsCollection: [{name: s1, port: %d}]
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, web, bport))
	r := ctl(t, cpAddr, "apply", "-f", doc)
	if r.code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	url := fmt.Sprintf("http://127.0.0.7:%d/tls", web)
	eventually(t, 15*time.Second, func() bool { body, code := get(url); return code == 200 && echoed(body) == "T /tls" }, "the worker does not serve the gateway")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := etcd.Get(ctx, store.GatewayKey("appgw1"))
	if err != nil || len(resp.Kvs) != 1 || !strings.Contains(r.stdout, fmt.Sprintf("(revision %d)", resp.Kvs[0].ModRevision)) {
		t.Fatalf("the gateway in etcd (read over TLS): %v, %v; apply said %q", resp, err, r.stdout)
	}
}
