package http1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ioTimeout bounds every read and write of a test; nothing here waits longer when it works.
const ioTimeout = 10 * time.Second

// running is a Server serving a loopback listener.
type running struct {
	addr string
	done chan struct{} // closed when Serve has returned
	err  error         // what Serve returned
}

// start serves s on 127.0.0.1:0 until the test ends.
func start(t testing.TB, s *Server) *running {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, s, l, l.Addr().String())
}

func startOn(t testing.TB, s *Server, l net.Listener, addr string) *running {
	r := &running{addr: addr, done: make(chan struct{})}
	go func() {
		r.err = s.Serve(l)
		close(r.done)
	}()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-r.done:
			if !errors.Is(r.err, http.ErrServerClosed) {
				t.Errorf("Serve: %v, want http.ErrServerClosed", r.err)
			}
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Close")
		}
	})
	return r
}

// client is a raw TCP connection to the server.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read reads a response to a request of the method, with its body.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the response body: %v", err)
	}
	return resp, string(b)
}

func (c *client) do(req string) (*http.Response, string) {
	c.t.Helper()
	c.send(req)
	method, _, _ := strings.Cut(req, " ")
	return c.read(method)
}

// expectClosed checks that the server closes the connection with nothing more sent.
func (c *client) expectClosed() {
	c.t.Helper()
	b, err := io.ReadAll(c.br)
	if len(b) > 0 {
		c.t.Errorf("got %q, want the connection closed", b)
	}
	if err != nil && !isReset(err) {
		c.t.Errorf("got %v, want the connection closed", err)
	}
}

// isReset reports a connection reset, which a close with unread bytes gives.
func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n" }

// echo answers with the method and target, and the status asked for with ?status=.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if s := r.URL.Query().Get("status"); s != "" {
		code, _ := strconv.Atoi(s)
		w.WriteHeader(code)
	}
	io.WriteString(w, r.Method+" "+r.RequestURI)
})

func TestKeepAlive(t *testing.T) {
	r := start(t, &Server{Handler: echo})
	c := dial(t, r.addr)
	for i, path := range []string{"/one", "/two?status=201", "/three/4?x=y"} {
		resp, body := c.do(get(path))
		want := 200
		if i == 1 {
			want = 201
		}
		if resp.StatusCode != want || body != "GET "+path || resp.ContentLength != int64(len(body)) || resp.Close {
			t.Errorf("request %d: %d %q, Content-Length %d, Close %v", i, resp.StatusCode, body, resp.ContentLength, resp.Close)
		}
	}
}

