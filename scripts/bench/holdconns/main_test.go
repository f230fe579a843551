package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/http2"
)

// selfSigned is a certificate for 127.0.0.1 made by the test.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

var loopback = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}

// handler answers 200, but 503 for /fail; seen gets every path.
func handler(seen chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.URL.Path
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	})
}

// open over HTTP/2 (ALPN h2, the data plane's own server) makes one GET and returns the
// connection still open; a response other than 200 is an error.
func TestOpenH2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	s := &http2.Server{Handler: handler(seen)}
	go s.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}}))
	defer s.Close()

	c, err := open(context.Background(), loopback, ln.Addr().String(), nil, true, true, "/held", "test")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer c.Close()
	if p := <-seen; p != "/held" {
		t.Fatalf("the server saw %q", p)
	}
	// Still open: a read waits (or gets bytes of a frame that came late) rather than fails.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		t.Fatalf("the held connection: %v, want it open", err)
	}
	if _, err := open(context.Background(), loopback, ln.Addr().String(), nil, true, true, "/fail", "test"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("open of /fail: %v, want an error naming status 503", err)
	}
}

// open over HTTP/1.1 in the clear; a server that closes after the response is an error.
func TestOpenHTTP1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	s := &http.Server{Handler: handler(seen)}
	go s.Serve(ln)
	defer s.Close()
	req := []byte("GET /held HTTP/1.1\r\nHost: test\r\n\r\n")
	c, err := open(context.Background(), loopback, ln.Addr().String(), req, false, false, "", "")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	c.Close()
	if p := <-seen; p != "/held" {
		t.Fatalf("the server saw %q", p)
	}
	closing := []byte("GET /held HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	if _, err := open(context.Background(), loopback, ln.Addr().String(), closing, false, false, "", ""); err == nil {
		t.Fatal("open with the server closing after the response: no error")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
