package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// forwardCutBG runs ForwardCut in a goroutine and delivers its results.
func forwardCutBG(p *Pool, w http.ResponseWriter, out *http.Request, k *Cutter) <-chan result {
	ch := make(chan result, 1)
	go func() {
		status, err := p.ForwardCut(context.Background(), w, out, 10*time.Second, k)
		ch <- result{status, err}
	}()
	return ch
}

// TestCutterBeforeResponse: Cut ends an exchange waiting for the response header with ErrCut and
// nothing written; exchanges started afterwards run normally.
func TestCutterBeforeResponse(t *testing.T) {
	got := make(chan struct{}, 4)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/hang" {
				got <- struct{}{}
				io.Copy(io.Discard, br) // never answer; ends when the gateway closes the conn
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	var k Cutter

	w := newSpy()
	ch := forwardCutBG(p, w, newOut(t, "GET", rb.addr(), "/hang", nil), &k)
	<-got
	waitFor(t, "the exchange to register", func() bool { k.mu.Lock(); defer k.mu.Unlock(); return len(k.running) == 1 })
	if n := k.Cut(); n != 1 {
		t.Errorf("Cut() = %d, want 1 running exchange", n)
	}
	r := await(t, ch)
	if !errors.Is(r.err, ErrCut) || r.status != 0 {
		t.Fatalf("status %d, err %v; want ErrCut with nothing written", r.status, r.err)
	}
	w.assertUntouched(t)

	w = newSpy()
	status, err := p.ForwardCut(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second, &k)
	if err != nil || status != 200 || w.Body() != "ok" {
		t.Fatalf("after Cut: status %d, err %v, body %q; want 200 ok", status, err, w.Body())
	}
	if n := k.Cut(); n != 0 {
		t.Errorf("Cut() with nothing running = %d, want 0", n)
	}
	if n := p.IdleConns(); n != 1 {
		t.Errorf("%d idle connections after a clean exchange, want 1 (the cut one is closed)", n)
	}
}

// TestCutterMidBody: Cut ends a response whose body is streaming; the status already sent is
// returned with ErrCut, and the connection is not pooled.
func TestCutterMidBody(t *testing.T) {
	sent := make(chan struct{})
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
		close(sent)
		io.Copy(io.Discard, br)
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	var k Cutter
	w := newSpy()
	ch := forwardCutBG(p, w, newOut(t, "GET", rb.addr(), "/", nil), &k)
	<-sent
	waitFor(t, "the body to start", func() bool { return w.Body() == "half" })
	k.Cut()
	r := await(t, ch)
	if !errors.Is(r.err, ErrCut) || r.status != 200 {
		t.Fatalf("status %d, err %v; want 200 with ErrCut", r.status, r.err)
	}
	if n := p.IdleConns(); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
}

// TestUnsolicitedResponseNotServed: a backend that writes to a connection sitting idle (a 408,
// say) must not have those bytes taken for the next request's response, also when that request
// could be retried: a connection idle past liveCheckAfter is checked before use.
func TestUnsolicitedResponseNotServed(t *testing.T) {
	if !canProbe {
		t.Skip("no liveness probe on this platform")
	}
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if idx == 0 {
			// Later, so that the gateway has pooled the connection by then.
			time.Sleep(liveCheckAfter / 5)
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			io.Copy(io.Discard, br)
			return
		}
		io.Copy(io.Discard, br)
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", rb.addr(), "/", nil), time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(liveCheckAfter + 50*time.Millisecond) // let the connection age into being checked
	w := newSpy()
	status, err := p.Forward(context.Background(), w, newOut(t, "GET", rb.addr(), "/", nil), time.Second)
	if err != nil || status != 200 || w.Body() != "ok" {
		t.Fatalf("status %d, err %v, body %q; want 200 ok from a new connection", status, err, w.Body())
	}
	if n := rb.accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}
