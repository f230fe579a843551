package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

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

// A TLS backend that takes the connection but never answers the handshake is a dial failure once
// the dial timeout passes (the handshake is part of the dial, as with tls.Dialer), not a request
// that waits for its own, far longer, timeout.
func TestTLSHandshakeWithinDialTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent
		}
	}()
	addr := ln.Addr().String()
	p := NewPool(addr, Options{DialTimeout: 100 * time.Millisecond, TLSConfig: &tls.Config{}})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := newSpy()
	status, err := p.Forward(ctx, w, newOut(t, "GET", addr, "/", nil), time.Minute)
	if !errors.Is(err, ErrDial) || status != 0 || ctx.Err() != nil {
		t.Fatalf("status %d, err %v (context: %v); want ErrDial before the request's timeout", status, err, ctx.Err())
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
