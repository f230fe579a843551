package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

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

// TestEarlyResponse: the backend answers and hangs up while the request body
// is still being sent. The answer should reach the client.
func TestEarlyResponse(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
		c.(*net.TCPConn).CloseWrite()
		// Keep draining so the close is a clean FIN rather than a reset that
		// could discard the response in the client's receive buffer.
		io.Copy(io.Discard, io.LimitReader(br, 64<<10))
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	out := newOut(t, "POST", rb.addr(), "/", nil)
	out.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", 32<<20)))
	out.ContentLength = 32 << 20
	w := newSpy()
	status, err := p.Forward(context.Background(), w, out, 5*time.Second)
	if err != nil || status != http.StatusRequestEntityTooLarge || w.Body() != "too big!" {
		t.Fatalf("status %d, err %v, body %q; want the early 413", status, err, w.Body())
	}
}

// TestBackendNotReadingBody: the backend accepts the request header but never
// reads the body. Once the socket buffers are full, writes stall; the
// timeout turns that into ErrTimeout, and cancellation aborts it too.
func TestBackendNotReadingBody(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		<-stop
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	bigBody := func() *http.Request {
		out := newOut(t, "PUT", rb.addr(), "/", nil)
		out.Body = io.NopCloser(io.LimitReader(zeroReader{}, 1<<30))
		out.ContentLength = 1 << 30
		return out
	}

	w := newSpy()
	status, err := p.Forward(context.Background(), w, bigBody(), 200*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || status != 0 {
		t.Fatalf("status %d, err %v; want ErrTimeout", status, err)
	}
	w.assertUntouched(t)

	ctx, cancel := context.WithCancel(context.Background())
	w = newSpy()
	ch := forwardBG(ctx, p, w, bigBody(), 0)
	waitFor(t, "second connection", func() bool { return rb.accepted.Load() == 2 })
	cancel()
	if r := await(t, ch); !errors.Is(r.err, ErrCanceled) || r.status != 0 {
		t.Fatalf("status %d, err %v; want ErrCanceled", r.status, r.err)
	}
	w.assertUntouched(t)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
