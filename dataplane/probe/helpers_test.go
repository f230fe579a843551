package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- certificates ----

// testCert is a certificate with its key.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

type certOpts struct {
	cn        string
	dns       []string
	ips       []net.IP
	notBefore time.Time // zero: an hour ago
	notAfter  time.Time // zero: in a day
	isCA      bool
	usage     []x509.ExtKeyUsage // nil: server auth (leaves)
}

var serial atomic.Int64

// issue creates a certificate signed by parent, or self-signed when parent is nil.
func issue(t testing.TB, o certOpts, parent *testCert) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: o.cn, Organization: []string{"Fleetgate Test"}},
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		DNSNames:     o.dns,
		IPAddresses:  o.ips,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	if o.isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = o.usage
		if tmpl.ExtKeyUsage == nil {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}
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

// testPKI is the set of certificates the TLS tests use, made once.
type testPKI struct {
	root, inter, otherRoot, expiredRoot, expiredInter *testCert

	leaf           *testCert // backend.test, by inter
	selfSigned     *testCert // backend.test, self-signed
	otherLeaf      *testCert // backend.test, by otherRoot
	wrongName      *testCert // other.test, by inter
	expired        *testCert // backend.test, by inter
	notYetValid    *testCert // backend.test, by inter
	expiredOther   *testCert // backend.test, by otherRoot, expired
	otherWrongName *testCert // other.test, by otherRoot
	clientOnly     *testCert // backend.test, by inter, client auth only
	cnOnly         *testCert // CN backend.test, no SAN, by inter
	ipLeaf         *testCert // IP SAN 127.0.0.1, by inter
	wildcard       *testCert // *.example.test, by inter
	byExpiredRoot  *testCert // backend.test, by expiredRoot
	byExpiredInter *testCert // backend.test, by expiredInter
}

var (
	pkiOnce sync.Once
	thePKI  *testPKI
)

const (
	interCN = "Fleetgate Test Intermediate"
	rootCN  = "Fleetgate Test Root"
)

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		now := time.Now()
		p := &testPKI{}
		p.root = issue(t, certOpts{cn: rootCN, isCA: true}, nil)
		p.inter = issue(t, certOpts{cn: interCN, isCA: true}, p.root)
		p.otherRoot = issue(t, certOpts{cn: "Unconfigured Root", isCA: true}, nil)
		p.expiredRoot = issue(t, certOpts{cn: "Expired Root", isCA: true, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, nil)
		p.expiredInter = issue(t, certOpts{cn: "Expired Intermediate", isCA: true, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, p.root)
		b := []string{"backend.test"}
		p.leaf = issue(t, certOpts{cn: "backend.test", dns: b}, p.inter)
		p.selfSigned = issue(t, certOpts{cn: "backend.test", dns: b}, nil)
		p.otherLeaf = issue(t, certOpts{cn: "backend.test", dns: b}, p.otherRoot)
		p.wrongName = issue(t, certOpts{cn: "other.test", dns: []string{"other.test", "www.other.test"}}, p.inter)
		p.expired = issue(t, certOpts{cn: "backend.test", dns: b, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, p.inter)
		p.notYetValid = issue(t, certOpts{cn: "backend.test", dns: b, notBefore: now.Add(24 * time.Hour), notAfter: now.Add(48 * time.Hour)}, p.inter)
		p.expiredOther = issue(t, certOpts{cn: "backend.test", dns: b, notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-24 * time.Hour)}, p.otherRoot)
		p.otherWrongName = issue(t, certOpts{cn: "other.test", dns: []string{"other.test"}}, p.otherRoot)
		p.clientOnly = issue(t, certOpts{cn: "backend.test", dns: b, usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.inter)
		p.cnOnly = issue(t, certOpts{cn: "backend.test"}, p.inter)
		p.ipLeaf = issue(t, certOpts{cn: "127.0.0.1", ips: []net.IP{net.IPv4(127, 0, 0, 1)}}, p.inter)
		p.wildcard = issue(t, certOpts{cn: "*.example.test", dns: []string{"*.example.test"}}, p.inter)
		p.byExpiredRoot = issue(t, certOpts{cn: "backend.test", dns: b}, p.expiredRoot)
		p.byExpiredInter = issue(t, certOpts{cn: "backend.test", dns: b}, p.expiredInter)
		thePKI = p
	})
	if thePKI == nil {
		t.Fatal("test PKI could not be created")
	}
	return thePKI
}

func pool(certs ...*testCert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.cert)
	}
	return p
}

// ---- servers ----

var quietLog = log.New(io.Discard, "", 0)

