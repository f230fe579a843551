package http1

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A connection idle past idleHandOff is waited on by a new goroutine: it still serves its next
// request, its states read as if nothing happened, its idle timeout still counts from the end of
// the last response, and Shutdown still finds it idle.
func TestIdleHandOff(t *testing.T) {
	const idle = idleHandOff + 700*time.Millisecond
	var log stateLog
	s := &Server{Handler: echo, IdleTimeout: idle, ConnState: log.record}
	r := start(t, s)

	c := dial(t, r.addr)
	c.do(get("/a"))
	time.Sleep(idleHandOff + 200*time.Millisecond)
	if _, body := c.do(get("/b")); body != "GET /b" {
		t.Fatalf("after the hand-off: %q, want %q", body, "GET /b")
	}
	got := log.waitFor(t, c, http.StateIdle)
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle}
	if !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}

	// The idle timeout holds across the hand-off: closed after it, not at the hand-off.
	c2 := dial(t, r.addr)
	c2.do(get("/c"))
	idleFrom := time.Now()
	c2.expectClosed()
	if waited := time.Since(idleFrom); waited < idle-100*time.Millisecond {
		t.Errorf("closed after %v idle, want the idle timeout (%v)", waited, idle)
	}

	// Shutdown closes a handed-off idle connection at once.
	c3 := dial(t, r.addr)
	c3.do(get("/d"))
	time.Sleep(idleHandOff + 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c3.expectClosed()
	if got := log.waitFor(t, c3, http.StateClosed); got[len(got)-2] != http.StateIdle {
		t.Errorf("states %v, want Idle then Closed", got)
	}
}

// A client's "Connection: close" closes the connection after the response even when the handler
// clears Request.Close (the proxy does, so as not to close its backend connection).
func TestClientCloseKept(t *testing.T) {
	r := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Close = false
		w.Write([]byte("ok"))
	})})
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		c := dial(t, r.addr)
		resp, body := c.do(req)
		if body != "ok" || !resp.Close {
			t.Errorf("%q: body %q, Close %v; want ok and Connection: close", req, body, resp.Close)
		}
		c.expectClosed()
	}
}

// failingListener fails its first Accepts with err, then accepts from the real listener.
type failingListener struct {
	net.Listener
	fails atomic.Int32
	err   error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// Running out of descriptors pauses accepting; it does not end Serve.
func TestAcceptRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}}
	fl.fails.Store(3)
	r := startOn(t, &Server{Handler: echo}, fl, ln.Addr().String())
	c := dial(t, r.addr)
	if _, body := c.do(get("/after-emfile")); body != "GET /after-emfile" {
		t.Fatalf("got %q", body)
	}
	if n := fl.fails.Load(); n >= 0 {
		t.Fatalf("%d failures left, want all three returned to Serve", n+1)
	}
}