func TestPipelined(t *testing.T) {
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	})})
	c := dial(t, r.addr)
	c.send(get("/1") +
		"POST /2 HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nbody" +
		"POST /3 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n" +
		get("/4"))
	for _, want := range []string{"GET /1 ", "POST /2 body", "POST /3 abc", "GET /4 "} {
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

func TestRefusedHead(t *testing.T) {
	s := &Server{MaxHeaderBytes: 1024, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("handler called for %s %s", r.Method, r.RequestURI)
	})}
	r := start(t, s)
	for _, tc := range []struct {
		name, req string
		status    int
		body      string
	}{
		{"request line", "GET /\r\nHost: test\r\n\r\n", 400, "malformed request line"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: test\r\n\r\n", 505, "unsupported protocol version"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "too many Host headers"},
		{"header name", "GET / HTTP/1.1\r\nHost: test\r\nBad Name: x\r\n\r\n", 400, "invalid header name"},
		{"header value", "GET / HTTP/1.1\r\nHost: test\r\nX-A: a\x01b\r\n\r\n", 400, "invalid header value"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: test\r\nX-A: a\r\n  b\r\n\r\n", 400, "obsolete line folding"},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, reasonCLAndTE},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, reasonTE10},
		{"TE gzip", "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported transfer encoding"},
		{"two CLs", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "conflicting Content-Length"},
		{"bad CL", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: -3\r\n\r\n", 400, "bad Content-Length"},
		{"Expect", "POST / HTTP/1.1\r\nHost: test\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417, "unsupported Expect"},
		{"too large", "GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + strings.Repeat("a", 1024+4096) + "\r\n\r\n", 431, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, r.addr)
			resp, body := c.do(tc.req)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("got %d %q, want %d with %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if !resp.Close {
				t.Error(`no "Connection: close"`)
			}
			c.expectClosed()
		})
	}
}

func TestRequestBody(t *testing.T) {
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/read":
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %q %s", r.ContentLength, b, r.Trailer.Get("X-Sum"))
			if err != nil {
				fmt.Fprintf(w, " (%v)", err)
			}
		case "/ignore":
			io.WriteString(w, "ignored")
		}
	})})

	t.Run("Content-Length", func(t *testing.T) {
		c := dial(t, r.addr)
		_, body := c.do("POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n\r\nhello world")
		if want := `11 "hello world" `; body != want {
			t.Errorf("got %q, want %q", body, want)
		}
	})
	t.Run("chunked with trailer", func(t *testing.T) {
		c := dial(t, r.addr)
		_, body := c.do("POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
		if want := `-1 "hello world" 42`; body != want {
			t.Errorf("got %q, want %q", body, want)
		}
		// The connection carries the next request.
		if _, body := c.do(get("/ignore")); body != "ignored" {
			t.Errorf("next request: %q", body)
		}
	})
	t.Run("bad trailer", func(t *testing.T) {
		c := dial(t, r.addr)
		c.send("POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-A\rB: 1\r\n\r\n")
		resp, body := c.read("POST")
		if !strings.HasPrefix(body, `-1 "a"`) || !strings.Contains(body, "malformed trailer") {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
		c.expectClosed()
	})
	t.Run("unread small body", func(t *testing.T) {
		c := dial(t, r.addr)
		for _, req := range []string{
			"POST /ignore HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n0123456789",
			"POST /ignore HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		} {
			if resp, body := c.do(req); body != "ignored" || resp.Close {
				t.Errorf("got %q, Close %v", body, resp.Close)
			}
			if _, body := c.do(get("/ignore")); body != "ignored" {
				t.Errorf("the request after: %q", body)
			}
		}
	})
	t.Run("unread large body", func(t *testing.T) {
		// Content-Length over the discard limit: the response says the connection closes, and
		// it does. The client sends part of the body only, all of which the server takes in
		// before it closes (unread bytes would make the close a reset).
		c := dial(t, r.addr)
		c.send("POST /ignore HTTP/1.1\r\nHost: test\r\nContent-Length: " + strconv.Itoa(maxDiscard+64<<10) + "\r\n\r\n")
		c.send(strings.Repeat("x", 64<<10))
		resp, body := c.read("POST")
		if body != "ignored" || !resp.Close {
			t.Errorf(`got %q, Close %v; want "Connection: close" for a Content-Length over the discard limit`, body, resp.Close)
		}
		c.expectClosed()

		// Chunked: found to be too large while it is discarded, after the response.
		c = dial(t, r.addr)
		c.send("POST /ignore HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
		go func() {
			chunk := fmt.Sprintf("%x\r\n%s\r\n", 32<<10, strings.Repeat("x", 32<<10))
			for range (maxDiscard + 64<<10) / (32 << 10) {
				if _, err := io.WriteString(c.c, chunk); err != nil {
					return
				}
			}
		}()
		if _, body := c.read("POST"); body != "ignored" {
			t.Errorf("got %q", body)
		}
		c.expectClosed()
	})
}

func TestExpectContinue(t *testing.T) {
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
			return
		}
		io.WriteString(w, "no thanks")
	})})
	const head = "PUT %s HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"

	t.Run("read", func(t *testing.T) {
		c := dial(t, r.addr)
		c.send(fmt.Sprintf(head, "/read"))
		resp, _ := c.read("PUT")
		if resp.StatusCode != 100 {
			t.Fatalf("got %d, want 100 Continue", resp.StatusCode)
		}
		c.send("hello")
		resp, body := c.read("PUT")
		if resp.StatusCode != 200 || body != "hello" || resp.Close {
			t.Errorf("got %d %q, Close %v", resp.StatusCode, body, resp.Close)
		}
		if _, body := c.do(get("/x")); body != "no thanks" {
			t.Errorf("next request: %q", body)
		}
	})
	t.Run("not read", func(t *testing.T) {
		c := dial(t, r.addr)
		c.send(fmt.Sprintf(head, "/other"))
		resp, body := c.read("PUT")
		if resp.StatusCode != 200 || body != "no thanks" {
			t.Errorf("got %d %q, want 200 with no 100 Continue before", resp.StatusCode, body)
		}
		if !resp.Close {
			t.Error(`no "Connection: close"`)
		}
		c.expectClosed()
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		// RFC 9110 10.1.1: ignored in HTTP/1.0, whose client sends the body at once.
		c := dial(t, r.addr)
		resp, body := c.do("PUT /read HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
		if resp.StatusCode != 200 || body != "hello" {
			t.Errorf("got %d %q", resp.StatusCode, body)
		}
	})
}