// startHTTP starts a plain HTTP test server on 127.0.0.1.
func startHTTP(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quietLog
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// startTLS starts an HTTPS test server that presents chain (leaf first, with
// its key, then the intermediates it sends).
func startTLS(t testing.TB, h http.Handler, chain ...*testCert) *httptest.Server {
	t.Helper()
	if h == nil {
		h = okHandler("ok")
	}
	cert := tls.Certificate{PrivateKey: chain[0].key, Leaf: chain[0].cert}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.cert.Raw)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quietLog
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// rawServer accepts TCP connections on 127.0.0.1 and hands each to fn.
func rawServer(t *testing.T, fn func(net.Conn)) (host string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return hostPort(t, ln.Addr().String())
}

func hostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

// specFor returns an Http or Https spec aimed at srv.
func specFor(t testing.TB, srv *httptest.Server) Spec {
	t.Helper()
	h, p := hostPort(t, srv.Listener.Addr().String())
	proto := "Http"
	if srv.TLS != nil {
		proto = "Https"
	}
	return Spec{Protocol: proto, Host: h, Port: p, HostHeader: "backend.test", Path: "/health", Timeout: 5 * time.Second}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p := hostPort(t, ln.Addr().String())
	ln.Close()
	return p
}

func okHandler(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
}

// sleepHandler answers after d, or gives up when the client goes away.
func sleepHandler(d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	})
}

// ---- DNS ----

// startDNS starts a tiny UDP DNS server on 127.0.0.1 that answers A queries
// for the names in records (fully qualified, lower case, "name.") and
// NXDOMAIN for anything else. With blackhole, it answers nothing.
func startDNS(t *testing.T, records map[string]net.IP, blackhole bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if blackhole {
				continue
			}
			if resp := dnsAnswer(buf[:n], records); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// dnsAnswer builds the response to one query (RFC 1035 wire format).
func dnsAnswer(q []byte, records map[string]net.IP) []byte {
	if len(q) < 12 {
		return nil
	}
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return nil
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if l > 63 || i+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i:])
	qend := i + 4
	ip, known := records[strings.ToLower(strings.Join(labels, "."))+"."]
	var rcode byte
	if !known {
		rcode = 3 // NXDOMAIN
	}
	answers := 0
	if known && qtype == 1 {
		answers = 1
	}
	r := make([]byte, 0, 512)
	r = append(r, q[0], q[1])            // ID
	r = append(r, 0x80|0x04|(q[2]&0x79)) // QR, AA, opcode and RD of the query
	r = append(r, 0x80|rcode)            // RA, RCODE
	r = append(r, 0, 1, 0, byte(answers), 0, 0, 0, 0)
	r = append(r, q[12:qend]...)
	if answers == 1 {
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, ip.To4()...)
	}
	return r
}

// testResolver is a real Go resolver that asks only the DNS server at addr.
func testResolver(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

// ---- assertions ----

func stageNames(r Result) string {
	names := make([]string, len(r.Stages))
	for i, s := range r.Stages {
		names[i] = s.Name
	}
	return strings.Join(names, ",")
}

func findStage(r Result, name string) (Stage, bool) {
	for _, s := range r.Stages {
		if s.Name == name {
			return s, true
		}
	}
	return Stage{}, false
}

// wantUnhealthy checks the reason and that the message holds every fact.
func wantUnhealthy(t *testing.T, r Result, reason string, facts ...string) {
	t.Helper()
	if r.Healthy || r.Reason != reason {
		t.Fatalf("got healthy=%v reason %q message %q (stages %s), want reason %q", r.Healthy, r.Reason, r.Message, stageNames(r), reason)
	}
	for _, f := range facts {
		if !strings.Contains(r.Message, f) {
			t.Errorf("message %q does not contain %q", r.Message, f)
		}
	}
	if r.Hint == "" || r.Hint != Hint(reason) {
		t.Errorf("hint %q, want Hint(%q)", r.Hint, reason)
	}
	if len(r.Stages) == 0 || r.Stages[len(r.Stages)-1].Err == "" {
		t.Errorf("last stage of %s has no Err", stageNames(r))
	}
}

func wantHealthy(t *testing.T, r Result) {
	t.Helper()
	if !r.Healthy || r.Reason != "" || r.Message != "" || r.Hint != "" {
		t.Fatalf("got healthy=%v reason %q message %q hint %q (stages %+v), want healthy", r.Healthy, r.Reason, r.Message, r.Hint, r.Stages)
	}
	for _, s := range r.Stages {
		if s.Err != "" {
			t.Errorf("stage %s has Err %q", s.Name, s.Err)
		}
	}
}
