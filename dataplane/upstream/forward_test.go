package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
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

func TestRequestBodies(t *testing.T) {
	type seen struct {
		body    []byte
		cl      int64
		te      []string
		trailer string
	}
	seenCh := make(chan seen, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("backend reading body: %v", err)
		}
		seenCh <- seen{body, r.ContentLength, r.TransferEncoding, r.Trailer.Get("X-Checksum")}
		fmt.Fprintf(w, "%x", sha256.Sum256(body))
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(rand.IntN(256))
	}
	// pipeBody streams data through an io.Pipe in uneven pieces: a body of
	// unknown length, like an incoming chunked request.
	pipeBody := func(data []byte) io.Reader {
		pr, pw := io.Pipe()
		go func() {
			for len(data) > 0 {
				n := min(len(data), 1+rand.IntN(50000))
				if _, err := pw.Write(data[:n]); err != nil {
					return
				}
				data = data[n:]
			}
			pw.Close()
		}()
		return pr
	}

	tests := []struct {
		name      string
		method    string
		body      func() io.Reader
		cl        int64
		data      []byte
		trailer   string
		wantCL    int64
		chunked   bool
		wantEmpty bool
	}{
		{name: "content-length small", method: "POST", body: func() io.Reader { return strings.NewReader("hello world") }, cl: 11, data: []byte("hello world"), wantCL: 11},
		{name: "content-length big", method: "PUT", body: func() io.Reader { return bytes.NewReader(big) }, cl: int64(len(big)), data: big, wantCL: int64(len(big))},
		{name: "unknown length pipe", method: "POST", body: func() io.Reader { return pipeBody([]byte("streamed body")) }, cl: -1, data: []byte("streamed body"), wantCL: -1, chunked: true},
		{name: "unknown length big pipe", method: "POST", body: func() io.Reader { return pipeBody(big) }, cl: -1, data: big, wantCL: -1, chunked: true},
		{name: "unknown length with trailer", method: "POST", body: func() io.Reader { return pipeBody([]byte("abc")) }, cl: -1, data: []byte("abc"), trailer: "sum-abc", wantCL: -1, chunked: true},
		{name: "empty POST", method: "POST", body: func() io.Reader { return http.NoBody }, cl: 0, wantCL: 0},
		{name: "zero length pipe", method: "POST", body: func() io.Reader { return pipeBody(nil) }, cl: -1, wantCL: -1, chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newOut(t, tt.method, b.addr(), "/upload", nil)
			if body := tt.body(); body == http.NoBody {
				out.Body = http.NoBody
			} else {
				out.Body = io.NopCloser(body)
			}
			out.ContentLength = tt.cl
			if tt.trailer != "" {
				out.Trailer = http.Header{"X-Checksum": nil}
				// Trailer values are filled in once the body is consumed,
				// as net/http does for incoming requests.
				body := out.Body
				out.Body = io.NopCloser(readerFunc(func(p []byte) (int, error) {
					n, err := body.Read(p)
					if err == io.EOF {
						out.Trailer.Set("X-Checksum", tt.trailer)
					}
					return n, err
				}))
			}
			w := newSpy()
			status, err := p.Forward(context.Background(), w, out, 10*time.Second)
			if err != nil || status != 200 {
				t.Fatalf("status %d, err %v", status, err)
			}
			s := <-seenCh
			if !bytes.Equal(s.body, tt.data) {
				t.Errorf("backend got %d bytes, want %d (content differs)", len(s.body), len(tt.data))
			}
			if s.cl != tt.wantCL {
				t.Errorf("backend ContentLength = %d, want %d", s.cl, tt.wantCL)
			}
			if got := len(s.te) == 1 && s.te[0] == "chunked"; got != tt.chunked {
				t.Errorf("backend TransferEncoding = %v, want chunked=%v", s.te, tt.chunked)
			}
			if s.trailer != tt.trailer {
				t.Errorf("backend trailer = %q, want %q", s.trailer, tt.trailer)
			}
			if want := fmt.Sprintf("%x", sha256.Sum256(tt.data)); w.Body() != want {
				t.Errorf("response %q, want %q", w.Body(), want)
			}
		})
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestRequestHeaderWritten(t *testing.T) {
	got := make(chan *http.Request, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			got <- req
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()

	out := newOut(t, "GET", rb.addr(), "/a%2Fb/c?x=1&y=%20", nil)
	out.Host = "app.example"
	out.Header.Set("X-Forwarded-For", "192.0.2.1")
	out.Header.Add("Accept", "a")
	out.Header.Add("Accept", "b")
	out.Header.Set("Connection", "upgrade") // ignored: the caller controls Close
	out.Header.Set("Content-Length", "99")  // ignored: framing comes from the Request
	if _, err := p.Forward(context.Background(), newSpy(), out, time.Second); err != nil {
		t.Fatal(err)
	}
	r := <-got
	checks := []struct{ name, got, want string }{
		{"method", r.Method, "GET"},
		{"target", r.RequestURI, "/a%2Fb/c?x=1&y=%20"},
		{"proto", r.Proto, "HTTP/1.1"},
		{"host", r.Host, "app.example"},
		{"xff", r.Header.Get("X-Forwarded-For"), "192.0.2.1"},
		{"accept", strings.Join(r.Header["Accept"], ","), "a,b"},
		{"connection", r.Header.Get("Connection"), ""},
		{"content-length", r.Header.Get("Content-Length"), ""},
		{"user-agent", r.Header.Get("User-Agent"), ""}, // no Go-http-client default
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}

	// out.Close asks for Connection: close and the conn is not pooled.
	out = newOut(t, "GET", rb.addr(), "/", nil)
	out.Close = true
	if _, err := p.Forward(context.Background(), newSpy(), out, time.Second); err != nil {
		t.Fatal(err)
	}
	r = <-got
	if !r.Close {
		t.Error("out.Close did not send Connection: close")
	}
	if n := p.IdleConns(); n != 0 {
		t.Errorf("IdleConns = %d after out.Close, want 0", n)
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

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	p := NewPool(addr, Options{DialTimeout: 2 * time.Second})
	defer p.Close()
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", addr, "/", nil), time.Second)
	if !errors.Is(err, ErrDial) || status != 0 {
		t.Fatalf("status %d, err %v; want ErrDial", status, err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address", err)
	}
	w.assertUntouched(t)
}

func TestPoolClosed(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x") })
	p := NewPool(b.addr(), Options{})
	if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "backend to see the idle connection closed", func() bool { return b.closed.Load() == 1 })
	w := newSpy()
	_, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), 0)
	if !errors.Is(err, ErrDial) || !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("err %v; want ErrDial and ErrPoolClosed", err)
	}
	w.assertUntouched(t)
}

func TestHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "done")
	})
	defer close(release)
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	for _, method := range []string{"GET", "POST"} {
		w := newSpy()
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("some body")
		}
		start := time.Now()
		status, err := p.Forward(context.Background(), w, newOut(t, method, b.addr(), "/slow", body), 100*time.Millisecond)
		if !errors.Is(err, ErrTimeout) || status != 0 {
			t.Fatalf("%s: status %d, err %v; want ErrTimeout", method, status, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: timeout took %v", method, d)
		}
		w.assertUntouched(t)
	}
	// The timed-out connections were discarded; the pool still works.
	w := newSpy()
	if _, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/fast", nil), time.Second); err != nil || w.Body() != "done" {
		t.Fatalf("after timeout: err %v body %q", err, w.Body())
	}
}

func TestBadResponse(t *testing.T) {
	for _, tt := range []struct {
		name  string
		reply string // written after reading the request; then the conn is closed
	}{
		{"garbage", "FOO BAR\r\n\r\n"},
		{"closed before response", ""},
		{"truncated header", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"bad content length", "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"},
		{"unsolicited 101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
				if _, _, err := readRequest(br); err == nil {
					io.WriteString(c, tt.reply)
				}
			})
			p := NewPool(rb.addr(), Options{})
			defer p.Close()
			w := newSpy()
			status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second)
			if !errors.Is(err, ErrBadResponse) || status != 0 {
				t.Fatalf("status %d, err %v; want ErrBadResponse", status, err)
			}
			w.assertUntouched(t)
			if n := rb.accepted.Load(); n != 1 {
				t.Errorf("fresh connection failure was retried: %d connections", n)
			}
		})
	}
}

