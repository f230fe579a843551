package http1

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// heldConn holds its socket as the worker's connections do (SocketHolder): parked, the socket
// leaves Go's poller and comes back as a new net.Conn.
type heldConn struct {
	net.Conn
	mu    sync.Mutex   // for the test's looks at Conn while the server may swap it
	swaps atomic.Int32 // SetSocket calls that gave a live socket back (not a closedSocket)
}

func (c *heldConn) Socket() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn
}

func (c *heldConn) SetSocket(s net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Conn = s
	if _, closed := s.(closedSocket); !closed {
		c.swaps.Add(1)
	}
}

func (c *heldConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// holdingListener gives its connections to a heldConn each (and keeps them, for the test).
type holdingListener struct {
	net.Listener
	mu   sync.Mutex
	held []*heldConn
}

func (l *holdingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	h := &heldConn{Conn: c}
	l.mu.Lock()
	l.held = append(l.held, h)
	l.mu.Unlock()
	return h, nil
}

// swaps is the number of live sockets given back over every connection.
func (l *holdingListener) swaps() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, h := range l.held {
		n += int(h.swaps.Load())
	}
	return n
}
