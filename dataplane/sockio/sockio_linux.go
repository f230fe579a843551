package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
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

// Conn is a TCP connection whose Read and Write are raw system calls (see the package comment); the rest is the *net.TCPConn's
// (deadlines, Close, CloseWrite, SyscallConn, ReadFrom).
type Conn struct {
	*net.TCPConn
	s *socket
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

func (c *Conn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.s.Write(p) }
