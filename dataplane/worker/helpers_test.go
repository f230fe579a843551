package worker_test

import (
	"bufio"
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
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/worker"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// backend is a real HTTP server on loopback that records the requests it gets (health probes, for
// path "/", aside) and answers "ok <method> <path> <body bytes>".
type backend struct {
	port int
	mu   sync.Mutex
	reqs []seen
	// hold, when set, is waited on before answering a request for /slow.
	hold chan struct{}
}

type seen struct {
	method, path string
	body         string
	bodyErr      error
	header       http.Header
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	b := &backend{hold: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			return // a health probe
		}
		body, err := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, seen{r.Method, r.URL.Path, string(body), err, r.Header.Clone()})
		b.mu.Unlock()
		if r.URL.Path == "/slow" {
			<-b.hold
		}
		fmt.Fprintf(w, "ok %s %s %d", r.Method, r.URL.Path, len(body))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-b.hold:
		default:
			close(b.hold)
		}
	})
	b.port = portOf(srv.Listener.Addr())
	return b
}

func (b *backend) requests() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.reqs...)
}

// portOf is the port of a listener's TCP address.
func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

// freePort returns a TCP port free on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gatewayDoc is a gateway with one Basic listener on port in front of the backend; protocol is
// Http or Https (with a self-signed certificate); extra is added at the top level (limits, ...).
func gatewayDoc(t testing.TB, protocol string, port, backendPort int, extra string) string {
	t.Helper()
	certs, cert := "", ""
	if protocol == "Https" {
		certs = fmt.Sprintf("sslCertificates: [{name: c, data: %q}]\n", selfSignedPEM(t))
		cert = ", sslCertificate: c"
	}
	return fmt.Sprintf(`
name: gw
%shttpListeners: [{name: web, protocol: %s, port: %d%s}]
backendAddressPools: [{name: pool, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: %d}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool, backendHttpSettings: s}]
%s
`, certs, protocol, port, cert, backendPort, extra)
}

// startWorker starts a worker on 127.0.0.1, stopped at the end of the test.
func startWorker(t testing.TB) *worker.Worker {
	t.Helper()
	w := worker.New(worker.Config{BindAddress: "127.0.0.1", ShutdownGrace: 2 * time.Second, Log: cptest.Logger(t)})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.Shutdown(ctx)
	})
	return w
}

// apply decodes, normalizes and validates a gateway document, as the agent does, and applies it.
func apply(t testing.TB, w *worker.Worker, version int64, doc string) {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(context.Background(), &fgv1.Snapshot{Version: version, Gateway: gw}); err != nil {
		t.Fatal(err)
	}
}

// selfSignedPEM is a certificate for 127.0.0.1 with its key, as PEM.
func selfSignedPEM(t testing.TB) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "gw.test"},
		DNSNames:     []string{"gw.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// dial opens a raw client connection to the listener, over TLS when tlsOn (HTTP/1.1 by ALPN).
func dial(t *testing.T, port int, tlsOn bool) net.Conn {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var c net.Conn
	var err error
	if tlsOn {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) // a test's own self-signed certificate
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// exchange writes raw bytes and reads the responses that follow (n of them); the body of each is
// returned with it.
func exchange(t *testing.T, c net.Conn, raw string, n int) ([]*http.Response, []string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading response %d: %v", len(resps)+1, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resps = append(resps, resp)
		bodies = append(bodies, string(b))
	}
	return resps, bodies
}

// closedByPeer tells whether the server closed c: a read returns EOF (or a reset) before the
// deadline.
func closedByPeer(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	var b [1]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue // the rest of a response
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// get sends one GET over a new HTTP/1.1 connection and returns the status.
func get(t *testing.T, port int, path string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func must(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}