func TestResponse(t *testing.T) {
	release := make(chan struct{})
	bodyErr := make(chan error, 1)
	big := strings.Repeat("0123456789abcdef", 300) // 4800 bytes
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/length":
			h.Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/small":
			io.WriteString(w, "hel")
			io.WriteString(w, "lo")
		case "/big":
			for i := 0; i < len(big); i += 1000 {
				io.WriteString(w, big[i:min(i+1000, len(big))])
			}
		case "/nobody":
			code, _ := strconv.Atoi(r.URL.Query().Get("code"))
			w.WriteHeader(code)
			_, err := io.WriteString(w, "body")
			bodyErr <- err
		case "/flush":
			h.Set("X-Early", "yes")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-time.After(ioTimeout):
			}
			io.WriteString(w, "late")
		case "/short":
			h.Set("Content-Length", "10")
			io.WriteString(w, "12345")
		case "/close":
			h.Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, "hello")
		}
	})})

	t.Run("Content-Length set", func(t *testing.T) {
		c := dial(t, r.addr)
		resp, body := c.do(get("/length"))
		if body != "hello" || resp.ContentLength != 5 || resp.TransferEncoding != nil {
			t.Errorf("got %q, Content-Length %d, %v", body, resp.ContentLength, resp.TransferEncoding)
		}
	})
	t.Run("small body", func(t *testing.T) {
		c := dial(t, r.addr)
		resp, body := c.do(get("/small"))
		if body != "hello" || resp.ContentLength != 5 || resp.TransferEncoding != nil {
			t.Errorf("got %q, Content-Length %d, %v", body, resp.ContentLength, resp.TransferEncoding)
		}
		if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
			t.Errorf("Date: %v", err)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		c := dial(t, r.addr)
		resp, body := c.do(get("/big"))
		if body != big || resp.ContentLength != -1 || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
			t.Errorf("got %d bytes (equal: %v), Content-Length %d, %v", len(body), body == big, resp.ContentLength, resp.TransferEncoding)
		}
		if _, body := c.do(get("/small")); body != "hello" {
			t.Errorf("next request: %q", body)
		}
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		c := dial(t, r.addr)
		resp, body := c.do("GET /small HTTP/1.0\r\n\r\n")
		if body != "hello" || !resp.Close {
			t.Errorf("got %q, Close %v", body, resp.Close)
		}
		c.expectClosed()

		// An HTTP/1.0 body without Content-Length ends with the connection.
		c = dial(t, r.addr)
		resp, body = c.do("GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		if body != big || !resp.Close || resp.TransferEncoding != nil {
			t.Errorf("got %d bytes, Close %v, %v", len(body), resp.Close, resp.TransferEncoding)
		}
		c.expectClosed()
	})
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		c := dial(t, r.addr)
		for range 2 {
			resp, body := c.do("GET /small HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			if body != "hello" || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
				t.Errorf("got %q, Connection %q", body, resp.Header.Get("Connection"))
			}
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		c := dial(t, r.addr)
		// The HEAD response has the Content-Length of the GET one and no body: the next
		// response on the connection is read right.
		resp, body := c.do("HEAD /small HTTP/1.1\r\nHost: test\r\n\r\n")
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != "5" {
			t.Errorf("got %d %q, Content-Length %q", resp.StatusCode, body, resp.Header.Get("Content-Length"))
		}
		resp, body = c.do("HEAD /big HTTP/1.1\r\nHost: test\r\n\r\n")
		if resp.StatusCode != 200 || body != "" || resp.Header.Get("Transfer-Encoding") != "" {
			t.Errorf("got %d %q, %v", resp.StatusCode, body, resp.Header)
		}
		if _, body := c.do(get("/small")); body != "hello" {
			t.Errorf("GET after HEAD: %q", body)
		}
	})
	t.Run("no body statuses", func(t *testing.T) {
		c := dial(t, r.addr)
		for _, code := range []int{204, 304} {
			resp, body := c.do(get("/nobody?code=" + strconv.Itoa(code)))
			if resp.StatusCode != code || body != "" {
				t.Errorf("got %d %q", resp.StatusCode, body)
			}
			if err := <-bodyErr; !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("%d: Write: %v, want http.ErrBodyNotAllowed", code, err)
			}
		}
		if _, body := c.do(get("/small")); body != "hello" {
			t.Errorf("next request: %q", body)
		}
	})
	t.Run("Flush", func(t *testing.T) {
		c := dial(t, r.addr)
		c.send(get("/flush"))
		// The header comes while the handler waits (for twice as long as this read).
		c.c.SetReadDeadline(time.Now().Add(ioTimeout / 2))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("X-Early") != "yes" {
			t.Errorf("header: %v", resp.Header)
		}
		close(release)
		b, err := io.ReadAll(resp.Body)
		if string(b) != "late" || err != nil {
			t.Errorf("body %q, %v", b, err)
		}
	})
	t.Run("short body", func(t *testing.T) {
		c := dial(t, r.addr)
		c.send(get("/short"))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(resp.Body); string(b) != "12345" || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("body %q, %v; want the connection closed after 5 bytes", b, err)
		}
	})
	t.Run("Connection close", func(t *testing.T) {
		c := dial(t, r.addr)
		resp, body := c.do(get("/close"))
		if body != "bye" || !resp.Close {
			t.Errorf("got %q, Close %v", body, resp.Close)
		}
		c.expectClosed()
	})
}

