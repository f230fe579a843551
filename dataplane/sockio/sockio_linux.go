package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// socket is the raw reader and writer of one connection's socket. Like a net.Conn, it may be read
// and written from several goroutines at once: Reads (and Writes) take turns, each whole, as the
// descriptor's locks make them on the net.Conn.
type socket struct {
	rc syscall.RawConn
	nc net.Conn // for the addresses of an error

	// The Read and the Write in progress, for the functions bound once (a call allocates nothing);
	// each under its mutex, taken before the call is stored.
	rmu, wmu sync.Mutex
	r, w     call
	readFn   func(fd uintptr) bool
	writeFn  func(fd uintptr) bool
}

// call is one Read's or Write's buffer, progress and error.
type call struct {
	p     []byte
	n     int
	errno syscall.Errno
}

// newSocket gives the raw reader and writer of nc's socket, or nil when nc has none of its own
// (TLS, pipes). It is bound to nc's descriptor: a net.Conn made anew for the same socket
// (os.NewFile, net.FileConn) needs one of its own (Wrap it).
func newSocket(nc net.Conn) *socket {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &socket{rc: rc, nc: nc}
	s.readFn = s.read
	s.writeFn = s.write
	return s
}

// Read reads up to len(p) bytes, waiting in the poller until some are there, the read deadline
// passes or the connection is closed. At the end of the stream it returns io.EOF.
func (s *socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	s.r = call{p: p}
	err := s.rc.Read(s.readFn)
	n, errno := s.r.n, s.r.errno
	s.r.p = nil
	s.rmu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, s.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *socket) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.r.p[0])), uintptr(len(s.r.p)))
		switch e {
		case 0:
			s.r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits
		}
		s.r.errno = e
		return true
	}
}

// Write writes all of p, waiting in the poller while the socket's send buffer is full, until the
// write deadline passes or the connection is closed. It returns how much was written.
func (s *socket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	s.w = call{p: p}
	err := s.rc.Write(s.writeFn)
	n, errno := s.w.n, s.w.errno
	s.w.p = nil
	s.wmu.Unlock()
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, s.opError("write", errno)
	}
	return n, nil
}

// opError is a system call's error as a net.Conn reports it.
func (s *socket) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(),
		Err: os.NewSyscallError(op, errno)}
}

func (s *socket) write(fd uintptr) bool {
	for s.w.n < len(s.w.p) {
		b := s.w.p[s.w.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			if n == 0 {
				s.w.errno = syscall.EIO // no progress on a writable socket: never loop on it
				return true
			}
			s.w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits
		default:
			s.w.errno = e
			return true
		}
	}
	return true
}

// Conn is a TCP connection whose Read and Write are raw system calls (see the package comment),
// and whose read deadline is moved lazily (SetReadDeadline). The rest is the *net.TCPConn's (write
// deadlines, Close, CloseWrite, ReadFrom).
type Conn struct {
	*net.TCPConn
	s *socket

	// The read deadline. armed is never later than want (zero is later than any time).
	dmu   sync.Mutex
	want  time.Time // the deadline last set (zero: none)
	armed time.Time // the deadline on the socket (zero: none)
}

// Wrap gives nc as a Conn when it is a *net.TCPConn, else nc itself.
func Wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	s := newSocket(tc)
	if s == nil {
		return nc
	}
	return &Conn{TCPConn: tc, s: s}
}

// Read reads as a net.Conn does. A read ended by a deadline earlier than the one last set
// (SetReadDeadline) sets that one and goes on.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		n, err := c.s.Read(p)
		if err == nil {
			return n, nil
		}
		if retry, err := c.early(err); !retry {
			return n, err
		}
	}
}

func (c *Conn) Write(p []byte) (int, error) { return c.s.Write(p) }

// SetReadDeadline sets the read deadline, as on a net.Conn. Moving a socket's deadline costs a
// lock and a move of the runtime's timer, and a proxy moves it several times a request, each time
// later (the wait for the next request, the request's head, the backend's answer, then none). So
// a later deadline than the socket's (or none) is only noted: the socket keeps the earlier one,
// and a read it ends (Read, and SyscallConn's Read) sets the one noted and goes on. An earlier
// deadline is set at once, and ends a read in progress (a deadline in the past aborts it).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.want = t
	if t.IsZero() || !c.armed.IsZero() && !t.Before(c.armed) {
		return nil
	}
	c.armed = t
	return c.TCPConn.SetReadDeadline(t)
}

// SetDeadline sets the write deadline and the read deadline (SetReadDeadline).
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.TCPConn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// early reports whether err, a read's, is a timeout of the socket's deadline when a later one (or
// none) was set since; if so it sets that one on the socket, and the read is to go on. Otherwise it
// gives the read's error: err, or why the later deadline could not be set (the connection was
// closed meanwhile: that, not the earlier deadline's timeout, is what ended the read).
func (c *Conn) early(err error) (retry bool, _ error) {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.armed.Equal(c.want) {
		return false, err
	}
	c.armed = c.want
	if serr := c.TCPConn.SetReadDeadline(c.want); serr != nil {
		return false, serr
	}
	return true, nil
}

// WriteTo copies the connection's bytes to w with Read (the *net.TCPConn's would read past the
// lazy deadline).
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// SyscallConn gives the socket's raw connection, whose Read, like the Conn's, goes on past a
// deadline earlier than the one last set.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return rawConn{RawConn: rc, c: c}, nil
}

type rawConn struct {
	syscall.RawConn
	c *Conn
}

func (r rawConn) Read(f func(fd uintptr) bool) error {
	for {
		err := r.RawConn.Read(f)
		if err == nil {
			return nil
		}
		if retry, err := r.c.early(err); !retry {
			return err
		}
	}
}
