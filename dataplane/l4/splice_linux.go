package l4

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

const spliceSupported = true

// splice copies src to dst (both plain TCP) with splice(2): dst.ReadFrom(src) moves the bytes
// socket -> pipe -> socket inside the kernel, with no copy through user space and no buffer held by
// an idle connection.
//
// ReadFrom runs until EOF or an error, so it cannot stamp the time of each chunk for the idle timeout;
// instead the copy alternates between two modes:
//
//   - quiet: wait, without reading, for src to become readable (a MSG_PEEK poll through the runtime
//     poller) with the read deadline at the connection's last activity plus the idle timeout. The
//     deadline passing means idle for the whole timeout, unless the other direction moved bytes
//     meanwhile (then the wait resumes until that activity plus the timeout). src becoming readable
//     is activity, stamped exactly.
//   - burst: splice with the read deadline a short slice ahead (idle/10, 50 ms to 1 s). Each slice
//     that moved bytes stamps activity and starts another slice; a slice that moved nothing returns
//     to the quiet mode.
//
// So activity is known to within one slice, and a quiet connection ends between its idle timeout
// and the timeout plus one slice after its last byte; a busy one never does. The cost is one extra
// poll per burst and one deadline update per slice of a continuous transfer. A quiet connection
// holds no buffer at all; a direction in a burst holds one of the runtime's pooled pipes (two file
// descriptors) until its slice ends.
//
// handled is false when nothing was done and the caller should copy by itself.
func (c *conn) splice(src, dst *net.TCPConn) (handled bool, err error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return false, nil
	}
	slice := min(max(c.idle/10, 50*time.Millisecond), time.Second)
	var peek [1]byte
	ready := func(fd uintptr) bool {
		_, _, errno := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK // data, EOF or an error: readable
	}
	for {
		// Quiet: wait for the next byte (or EOF), or the idle deadline.
		if err := src.SetReadDeadline(c.idleDeadline()); err != nil {
			return true, err
		}
		if err := rc.Read(ready); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return true, err
			}
			if c.idleExpired() {
				return true, errIdle
			}
			continue
		}
		c.touch()
		// Burst: splice slice by slice while bytes flow.
		for {
			if err := src.SetReadDeadline(time.Now().Add(slice)); err != nil {
				return true, err
			}
			n, err := dst.ReadFrom(src)
			if n > 0 {
				c.touch()
			}
			if err == nil { // EOF
				dst.CloseWrite()
				return true, nil
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return true, err
			}
			if n == 0 {
				break
			}
		}
	}
}