func TestTrailers(t *testing.T) {
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Path == "/declared" {
			w.Header().Set("Trailer", "X-Declared")
		}
		io.WriteString(w, strings.Repeat("t", n))
		if r.URL.Path == "/declared" {
			w.Header().Set("X-Declared", "d")
		} else {
			w.Header().Set(http.TrailerPrefix+"X-Prefixed", "p")
		}
	})})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: ioTimeout}
	for _, path := range []string{"/declared", "/prefixed"} {
		for _, n := range []int{0, 10, 5000} {
			resp, err := cl.Get(fmt.Sprintf("http://%s%s?n=%d", r.addr, path, n))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) != n {
				t.Errorf("%s n=%d: %d bytes, %v", path, n, len(b), err)
			}
			got := resp.Trailer.Get("X-Declared") + resp.Trailer.Get("X-Prefixed")
			want := map[string]string{"/declared": "d", "/prefixed": "p"}[path]
			if got != want {
				t.Errorf("%s n=%d: trailer %v, want %q", path, n, resp.Trailer, want)
			}
			// A trailer set after the body is no header field, even when the head went out with
			// the body held back (n = 0 and 10).
			if v := resp.Header.Get("X-Declared") + resp.Header.Get("X-Prefixed"); v != "" {
				t.Errorf("%s n=%d: the trailer is in the head too: %v", path, n, resp.Header)
			}
		}
	}
}

