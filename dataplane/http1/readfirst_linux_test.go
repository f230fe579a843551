package http1

import (
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
)

// waitCountingListener gives connections whose raw Reads (the idle waiter's) are counted.
type waitCountingListener struct {
	net.Listener
	waits atomic.Int32
}

func (l *waitCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &waitCountingConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

type waitCountingConn struct {
	*net.TCPConn
	l *waitCountingListener
}

func (c *waitCountingConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	return countingRawConn{RawConn: rc, waits: &c.l.waits}, err
}

type countingRawConn struct {
	syscall.RawConn
	waits *atomic.Int32
}

func (r countingRawConn) Read(f func(uintptr) bool) error {
	r.waits.Add(1)
	return r.RawConn.Read(f)
}

// A connection waits for its first and second requests without a buffer (the waiter looks with
// MSG_PEEK), and from its third on reads at once: one that has sent two requests likely sends the
// next soon.
func TestBusyConnectionReadFirst(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := &waitCountingListener{Listener: l}
	r := startOn(t, &Server{Handler: echo}, wl, l.Addr().String())
	c := dial(t, r.addr)
	for i := range 6 {
		if _, body := c.do(get(fmt.Sprint("/", i))); body != fmt.Sprint("GET /", i) {
			t.Fatalf("request %d: %q", i, body)
		}
	}
	if n := wl.waits.Load(); n != 2 {
		t.Fatalf("the waiter looked %d times over 6 requests and the wait for a 7th; want 2 (before the first and the second)", n)
	}
}
