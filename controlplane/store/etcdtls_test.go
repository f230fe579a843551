package store_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/store"
)

// tlsFiles writes a CA, a server certificate for 127.0.0.1 and a client certificate signed by it
// into dir, as NAME-ca.crt, NAME-server.crt/.key and NAME-client.crt/.key.
func tlsFiles(t *testing.T, dir, name string) {
	t.Helper()
	ca, err := pki.NewCA(name+" etcd CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+"-ca.crt", ca.CertPEM())
	srv, err := ca.Issue(pki.Request{CommonName: "etcd", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	write(name+"-server.crt", srv.CertPEM)
	write(name+"-server.key", srv.KeyPEM)
	// pki issues client certificates (extended key usage client auth) with a Fleetgate role; etcd
	// looks at none of it but the chain and the key usage.
	cli, err := ca.Issue(pki.Request{CommonName: "controlplane", Roles: []string{pki.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	write(name+"-client.crt", cli.CertPEM)
	write(name+"-client.key", cli.KeyPEM)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// etcdBinary is the Debian etcd binary ($ETCD_BIN, /usr/bin/etcd or etcd on $PATH). Without it the
// test is skipped, or fails when $FLEETGATE_REQUIRE_ETCD is set (as .ci/run sets it).
func etcdBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ETCD_BIN"), "/usr/bin/etcd"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	const msg = "etcd binary not found ($ETCD_BIN, /usr/bin/etcd, $PATH): apt-get install etcd-server"
	if os.Getenv("FLEETGATE_REQUIRE_ETCD") != "" {
		t.Fatal(msg + " ($FLEETGATE_REQUIRE_ETCD is set: this run must test against it)")
	}
	t.Skip(msg + " (CI installs it)")
	return ""
}

// startTLSEtcd runs the etcd binary serving its clients TLS only, with client certificates required
// (--client-cert-auth) from the CA in dir/good-ca.crt, and returns its https:// endpoint.
func startTLSEtcd(t *testing.T, dir string) string {
	t.Helper()
	bin := etcdBinary(t)
	client, peer := freeAddr(t), freeAddr(t)
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--name", "tls", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "https://"+client, "--advertise-client-urls", "https://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "tls=http://"+peer,
		"--client-cert-auth", "--trusted-ca-file", filepath.Join(dir, "good-ca.crt"),
		"--cert-file", filepath.Join(dir, "good-server.crt"), "--key-file", filepath.Join(dir, "good-server.key"),
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Logf("---- etcd log ----\n%s", b)
		}
	})
	return "https://" + client
}

func newClient(t *testing.T, endpoint string, cfg *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// The store over TLS to the real etcd binary with client-certificate authentication: applies and
// reads go through with the right files; a client without a certificate, or with one from another
// CA, and one that does not trust etcd's CA are refused, with errors naming the flag to fix.
func TestStoreOverTLSToEtcd(t *testing.T) {
	dir := t.TempDir()
	tlsFiles(t, dir, "good")
	tlsFiles(t, dir, "other")
	endpoint := startTLSEtcd(t, dir)
	eps := []string{endpoint}
	file := func(name string) string { return filepath.Join(dir, name) }

	good := store.EtcdTLS{CAFile: file("good-ca.crt"), CertFile: file("good-client.crt"), KeyFile: file("good-client.key")}
	cfg, err := store.EtcdClientTLS(eps, good)
	if err != nil || cfg == nil {
		t.Fatalf("EtcdClientTLS: %v, %v", cfg, err)
	}
	cli := newClient(t, endpoint, cfg)
	s := store.New(cli)
	// etcd is up once a read goes through (bounded: 30 s).
	ready := false
	for range 60 {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := s.Get(ctx, "nothing")
		cancel()
		if errors.Is(err, store.ErrNotFound) {
			ready = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !ready {
		t.Fatal("etcd over TLS did not answer within 30 s")
	}
	if err := store.CheckEtcdTLS(context.Background(), eps, cfg); err != nil {
		t.Fatalf("CheckEtcdTLS with the right files: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rev, changed, err := s.Apply(ctx, gateway("tls", 8080), nil)
	if err != nil || !changed {
		t.Fatalf("apply over TLS: rev %d changed %v err %v", rev, changed, err)
	}
	got, err := s.Get(ctx, "tls")
	if err != nil || got.Revision != rev || got.Gateway.GetHttpListeners()[0].GetPort() != 8080 {
		t.Fatalf("get over TLS: %+v, %v", got, err)
	}

	refused := []struct {
		name  string
		files store.EtcdTLS
		want  []string // in CheckEtcdTLS's error
	}{
		{"no client certificate", store.EtcdTLS{CAFile: file("good-ca.crt")},
			[]string{"refused the client certificate", "--etcd-cert-file"}},
		{"client certificate of another CA", store.EtcdTLS{CAFile: file("good-ca.crt"), CertFile: file("other-client.crt"), KeyFile: file("other-client.key")},
			[]string{"refused the client certificate", "--etcd-cert-file"}},
		{"etcd's CA not trusted", store.EtcdTLS{CAFile: file("other-ca.crt"), CertFile: file("good-client.crt"), KeyFile: file("good-client.key")},
			[]string{"not signed by a CA of --etcd-ca-file"}},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := store.EtcdClientTLS(eps, c.files)
			if err != nil {
				t.Fatal(err)
			}
			err = store.CheckEtcdTLS(context.Background(), eps, cfg)
			if err == nil {
				t.Fatal("CheckEtcdTLS: no error")
			}
			t.Logf("CheckEtcdTLS: %v", err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckEtcdTLS: %v\nwant it to say %q", err, w)
				}
			}
			// The etcd client itself gets nothing through either.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := store.New(newClient(t, endpoint, cfg)).Get(ctx, "tls"); err == nil {
				t.Error("a read went through")
			}
		})
	}
}

// An https:// endpoint of an etcd that serves plaintext (the embedded one) is named as such.
func TestCheckEtcdTLSPlaintextEtcd(t *testing.T) {
	cli := startEtcd(t)
	ep := "https://" + strings.TrimPrefix(cli.Endpoints()[0], "http://")
	cfg, err := store.EtcdClientTLS([]string{ep}, store.EtcdTLS{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CheckEtcdTLS(context.Background(), []string{ep}, cfg); err == nil || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Fatalf("CheckEtcdTLS against a plaintext etcd: %v", err)
	}
}

// Flag errors need no etcd: each names its flag.
func TestEtcdClientTLSErrors(t *testing.T) {
	dir := t.TempDir()
	tlsFiles(t, dir, "good")
	file := func(name string) string { return filepath.Join(dir, name) }
	https := []string{"https://127.0.0.1:2379"}
	cases := []struct {
		name      string
		endpoints []string
		files     store.EtcdTLS
		want      string
	}{
		{"CA file missing", https, store.EtcdTLS{CAFile: file("nope.crt")}, "--etcd-ca-file: open " + file("nope.crt")},
		{"CA file not PEM", https, store.EtcdTLS{CAFile: file("good-client.key")}, "--etcd-ca-file: "},
		{"certificate file missing", https, store.EtcdTLS{CertFile: file("nope.crt"), KeyFile: file("good-client.key")}, "--etcd-cert-file: stat " + file("nope.crt")},
		{"key file missing", https, store.EtcdTLS{CertFile: file("good-client.crt"), KeyFile: file("nope.key")}, "--etcd-key-file: stat " + file("nope.key")},
		{"key of another certificate", https, store.EtcdTLS{CertFile: file("good-client.crt"), KeyFile: file("good-server.key")}, "--etcd-cert-file and --etcd-key-file: "},
		{"certificate without key", https, store.EtcdTLS{CertFile: file("good-client.crt")}, "--etcd-cert-file and --etcd-key-file go together"},
		{"TLS files with http://", []string{"http://127.0.0.1:2379"}, store.EtcdTLS{CAFile: file("good-ca.crt")}, "--etcd-ca-file given, but --etcd-endpoints are http://"},
		{"mixed schemes", []string{"http://127.0.0.1:2379", "https://127.0.0.2:2379"}, store.EtcdTLS{}, "mixes http:// and https://"},
		{"unknown scheme", []string{"unix://etcd.sock"}, store.EtcdTLS{}, `--etcd-endpoints "unix://etcd.sock"`},
	}
	for _, c := range cases {
		cfg, err := store.EtcdClientTLS(c.endpoints, c.files)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, %v; want an error containing %q", c.name, cfg, err, c.want)
		}
	}
	// Plaintext stays plaintext; https:// alone verifies against the system's CAs.
	if cfg, err := store.EtcdClientTLS([]string{"http://127.0.0.1:2379"}, store.EtcdTLS{}); cfg != nil || err != nil {
		t.Errorf("http:// without files: %v, %v; want no TLS", cfg, err)
	}
	if cfg, err := store.EtcdClientTLS(https, store.EtcdTLS{}); err != nil || cfg == nil || cfg.RootCAs != nil || cfg.GetClientCertificate != nil {
		t.Errorf("https:// without files: %+v, %v; want TLS with the system's CAs and no client certificate", cfg, err)
	}
	if err := store.CheckEtcdTLS(context.Background(), https, nil); err != nil {
		t.Errorf("CheckEtcdTLS without TLS: %v", err)
	}
}
