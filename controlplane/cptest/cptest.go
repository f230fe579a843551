// Package cptest starts real control planes for tests: an embedded etcd on loopback and control-plane
// replicas over real gRPC (TLS with a test PKI), in-process.
package cptest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/embedetcd"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Etcd starts an embedded etcd for the test and returns its client URL.
func Etcd(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Endpoint()
}

// Replica is a running control-plane replica.
type Replica struct {
	t    testing.TB
	Addr string
	// PKIDir holds the test PKI as files (ca.crt, admin.crt/.key, dataplane.crt/.key, ...) for
	// gatewayctl and the binaries; empty when Insecure.
	PKIDir string
	etcd   string
	name   string
	opts   Options
	srv    *server.Server
	done   chan struct{}
}

// Options of a replica beyond the defaults (TLS with the test PKI, no tokens).
type Options struct {
	// Insecure serves plaintext without authentication (dial it with DialInsecure).
	Insecure bool
	// Tokens are the bearer tokens the replica accepts.
	Tokens server.Tokens
	// StrictDataPlaneIDs refuses data-plane certificates that may claim any id.
	StrictDataPlaneIDs bool
	// Log, if set, receives the replica's log (default: Logger).
	Log *slog.Logger
}

// Start starts a replica against etcd on a free loopback port, serving TLS with the test PKI. It is
// stopped at the end of the test.
func Start(t testing.TB, etcd, name string) *Replica {
	t.Helper()
	return StartWith(t, etcd, name, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, etcd, name string, opts Options) *Replica {
	t.Helper()
	r := &Replica{t: t, etcd: etcd, name: name, opts: opts}
	if !opts.Insecure {
		r.PKIDir = filepath.Join(t.TempDir(), "pki")
		WritePKI(t, r.PKIDir)
	}
	r.start("127.0.0.1:0")
	replicasMu.Lock()
	replicas[r.Addr] = r
	replicasMu.Unlock()
	t.Cleanup(func() {
		r.Stop()
		replicasMu.Lock()
		delete(replicas, r.Addr)
		replicasMu.Unlock()
	})
	return r
}

var (
	replicasMu sync.Mutex
	replicas   = map[string]*Replica{} // by address
)

// GatewayctlFlags are the flags gatewayctl needs to reach the replica at addr as an admin:
// --pki-dir of its test PKI, or --insecure.
func GatewayctlFlags(addr string) []string {
	replicasMu.Lock()
	defer replicasMu.Unlock()
	r := replicas[addr]
	switch {
	case r == nil:
		return nil
	case r.opts.Insecure:
		return []string{"--insecure"}
	}
	return []string{"--pki-dir", r.PKIDir}
}

func (r *Replica) start(addr string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := server.Config{
		EtcdEndpoints:      []string{r.etcd},
		Replica:            r.name,
		LeaseTTL:           2,
		Log:                r.opts.Log,
		Insecure:           r.opts.Insecure,
		Tokens:             r.opts.Tokens,
		StrictDataPlaneIDs: r.opts.StrictDataPlaneIDs,
		Keyring:            testKeyring,
	}
	if cfg.Log == nil {
		cfg.Log = Logger(r.t)
	}
	if !r.opts.Insecure {
		cfg.TLS = ServerTLS(r.t)
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	var lis net.Listener
	for i := 0; ; i++ { // the old port may take a moment to be free again after a restart
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		srv.Stop()
		r.t.Fatal(err)
	}
	r.Addr, r.srv, r.done = lis.Addr().String(), srv, make(chan struct{})
	go func() {
		defer close(r.done)
		_ = srv.Serve(lis)
	}()
}

// Stop stops the replica; a stopped replica may be restarted.
func (r *Replica) Stop() {
	if r.srv == nil {
		return
	}
	r.srv.Stop()
	<-r.done
	r.srv = nil
}

// Restart starts the replica again on the same address.
func (r *Replica) Restart() {
	r.t.Helper()
	r.Stop()
	r.start(r.Addr)
}

// Dial returns a gRPC connection over TLS to a replica started here, closed at the end of the
// test. It presents the test PKI's "cptest" certificate, which holds the admin role and the
// data-plane role for any worker id, so that one connection serves a worker's agent and an
// operator's calls alike.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	c := Certificate(t, pki.Request{CommonName: "cptest", Roles: []string{pki.RoleAdmin, pki.RoleDataPlane}, AnyDataPlane: true})
	return DialAs(t, addr, &c)
}

// DialAs dials over TLS presenting cert (nil: no client certificate), with extra options.
func DialAs(t testing.TB, addr string, cert *tls.Certificate, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return dial(t, addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(ClientTLS(t, cert)))}, opts...)...)
}

