package accept

import (
	"errors"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// failing fails its first n Accepts with err, then accepts from the real listener.
type failing struct {
	net.Listener
	err error
	n   atomic.Int32
}

func (f *failing) Accept() (net.Conn, error) {
	if f.n.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.Listener.Accept()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveAsync runs Serve on l, handing each connection to conns, and returns Serve's result.
func serveAsync(a *Loops, l net.Listener, conns chan<- net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- a.Serve(l, func(c net.Conn) bool { conns <- c; return true }, nil)
	}()
	return done
}

func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s in 10s", what)
		panic("unreachable")
	}
}

// Running out of descriptors pauses accepting; the next connection is still served. Close
// then ends Serve with http.ErrServerClosed, and a later Serve returns it at once.
func TestOutOfDescriptorsPauses(t *testing.T) {
	ln := listen(t)
	fl := &failing{Listener: ln, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}}
	fl.n.Store(3)
	var a Loops
	conns := make(chan net.Conn, 1)
	done := serveAsync(&a, fl, conns)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wait(t, conns, "connection after three EMFILE failures").Close()
	a.Close()
	if err := wait(t, done, "return from Serve after Close"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Close: %v, want http.ErrServerClosed", err)
	}
	if err := a.Serve(listen(t), func(net.Conn) bool { return true }, nil); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve on a closed Loops: %v, want http.ErrServerClosed", err)
	}
}

// Another accept error ends Serve with that error; serve returning false ends it with
// http.ErrServerClosed.
func TestServeEnds(t *testing.T) {
	boom := errors.New("boom")
	fl := &failing{Listener: listen(t), err: boom}
	fl.n.Store(1)
	var a Loops
	if err := a.Serve(fl, func(net.Conn) bool { return true }, nil); !errors.Is(err, boom) {
		t.Fatalf("Serve: %v, want the listener's error", err)
	}

	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- a.Serve(ln, func(c net.Conn) bool { c.Close(); return false }, nil) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := wait(t, done, "return from Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve when serve refuses: %v, want http.ErrServerClosed", err)
	}
}