func TestResponseHeaderTooLarge(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, _, err := readRequest(br); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\nContent-Length: 0\r\n\r\n")
		}
	})
	p := NewPool(rb.addr(), Options{MaxResponseHeaderBytes: 16 << 10})
	defer p.Close()
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second)
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "too large") || status != 0 {
		t.Fatalf("status %d, err %v; want ErrBadResponse (too large)", status, err)
	}
	w.assertUntouched(t)
}

func TestMidBodyFailure(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, _, err := readRequest(br); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second)
	if !errors.Is(err, ErrBadResponse) || status != 200 {
		t.Fatalf("status %d, err %v; want 200 + ErrBadResponse", status, err)
	}
	if w.Body() != "only part" {
		t.Errorf("body %q", w.Body())
	}
	if p.IdleConns() != 0 {
		t.Error("broken connection was pooled")
	}
}

func TestInvalidRequest(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("backend received %s %s", r.Method, r.URL)
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	tests := []struct {
		name string
		mod  func(r *http.Request)
	}{
		{"CRLF in value", func(r *http.Request) { r.Header.Set("X-Evil", "a\r\nInjected: yes") }},
		{"bad name", func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }},
		{"CRLF in host", func(r *http.Request) { r.Host = "a\r\nX: y" }},
		{"space in query", func(r *http.Request) { r.URL.RawQuery = "a=b HTTP/1.1\r\nX: y" }},
		{"bad method", func(r *http.Request) { r.Method = "GE T" }},
		{"length without body", func(r *http.Request) { r.ContentLength = 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newOut(t, "GET", b.addr(), "/", nil)
			tt.mod(out)
			w := newSpy()
			status, err := p.Forward(context.Background(), w, out, time.Second)
			if !errors.Is(err, ErrInvalidRequest) || status != 0 {
				t.Fatalf("status %d, err %v; want ErrInvalidRequest", status, err)
			}
			w.assertUntouched(t)
		})
	}
}

func TestRequestBodyReadError(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	clientGone := errors.New("client went away")
	for _, cl := range []int64{-1, 1000} {
		sent := false
		out := newOut(t, "POST", b.addr(), "/", nil)
		out.ContentLength = cl
		out.Body = io.NopCloser(readerFunc(func(p []byte) (int, error) {
			if !sent {
				sent = true
				return copy(p, "partial"), nil
			}
			return 0, clientGone
		}))
		w := newSpy()
		status, err := p.Forward(context.Background(), w, out, time.Second)
		if !errors.Is(err, ErrRequestBody) || !errors.Is(err, clientGone) || status != 0 {
			t.Fatalf("cl=%d: status %d, err %v; want ErrRequestBody", cl, status, err)
		}
		w.assertUntouched(t)
	}
	// A body shorter than its ContentLength is a client error too.
	out := newOut(t, "POST", b.addr(), "/", strings.NewReader("short"))
	out.ContentLength = 10
	if _, err := p.Forward(context.Background(), newSpy(), out, time.Second); !errors.Is(err, ErrRequestBody) {
		t.Fatalf("short body: err %v; want ErrRequestBody", err)
	}
	if p.IdleConns() != 0 {
		t.Error("connection with a half-sent request was pooled")
	}
}

func TestClientWriteError(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 100<<10))
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	w := newSpy()
	w.writeFn = func([]byte) error { return errors.New("broken pipe to client") }
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), time.Second)
	if !errors.Is(err, ErrClientWrite) || status != 200 {
		t.Fatalf("status %d, err %v; want 200 + ErrClientWrite", status, err)
	}
	if p.IdleConns() != 0 {
		t.Error("connection with an unread body was pooled")
	}
}

func TestBodyReadTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	p := NewPool(b.addr(), Options{BodyReadTimeout: 100 * time.Millisecond})
	defer p.Close()
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), time.Second)
	if !errors.Is(err, ErrTimeout) || status != 200 {
		t.Fatalf("status %d, err %v; want 200 + ErrTimeout", status, err)
	}
	if w.Body() != "start" {
		t.Errorf("body %q", w.Body())
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