// DialInsecure dials a replica started with Options.Insecure.
func DialInsecure(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	return dial(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The test PKI: one CA per test process, in memory, and the certificates issued from it.
var (
	testPKIOnce sync.Once
	testCA      *pki.CA
	testPKIErr  error
	certsMu     sync.Mutex
	certs       = map[string]tls.Certificate{}
)

// CA is the test PKI's CA, made on first use.
func CA(t testing.TB) *pki.CA {
	t.Helper()
	testPKIOnce.Do(func() { testCA, testPKIErr = pki.NewCA("cptest CA", time.Hour*24) })
	if testPKIErr != nil {
		t.Fatal(testPKIErr)
	}
	return testCA
}

// Certificate issues a certificate from the test CA (once per distinct request: they are cached).
func Certificate(t testing.TB, req pki.Request) tls.Certificate {
	t.Helper()
	ca := CA(t)
	key := fmt.Sprintf("%+v", req)
	certsMu.Lock()
	defer certsMu.Unlock()
	if c, ok := certs[key]; ok {
		return c
	}
	is, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certs[key] = c
	return c
}

// ServerTLS is the TLS configuration replicas started here serve with: a certificate for the
// loopback names, client certificates verified against the test CA.
func ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	return pki.ServerTLSFromMemory(Certificate(t, pki.Request{CommonName: "cptest-controlplane", Hosts: pki.DefaultHosts}), CA(t).Pool())
}

// ClientTLS trusts the test CA and presents cert (nil: none) as gatewayctl and the data plane do:
// always, whichever CAs the server says it accepts.
func ClientTLS(t testing.TB, cert *tls.Certificate) *tls.Config {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: CA(t).Pool()}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// WritePKI writes the test PKI to dir as the control plane's auto PKI lays it out (ca.crt, ca.key,
// server, admin and dataplane certificates and keys), for binaries and gatewayctl's --pki-dir.
func WritePKI(t testing.TB, dir string) {
	t.Helper()
	ca := CA(t)
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{pki.CACertFile: ca.CertPEM(), pki.CAKeyFile: caKey}
	for name, req := range map[string]pki.Request{
		pki.ServerName:    {CommonName: "cptest-controlplane", Hosts: pki.DefaultHosts},
		pki.AdminName:     {CommonName: pki.AdminName, Roles: []string{pki.RoleAdmin}},
		pki.DataPlaneName: {CommonName: pki.DataPlaneName, Roles: []string{pki.RoleDataPlane}, AnyDataPlane: true},
	} {
		is, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		files[name+".crt"], files[name+".key"] = is.CertPEM, is.KeyPEM
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Apply decodes a gateway document and applies it, failing the test on error. It returns the revision.
func Apply(t testing.TB, conn grpc.ClientConnInterface, doc string) int64 {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := fgv1.NewConfigServiceClient(conn).ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: gw})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp.GetRevision()
}

// Logger returns a logger for components under test: silent unless the test runs with -v.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// Eventually polls cond every 20ms until it holds or the timeout passes, then fails with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testKeyring seals listeners' private keys in the tests' etcd, as a real control plane does; every
// replica of a test run shares it, as real replicas must.
var testKeyring = func() *store.Keyring {
	k, err := store.ParseKeyring([]byte("test AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	if err != nil {
		panic(err)
	}
	return k
}()
