package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// watchCtx is a request context that can say whether its client left (as http1's conn).
type watchCtx struct {
	context.Context
	gone func() bool
}

func (w watchCtx) ClientGone() bool { return w.gone != nil && w.gone() }

func stayingClient() context.Context { return watchCtx{Context: context.Background()} }

// The tests of the wait in slices (readResponse with a context that can tell whether its client has
// left) were first written by a review, as failing tests of its first version.

// A backend that answers 102 Processing (or 103 Early Hints, or an unsolicited 100) at once and
// its final response 2 s later, well within a 10 s header timeout: the final response gets what is
// left of the header timeout, not of the 1 s slice the 1xx came in.
func TestWatch1xxThenSlowFinal(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"100 Continue", "102 Processing", "103 Early Hints"} {
		t.Run(code, func(t *testing.T) {
			t.Parallel()
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 "+code+"\r\n\r\n")
				time.Sleep(2 * time.Second)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			})
			p := NewPool(rb.addr(), Options{})
			defer p.Close()
			w := newSpy()
			status, err := p.Forward(stayingClient(), w, newOut(t, "GET", rb.addr(), "/", nil), 10*time.Second)
			if err != nil || status != 200 || w.Body() != "ok" {
				t.Fatalf("status %d, err %v, body %q; want 200 \"ok\" (the header timeout is 10 s)", status, err, w.Body())
			}
		})
	}
}

// The same without a watching context (no slices).
func TestWatch1xxThenSlowFinalNoWatch(t *testing.T) {
	t.Parallel()
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n")
		time.Sleep(2 * time.Second)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), 10*time.Second)
	if err != nil || status != 200 {
		t.Fatalf("status %d, err %v", status, err)
	}
}

// A header begun at once and finished 1.4 s later, within a 2 s header timeout, passes, watched or
// not: the rest of a begun header is not cut at the slice's end.
func TestWatchBegunHeaderKeepsItsTime(t *testing.T) {
	t.Parallel()
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		time.Sleep(1400 * time.Millisecond)
		io.WriteString(c, "Content-Length: 2\r\n\r\nok")
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	for _, ctx := range []context.Context{context.Background(), stayingClient()} {
		w := newSpy()
		start := time.Now()
		status, err := p.Forward(ctx, w, newOut(t, "GET", rb.addr(), "/", nil), 2*time.Second)
		if err != nil || status != 200 {
			t.Errorf("%T: status %d, err %v after %v; want 200 (header done at 1.4 s of a 2 s timeout)", ctx, status, err, time.Since(start).Round(time.Millisecond))
		}
	}
}

// The header timeout bounds the whole header, watched too: a backend whose first byte comes at
// 2.5 s and the rest at 4.3 s, under a 3 s timeout, is a timeout.
func TestWatchTotalHeaderTimeout(t *testing.T) {
	t.Parallel()
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		time.Sleep(2500 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		time.Sleep(1800 * time.Millisecond)
		io.WriteString(c, "Content-Length: 2\r\n\r\nok")
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	w := newSpy()
	start := time.Now()
	status, err := p.Forward(stayingClient(), w, newOut(t, "GET", rb.addr(), "/", nil), 3*time.Second)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("status %d, err %v after %v: a header that took 4.3 s and a 3 s header timeout; want ErrTimeout", status, err, time.Since(start).Round(time.Millisecond))
	}
}

// Over a TLS backend the slices do not break the read; a client that leaves ends a wait with no
// header timeout, and the backend's request with it; a stale pooled connection is still retried;
// with BodyReadTimeout, a slice's deadline left behind does not cut the body's read.
func TestWatch(t *testing.T) {
	t.Parallel()
	t.Run("tls-slices", func(t *testing.T) {
		t.Parallel()
		b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(2500 * time.Millisecond)
			io.WriteString(w, "late")
		}, nil, true)
		roots := x509.NewCertPool()
		roots.AddCert(b.Certificate())
		p := NewPool(b.addr(), Options{TLSConfig: &tls.Config{RootCAs: roots}})
		defer p.Close()
		w := newSpy()
		status, err := p.Forward(stayingClient(), w, newOut(t, "GET", b.addr(), "/", nil), 5*time.Second)
		if err != nil || status != 200 || w.Body() != "late" {
			t.Fatalf("status %d err %v body %q", status, err, w.Body())
		}
	})
	t.Run("gone-no-limit", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		defer close(release)
		ended := make(chan struct{}, 1)
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				ended <- struct{}{}
			case <-release:
			}
		})
		p := NewPool(b.addr(), Options{})
		defer p.Close()
		var gone atomic.Bool
		time.AfterFunc(1500*time.Millisecond, func() { gone.Store(true) })
		w := newSpy()
		start := time.Now()
		_, err := p.Forward(watchCtx{Context: context.Background(), gone: gone.Load}, w, newOut(t, "GET", b.addr(), "/", nil), 0)
		if !errors.Is(err, ErrCanceled) || time.Since(start) > 3500*time.Millisecond {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		select {
		case <-ended:
		case <-time.After(3 * time.Second):
			t.Fatal("the backend's request did not end")
		}
	})
	t.Run("stale-retry", func(t *testing.T) {
		t.Parallel()
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
			if idx == 0 {
				// Close after the next request arrives, answering nothing (a stale keep-alive).
				readRequest(br)
				return
			}
		})
		p := NewPool(rb.addr(), Options{})
		defer p.Close()
		for i := range 2 {
			w := newSpy()
			status, err := p.Forward(stayingClient(), w, newOut(t, "GET", rb.addr(), "/", nil), 5*time.Second)
			if err != nil || status != 200 {
				t.Fatalf("request %d: status %d err %v", i, status, err)
			}
		}
		if n := rb.accepted.Load(); n != 2 {
			t.Fatalf("accepted %d, want 2 (retried)", n)
		}
	})
	t.Run("body-read-timeout", func(t *testing.T) {
		t.Parallel()
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			time.Sleep(1200 * time.Millisecond)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
			time.Sleep(1500 * time.Millisecond)
			io.WriteString(c, "cd")
		})
		p := NewPool(rb.addr(), Options{BodyReadTimeout: 3 * time.Second})
		defer p.Close()
		w := newSpy()
		status, err := p.Forward(stayingClient(), w, newOut(t, "GET", rb.addr(), "/", nil), 5*time.Second)
		if err != nil || status != 200 || w.Body() != "abcd" {
			t.Fatalf("status %d err %v body %q", status, err, w.Body())
		}
	})
}
