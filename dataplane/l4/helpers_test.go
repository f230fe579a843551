package l4

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// ---- logging ----

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ---- certificates ----

type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

// issue makes a certificate for names (DNS names or IP addresses), signed by parent or self-signed.
func issue(t testing.TB, cn string, names []string, isCA bool, parent *testCert) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

func (c *testCert) certPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}))
}

// keyPairPEM is an ssl_certificates data: the chain, then the key.
func (c *testCert) keyPairPEM(t testing.TB) string {
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return c.certPEM() + string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (c *testCert) tlsCert() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.cert.Raw}, PrivateKey: c.key, Leaf: c.cert}
}

func poolOf(certs ...*testCert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.cert)
	}
	return p
}

// testPKI: a CA for the gateway's listener certificates, one for backends, and one nobody trusts.
type testPKI struct {
	gwCA, backendCA, otherCA *testCert
	a, b, wild, def          *testCert // listener certificates: a.test, b.test, *.w.test, default.test
}

var (
	pkiOnce sync.Once
	thePKI  *testPKI
)

func getPKI(t testing.TB) *testPKI {
	pkiOnce.Do(func() {
		p := &testPKI{}
		p.gwCA = issue(t, "Gateway Test CA", nil, true, nil)
		p.backendCA = issue(t, "Backend Test CA", nil, true, nil)
		p.otherCA = issue(t, "Untrusted Test CA", nil, true, nil)
		p.a = issue(t, "a.test", []string{"a.test"}, false, p.gwCA)
		p.b = issue(t, "b.test", []string{"b.test"}, false, p.gwCA)
		p.wild = issue(t, "*.w.test", []string{"*.w.test"}, false, p.gwCA)
		p.def = issue(t, "default.test", []string{"default.test"}, false, p.gwCA)
		thePKI = p
	})
	if thePKI == nil {
		t.Fatal("test PKI could not be made")
	}
	return thePKI
}

// ---- backend servers ----

// backend is a test server on one loopback address.
type backend struct {
	name     string
	ln       net.Listener
	addr     string // ip:port
	accepted atomic.Int64
	open     atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// serveFunc serves one backend connection.
type serveFunc func(b *backend, c net.Conn)

// echo greets with the backend's name and a newline, then echoes; at EOF it half-closes.
func echo(b *backend, c net.Conn) {
	io.WriteString(c, b.name+"\n")
	io.Copy(c, c)
	closeWrite(c)
}

// drainThenReply reads to EOF, then answers with the number of bytes read and closes.
func drainThenReply(b *backend, c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "%s read %d bytes\n", b.name, n)
}

// sink reads and discards until EOF, answering nothing.
func sink(_ *backend, c net.Conn) { io.Copy(io.Discard, c) }