// stateLog records the states ConnState reports, by client address.
type stateLog struct {
	mu sync.Mutex
	m  map[string][]http.ConnState
}

func (l *stateLog) record(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]http.ConnState{}
	}
	k := c.RemoteAddr().String()
	l.m[k] = append(l.m[k], st)
}

func (l *stateLog) get(c *client) []http.ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.m[c.c.LocalAddr().String()])
}

// waitFor waits (boundedly) until the connection's last state is st.
func (l *stateLog) waitFor(t *testing.T, c *client, st http.ConnState) []http.ConnState {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		got := l.get(c)
		if len(got) > 0 && got[len(got)-1] == st {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("states %v, want them to end in %v", got, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnState(t *testing.T) {
	var log stateLog
	r := start(t, &Server{Handler: echo, ConnState: log.record})
	c := dial(t, r.addr)
	c.do(get("/1"))
	c.do(get("/2"))
	log.waitFor(t, c, http.StateIdle)
	c.c.Close()
	got := log.waitFor(t, c, http.StateClosed)
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateClosed}
	if !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

type ctxKey struct{}

func TestConnContext(t *testing.T) {
	r := start(t, &Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ctxKey{}, "conn "+c.RemoteAddr().String())
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, _ := r.Context().Value(ctxKey{}).(string)
			io.WriteString(w, v+" "+r.RemoteAddr)
		}),
	})
	c := dial(t, r.addr)
	for range 2 {
		a := c.c.LocalAddr().String()
		if _, body := c.do(get("/")); body != "conn "+a+" "+a {
			t.Errorf("got %q, want the connection's context value and address %s", body, a)
		}
	}
}

func TestHijack(t *testing.T) {
	var log stateLog
	r := start(t, &Server{ConnState: log.record, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		// What the client sent after the head was read into the buffer, and is there.
		extra := make([]byte, 5)
		if _, err := io.ReadFull(brw, extra); err != nil {
			t.Errorf("reading after the head: %v", err)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrHijacked) {
			t.Errorf("Write after Hijack: %v", err)
		}
		brw.WriteString("raw " + string(extra) + "\n")
		brw.Flush()
	})})
	c := dial(t, r.addr)
	c.send(get("/") + "EXTRA")
	line, err := c.br.ReadString('\n')
	if line != "raw EXTRA\n" || err != nil {
		t.Fatalf("got %q, %v", line, err)
	}
	c.expectClosed()
	log.waitFor(t, c, http.StateHijacked)
	time.Sleep(50 * time.Millisecond) // StateClosed, were it to come, comes as the handler ends
	if got, want := log.get(c), []http.ConnState{http.StateNew, http.StateActive, http.StateHijacked}; !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

func TestReadHeaderTimeout(t *testing.T) {
	r := start(t, &Server{Handler: echo, ReadHeaderTimeout: 200 * time.Millisecond})
	c := dial(t, r.addr)
	c.send("GET / HTTP/1.1\r\nHo")
	c.expectClosed()

	// A head sent in time is served, and the deadline does not cut the idle wait after it.
	c = dial(t, r.addr)
	c.do(get("/a"))
	time.Sleep(300 * time.Millisecond)
	if _, body := c.do(get("/b")); body != "GET /b" {
		t.Errorf("got %q", body)
	}
}

func TestIdleTimeout(t *testing.T) {
	r := start(t, &Server{Handler: echo, IdleTimeout: 200 * time.Millisecond})
	c := dial(t, r.addr)
	if _, body := c.do(get("/a")); body != "GET /a" {
		t.Errorf("got %q", body)
	}
	c.expectClosed()
}

func TestShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})}
	r := start(t, s)
	idle := dial(t, r.addr)
	idle.do(get("/fast"))
	busy := dial(t, r.addr)
	busy.send(get("/slow"))
	<-entered

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	select {
	case <-r.done:
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return")
	}
	if !errors.Is(r.err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", r.err)
	}
	idle.expectClosed()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}

	close(release)
	resp, body := busy.read("GET")
	if body != "done /slow" || !resp.Close {
		t.Errorf(`got %q, Close %v; want the response with "Connection: close"`, body, resp.Close)
	}
	busy.expectClosed()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
	}
	if c, err := net.Dial("tcp", r.addr); err == nil {
		c.Close()
		t.Error("the listener still accepts")
	}
}

func TestClose(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	})}
	r := start(t, s)
	idle := dial(t, r.addr)
	busy := dial(t, r.addr)
	busy.send(get("/"))
	<-entered
	s.Close()
	busy.expectClosed()
	idle.expectClosed()
	<-r.done
	if !errors.Is(r.err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", r.err)
	}
}

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestPanic(t *testing.T) {
	var logged syncBuffer
	r := start(t, &Server{Log: slog.New(slog.NewTextHandler(&logged, nil)), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/panic":
			panic("boom")
		}
		io.WriteString(w, "fine")
	})})

	c := dial(t, r.addr)
	c.send(get("/abort"))
	c.expectClosed()
	if s := logged.String(); s != "" {
		t.Errorf("http.ErrAbortHandler logged: %s", s)
	}

	c = dial(t, r.addr)
	c.send(get("/panic"))
	c.expectClosed()
	if s := logged.String(); !strings.Contains(s, "panic serving a request") || !strings.Contains(s, "boom") {
		t.Errorf("the panic is not logged: %q", s)
	}

	c = dial(t, r.addr)
	if _, body := c.do(get("/")); body != "fine" {
		t.Errorf("after the panics: %q", body)
	}
}

func TestH2C(t *testing.T) {
	got := make(chan string, 1)
	var log stateLog
	r := start(t, &Server{Handler: echo, ConnState: log.record, H2C: func(c net.Conn) {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		b := make([]byte, 24+4)
		_, err := io.ReadFull(c, b)
		got <- fmt.Sprint(string(b), err)
	}})
	c := dial(t, r.addr)
	c.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nmore")
	if s := <-got; s != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nmore<nil>" {
		t.Errorf("H2C read %q", s)
	}
	log.waitFor(t, c, http.StateHijacked)

	// A request that starts as the preface does is HTTP/1's.
	c = dial(t, r.addr)
	if resp, _ := c.do("PRI * HTTP/1.1\r\nHost: test\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("got %d", resp.StatusCode)
	}
}

func TestTLS(t *testing.T) {
	cert, pool := testCert(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}})
	r := startOn(t, &Server{ReadHeaderTimeout: ioTimeout, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			io.WriteString(w, "no TLS")
			return
		}
		fmt.Fprintf(w, "%v %s %s", r.TLS.HandshakeComplete, r.TLS.ServerName, tls.VersionName(r.TLS.Version))
	})}, tl, l.Addr().String())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.test"}}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: ioTimeout}
	for range 2 {
		resp, err := cl.Get("https://" + r.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "true example.test TLS 1.3"; string(b) != want || resp.ProtoMajor != 1 {
			t.Errorf("got %q (%s), want %q", b, resp.Proto, want)
		}
	}
}

