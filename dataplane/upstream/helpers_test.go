package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a net/http test server that counts the TCP connections it
// accepted and closed.
type backend struct {
	*httptest.Server
	accepted atomic.Int32
	closed   atomic.Int32
}

func newBackend(t testing.TB, h http.HandlerFunc) *backend {
	t.Helper()
	return startBackend(t, h, nil, false)
}

// startBackend starts a backend, with TLS if useTLS; configure, if non-nil,
// may adjust the server before it starts (it must not replace ConnState).
func startBackend(t testing.TB, h http.HandlerFunc, configure func(*httptest.Server), useTLS bool) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			b.accepted.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.closed.Add(1)
		}
	}
	if configure != nil {
		configure(b.Server)
	}
	if useTLS {
		b.StartTLS()
	} else {
		b.Start()
	}
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

// rawBackend accepts TCP connections and runs serve on each in its own
// goroutine; idx counts connections from 0. It lets tests send exact bytes
// and misbehave in ways net/http servers do not.
type rawBackend struct {
	ln       net.Listener
	accepted atomic.Int32
	wg       sync.WaitGroup
}

func newRawBackend(t testing.TB, serve func(c net.Conn, br *bufio.Reader, idx int)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveRaw(t, ln, serve)
}

// serveRaw is newRawBackend on a given listener (for example a TLS one).
func serveRaw(t testing.TB, ln net.Listener, serve func(c net.Conn, br *bufio.Reader, idx int)) *rawBackend {
	t.Helper()
	rb := &rawBackend{ln: ln}
	rb.wg.Add(1)
	go func() {
		defer rb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			idx := int(rb.accepted.Add(1)) - 1
			rb.wg.Add(1)
			go func() {
				defer rb.wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c), idx)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		rb.wg.Wait()
	})
	return rb
}

func (rb *rawBackend) addr() string { return rb.ln.Addr().String() }

// readRequest reads one request (header and body) from a raw connection.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// spyWriter is an http.ResponseWriter and http.Flusher that records what was
// done to it. It is safe to poll from another goroutine via its methods.
type spyWriter struct {
	mu      sync.Mutex
	h       http.Header
	code    int
	body    bytes.Buffer
	flushes int
	writeFn func(p []byte) error // optional failure injection
}

func newSpy() *spyWriter { return &spyWriter{h: http.Header{}} }

func (s *spyWriter) Header() http.Header { return s.h }

func (s *spyWriter) WriteHeader(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code = code
	}
}

func (s *spyWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.writeFn != nil {
		if err := s.writeFn(p); err != nil {
			return 0, err
		}
	}
	return s.body.Write(p)
}

func (s *spyWriter) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
}

func (s *spyWriter) Code() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code
}

func (s *spyWriter) Body() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body.String()
}

func (s *spyWriter) Flushes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushes
}

// assertUntouched fails the test if anything was written to the writer.
// Only call it after Forward returned.
func (s *spyWriter) assertUntouched(t testing.TB) {
	t.Helper()
	if s.code != 0 || s.body.Len() != 0 || len(s.h) != 0 || s.flushes != 0 {
		t.Errorf("writer was touched: code=%d body=%q header=%v flushes=%d", s.code, s.body.String(), s.h, s.flushes)
	}
}

// newOut builds an outbound request for target ("/path?query") on addr.
func newOut(t testing.TB, method, addr, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+target, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hopHeaders are removed from the incoming request by the front handler, as
// the gateway's caller of Forward does.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// frontHandler is a minimal gateway handler in front of p: it turns the
// incoming request into the outbound one and maps Forward's errors to
// statuses the way the real caller is expected to.
func frontHandler(p *Pool, timeout time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, h := range hopHeaders {
			delete(r.Header, h)
		}
		out := &http.Request{
			Method:        r.Method,
			URL:           &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
			Host:          r.Host,
			Header:        r.Header,
			Body:          r.Body,
			ContentLength: r.ContentLength,
			Trailer:       r.Trailer,
		}
		status, err := p.Forward(r.Context(), w, out, timeout)
		switch {
		case err == nil:
		case status != 0:
			panic(http.ErrAbortHandler)
		case errors.Is(err, ErrTimeout):
			w.WriteHeader(http.StatusGatewayTimeout)
		default:
			w.WriteHeader(http.StatusBadGateway)
		}
	}
}

// newFront starts an HTTP server on loopback whose handler forwards to p.
func newFront(t testing.TB, p *Pool, timeout time.Duration) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(frontHandler(p, timeout))
	t.Cleanup(s.Close)
	return s
}

// forwardBG runs Forward in a goroutine and delivers its results.
type result struct {
	status int
	err    error
}

func forwardBG(ctx context.Context, p *Pool, w http.ResponseWriter, out *http.Request, timeout time.Duration) <-chan result {
	ch := make(chan result, 1)
	go func() {
		status, err := p.Forward(ctx, w, out, timeout)
		ch <- result{status, err}
	}()
	return ch
}

// await receives a Forward result or fails the test after a deadline.
func await(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Forward did not return")
		return result{}
	}
}
