package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestKeepAliveReuse(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Query().Get("n"))
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	for i := range 5 {
		w := newSpy()
		status, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/?n="+strconv.Itoa(i), nil), 0)
		if err != nil || status != 200 {
			t.Fatalf("request %d: status %d, err %v", i, status, err)
		}
		if got, want := w.Body(), "hello "+strconv.Itoa(i); got != want {
			t.Fatalf("request %d: body %q, want %q", i, got, want)
		}
		if got := w.Header().Get("Content-Length"); got != strconv.Itoa(len("hello 0")) {
			t.Errorf("Content-Length = %q", got)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1 (keep-alive reuse)", n)
	}
	if n := p.IdleConns(); n != 1 {
		t.Errorf("IdleConns = %d, want 1", n)
	}
}

func TestStreamingResponseFlushes(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: second\n\n")
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	front := newFront(t, p, 5*time.Second)

	resp, err := http.Get(front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != -1 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("ContentLength %d, Content-Type %q", resp.ContentLength, resp.Header.Get("Content-Type"))
	}
	// The first event must arrive while the backend is still blocked.
	first := make(chan string, 1)
	br := bufio.NewReader(resp.Body)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "data: first\n" {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("first event not delivered before the backend finished: response not flushed")
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "\ndata: second\n\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestFlushPolicy(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for range 3 {
				io.WriteString(w, "part")
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", "12")
		io.WriteString(w, "partpartpart")
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	for _, tt := range []struct {
		path        string
		wantFlushes bool
	}{{"/chunked", true}, {"/length", false}} {
		w := newSpy()
		if _, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), tt.path, nil), 0); err != nil {
			t.Fatal(err)
		}
		if w.Body() != "partpartpart" {
			t.Errorf("%s: body %q", tt.path, w.Body())
		}
		if got := w.Flushes() > 0; got != tt.wantFlushes {
			t.Errorf("%s: %d flushes, want flushing=%v", tt.path, w.Flushes(), tt.wantFlushes)
		}
	}
}

func TestNoBodyResponses(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
			w.Header().Set("X-Head", "yes")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			io.WriteString(w, "ok")
		}
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	tests := []struct {
		method, path string
		status       int
		header       string // "Key: value" expected in the response
	}{
		{"HEAD", "/head", 200, "Content-Length: 1234"},
		{"GET", "/204", 204, ""},
		{"GET", "/304", 304, `Etag: "v1"`},
		{"GET", "/plain", 200, "Content-Length: 2"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			w := newSpy()
			status, err := p.Forward(context.Background(), w, newOut(t, tt.method, b.addr(), tt.path, nil), time.Second)
			if err != nil || status != tt.status {
				t.Fatalf("status %d, err %v; want %d", status, err, tt.status)
			}
			if tt.header != "" {
				k, v, _ := strings.Cut(tt.header, ": ")
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tt.path != "/plain" && w.Body() != "" {
				t.Errorf("body %q, want none", w.Body())
			}
		})
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1 (reuse after HEAD/204/304)", n)
	}
}

func TestHopByHopResponseHeaders(t *testing.T) {
	responses := map[string]string{
		"/length": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: X-Private, keep-alive\r\n" +
			"X-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n" +
			"Proxy-Authenticate: Basic\r\nProxy-Authorization: x\r\nUpgrade: foo\r\nTe: trailers\r\n" +
			"X-Kept: yes\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	}
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, responses[req.URL.Path])
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()

	for _, tt := range []struct {
		path   string
		wantCL string
	}{{"/length", "5"}, {"/chunked", ""}} {
		w := newSpy()
		w.Header().Set("X-Gateway", "set-before") // caller-set headers survive
		if _, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), tt.path, nil), time.Second); err != nil {
			t.Fatal(err)
		}
		h := w.Header()
		for _, k := range []string{"Connection", "X-Private", "Keep-Alive", "Proxy-Connection",
			"Proxy-Authenticate", "Proxy-Authorization", "Upgrade", "Te", "Transfer-Encoding", "Trailer"} {
			if v, ok := h[k]; ok {
				t.Errorf("%s: hop-by-hop header %s copied: %q", tt.path, k, v)
			}
		}
		if got := h.Get("Content-Length"); got != tt.wantCL {
			t.Errorf("%s: Content-Length %q, want %q", tt.path, got, tt.wantCL)
		}
		if h.Get("X-Kept") != "yes" || h.Get("X-Gateway") != "set-before" {
			t.Errorf("%s: end-to-end headers lost: %v", tt.path, h)
		}
		if tt.path == "/length" && len(h["Set-Cookie"]) != 2 {
			t.Errorf("Set-Cookie = %q, want both values", h["Set-Cookie"])
		}
		if w.Body() != "hello" {
			t.Errorf("%s: body %q", tt.path, w.Body())
		}
	}
	if n := rb.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

func TestTrailersForwarded(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "payload")
		w.Header().Set("X-Sum", "42")
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	front := newFront(t, p, time.Second)

	resp, err := http.Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "payload" {
		t.Fatalf("body %q, err %v", body, err)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42 (trailer map %v)", got, resp.Trailer)
	}
}

func TestResponseWithoutLength(t *testing.T) {
	for _, tt := range []struct {
		name, resp string
	}{
		{"read until close", "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end"},
		{"http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nuntil the end"},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 13\r\n\r\nuntil the end"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err == nil {
					io.WriteString(c, tt.resp)
				}
			})
			p := NewPool(rb.addr(), Options{})
			defer p.Close()
			for i := range 2 {
				w := newSpy()
				status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second)
				if err != nil || status != 200 || w.Body() != "until the end" {
					t.Fatalf("request %d: status %d, err %v, body %q", i, status, err, w.Body())
				}
				if n := p.IdleConns(); n != 0 {
					t.Fatalf("request %d: IdleConns = %d, connection must not be reused", i, n)
				}
			}
			if n := rb.accepted.Load(); n != 2 {
				t.Errorf("backend accepted %d connections, want 2", n)
			}
		})
	}
}

func TestTLSBackend(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v proto=%s", r.TLS != nil, r.Proto)
	}, func(s *httptest.Server) {
		s.EnableHTTP2 = true
		s.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-cert case logs a handshake error
	}, true)
	roots := x509.NewCertPool()
	roots.AddCert(b.Certificate())

	p := NewPool(b.addr(), Options{TLSConfig: &tls.Config{RootCAs: roots}})
	defer p.Close()
	for i := range 3 {
		w := newSpy()
		status, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), time.Second)
		if err != nil || status != 200 {
			t.Fatalf("request %d: status %d, err %v", i, status, err)
		}
		// ALPN is pinned to http/1.1 although the backend offers h2.
		if got := w.Body(); got != "tls=true proto=HTTP/1.1" {
			t.Fatalf("request %d: body %q", i, got)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d TLS connections, want 1", n)
	}

	// An untrusted certificate is a dial failure.
	bad := NewPool(b.addr(), Options{TLSConfig: &tls.Config{}})
	defer bad.Close()
	w := newSpy()
	if status, err := bad.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), time.Second); !errors.Is(err, ErrDial) || status != 0 {
		t.Fatalf("untrusted cert: status %d, err %v; want ErrDial", status, err)
	}
	w.assertUntouched(t)
}