// testCert makes a self-signed certificate for example.test.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "example.test"},
		DNSNames:              []string{"example.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// allocBudget is the most allocations per request the http1 sub-benchmark of BenchmarkServer
// may measure (server and client together; the client allocates nothing per request). 2 are
// measured: the request head's string (parse) and the handler's Header().Set.
const allocBudget = 3

// BenchmarkServer serves GET requests with a 64-byte response, one at a time on one keep-alive
// connection, with this package and with net/http's server.
func BenchmarkServer(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 64)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(payload)
	})
	b.Run("http1", func(b *testing.B) {
		r := start(b, &Server{Handler: handler})
		allocs, n := benchRequests(b, r.addr)
		switch {
		case raceEnabled():
			// sync.Pool drops what it is given at random under the race detector.
		case n < 100:
			// Too few requests to average out what happens once a second (the Date value).
		case allocs > allocBudget:
			b.Fatalf("%.2f allocations per request, budget %d", allocs, allocBudget)
		}
	})
	// Every request on a parked connection: the wait handed to the parker after each response
	// (at once, rather than after idleHandOff) and a new goroutine for the next request.
	b.Run("http1-parked", func(b *testing.B) {
		if runtime.GOOS != "linux" {
			b.Skip("idle connections are parked on Linux only")
		}
		s := &Server{Handler: handler, handOff: time.Nanosecond}
		r := start(b, s)
		benchRequests(b, r.addr)
		for deadline := time.Now().Add(ioTimeout); s.idle.parked() != 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%d connections parked after the last response, want 1", s.idle.parked())
			}
		}
	})
	// The same, the socket held by a SocketHolder (as the worker's are): it also leaves Go's
	// poller while parked, and comes back as a new net.Conn for each request.
	b.Run("http1-parked-held", func(b *testing.B) {
		if runtime.GOOS != "linux" {
			b.Skip("idle connections are parked on Linux only")
		}
		s := &Server{Handler: handler, handOff: time.Nanosecond, detach: -1}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		hl := &holdingListener{Listener: l}
		r := startOn(b, s, hl, l.Addr().String())
		_, n := benchRequests(b, r.addr)
		for deadline := time.Now().Add(ioTimeout); s.idle.parked() != 1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%d connections parked after the last response, want 1", s.idle.parked())
			}
		}
		if hl.swaps() < n-1 {
			b.Fatalf("%d sockets given back for %d requests: not parked through the holder", hl.swaps(), n)
		}
	})
	b.Run("net-http", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s := &http.Server{Handler: handler}
		go s.Serve(l)
		b.Cleanup(func() { s.Close() })
		benchRequests(b, l.Addr().String())
	})
}

// benchRequests sends requests on one connection for b.Loop and returns the allocations per
// request and the number of requests. The client allocates nothing per request: every response
// has the length of the first (the Date field keeps its length), which it reads whole.
func benchRequests(b *testing.B, addr string) (allocs float64, n int) {
	b.ReportAllocs()
	c := dial(b, addr)
	req := []byte(get("/bench"))
	if _, err := c.c.Write(req); err != nil {
		b.Fatal(err)
	}
	var head bytes.Buffer
	tp := io.TeeReader(c.br, &head)
	resp, err := http.ReadResponse(bufio.NewReaderSize(tp, 16), nil)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || len(body) != 64 || resp.ContentLength != 64 {
		b.Fatalf("got %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	buf := make([]byte, head.Len())
	if c.br.Buffered() > 0 {
		b.Fatal("bytes after the response")
	}
	if !bytes.HasSuffix(head.Bytes(), body) {
		b.Fatalf("response read past its body: %q", head.Bytes())
	}

	do := func() {
		c.c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.c, buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 10 {
		do() // the pools filled
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for b.Loop() {
		do()
		n++
	}
	runtime.ReadMemStats(&m1)
	if !bytes.HasSuffix(buf, body) {
		b.Fatalf("last response: %q", buf)
	}
	return float64(m1.Mallocs-m0.Mallocs) / float64(n), n
}

// raceEnabled reports whether the test binary has the race detector.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	return ok && slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == "-race" && s.Value == "true" })
}
