package http1

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// readWaiter waits for a connection to become readable without reading from it, so that an idle
// connection needs no buffer while it waits and no byte is read apart from the rest of the
// request. It works on connections that give their file descriptor (syscall.Conn); for others
// (TLS) the caller reads one byte instead.
type readWaiter struct {
	rc    syscall.RawConn
	woken bool // the poller reported the descriptor readable
	err   error
	peek  [1]byte
	fn    func(fd uintptr) bool
}

func newReadWaiter(c net.Conn) *readWaiter {
	rc := rawConnOf(c)
	if rc == nil {
		return nil
	}
	w := &readWaiter{rc: rc}
	w.fn = w.check
	return w
}

// rawConnOf gives c's own socket (not one under a TLS connection), nil if it has none.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// check is called by RawConn.Read: first to look for data (a non-blocking MSG_PEEK of one byte,
// which takes nothing; a raw system call, as in package sockio), then once more after the poller
// reports the descriptor readable.
func (w *readWaiter) check(fd uintptr) bool {
	if w.woken {
		return true
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&w.peek[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch {
	case e == syscall.EAGAIN:
		w.woken = true
		return false
	case e == syscall.EINTR:
		return false
	case e != 0:
		w.err = e
	case n == 0:
		w.err = io.EOF
	}
	return true
}

// wait blocks until the connection is readable, its read deadline passes or it is closed.
func (w *readWaiter) wait() error {
	w.woken, w.err = false, nil
	if err := w.rc.Read(w.fn); err != nil {
		return err
	}
	return w.err
}