func closeWrite(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.CloseWrite()
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// listenPair listens on 127.0.0.<ip> for each ip on one common port (servers of a pool share the
// settings' port).
func listenPair(t testing.TB, ips ...int) []net.Listener {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", ips[0]))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(first.Addr().String())
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%s", ip, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(ips) {
			return lns
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("no common free port")
	return nil
}

// startBackend serves ln with fn, over TLS when cert is not nil.
func startBackend(t testing.TB, name string, ln net.Listener, cert *testCert, fn serveFunc) *backend {
	t.Helper()
	b := &backend{name: name, ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	var cfg *tls.Config
	if cert != nil {
		cfg = &tls.Config{Certificates: []tls.Certificate{cert.tlsCert()}, MinVersion: tls.VersionTLS12}
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.open.Add(1)
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer b.open.Add(-1)
				defer func() {
					c.Close()
					b.mu.Lock()
					delete(b.conns, c)
					b.mu.Unlock()
				}()
				fn(b, c)
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

// stop closes the listener and every connection, and waits for the handlers.
func (b *backend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) ip() string {
	h, _, _ := net.SplitHostPort(b.addr)
	return h
}

func (b *backend) port() int32 {
	_, p, _ := net.SplitHostPort(b.addr)
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// ---- the gateway ----

// gwBuilder builds a gateway configuration for tests.
type gwBuilder struct {
	gw       *fgv1.Gateway
	priority int32
}

func newGateway() *gwBuilder { return &gwBuilder{gw: &fgv1.Gateway{Name: "l4test"}, priority: 100} }

func (g *gwBuilder) pool(name string, backends ...*backend) *gwBuilder {
	p := &fgv1.BackendAddressPool{Name: name}
	for _, b := range backends {
		p.BackendAddresses = append(p.BackendAddresses, &fgv1.BackendAddress{IpAddress: b.ip()})
	}
	g.gw.BackendAddressPools = append(g.gw.BackendAddressPools, p)
	return g
}

func (g *gwBuilder) settings(s *fgv1.BackendSettings) *gwBuilder {
	g.gw.BackendSettingsCollection = append(g.gw.BackendSettingsCollection, s)
	return g
}

func (g *gwBuilder) cert(t testing.TB, name string, c *testCert) *gwBuilder {
	g.gw.SslCertificates = append(g.gw.SslCertificates, &fgv1.SslCertificate{Name: name, Data: c.keyPairPEM(t)})
	return g
}

func (g *gwBuilder) root(name string, c *testCert) *gwBuilder {
	g.gw.TrustedRootCertificates = append(g.gw.TrustedRootCertificates, &fgv1.TrustedRootCertificate{Name: name, Data: c.certPEM()})
	return g
}

// listener adds a listener and, when pool is not empty, its rule.
func (g *gwBuilder) listener(l *fgv1.Listener, pool, settings string) *gwBuilder {
	g.gw.Listeners = append(g.gw.Listeners, l)
	if pool != "" {
		g.priority++
		g.gw.RoutingRules = append(g.gw.RoutingRules, &fgv1.RoutingRule{
			Name: "rule-" + l.Name, Priority: proto.Int32(g.priority), Listener: l.Name,
			BackendAddressPool: pool, BackendSettings: settings,
		})
	}
	return g
}

// build normalizes and validates the configuration.
func (g *gwBuilder) build(t testing.TB) *fgv1.Gateway {
	t.Helper()
	gw := proto.Clone(g.gw).(*fgv1.Gateway)
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatalf("invalid test configuration: %v", err)
	}
	return gw
}

func tcpSettings(name string, port int32, idle int32) *fgv1.BackendSettings {
	s := &fgv1.BackendSettings{Name: name, Port: port, Protocol: "Tcp"}
	if idle > 0 {
		s.Timeout = proto.Int32(idle)
	}
	return s
}

// ---- the proxy under test ----

// gateway is a running proxy with its listening ports.
type gateway struct {
	p     *Proxy
	ports map[int32]net.Listener
	wg    sync.WaitGroup
}

// startProxy starts a proxy listening on n loopback ports; their numbers are for the configuration.
func startProxy(t testing.TB, n int, opts ...func(*Proxy)) (*gateway, []int32) {
	t.Helper()
	g := &gateway{p: New(testLogger(t)), ports: map[int32]net.Listener{}}
	for _, o := range opts {
		o(g.p)
	}
	var nums []int32
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := int32(ln.Addr().(*net.TCPAddr).Port)
		g.ports[port] = ln
		nums = append(nums, port)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := g.p.Serve(ln, port); err != nil {
				t.Errorf("Serve: %v", err)
			}
		}()
	}
	t.Cleanup(func() {
		for _, ln := range g.ports {
			ln.Close()
		}
		g.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := g.p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		g.p.Close()
	})
	return g, nums
}

func (g *gateway) apply(t testing.TB, gw *fgv1.Gateway, healthOf HealthLookup, drains ...*fgv1.AdminDrain) {
	t.Helper()
	if err := g.p.Apply(1, gw, healthOf, drains); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func dialTCP(t testing.TB, port int32) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(int(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func dialTLS(t testing.TB, port int32, serverName string, roots *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+strconv.Itoa(int(port)), &tls.Config{ServerName: serverName, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

// greeting reads the echo backend's first line: its name.
func greeting(t testing.TB, c net.Conn) string {
	t.Helper()
	line, err := readLine(c)
	if err != nil {
		t.Fatalf("reading the backend's greeting: %v", err)
	}
	return line
}

// readLine reads up to a newline, byte by byte (no read-ahead past it).
func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	var one [1]byte
	for {
		if _, err := c.Read(one[:]); err != nil {
			return b.String(), err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
}

// roundTrip writes msg and reads it back from an echo.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echoed %q, want %q", buf, msg)
	}
}

// wantClosed checks that the proxy closes c (EOF or reset, no data) within d.
func wantClosed(t testing.TB, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 64))
	if err == nil || n > 0 {
		t.Fatalf("read %d bytes, err %v: connection not closed", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", d)
	}
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func adminDrain(pool, host string, timeout int32) *fgv1.AdminDrain {
	return &fgv1.AdminDrain{Pool: pool, Address: host, TimeoutSeconds: timeout, StartedAt: timestamppb.Now()}
}
