//go:build unix

package upstream

import "syscall"

// canProbe reports whether idle connections can be checked with probeFd.
const canProbe = true

// probeFd is run through syscall.RawConn.Read on an idle connection's socket.
// Go keeps sockets in non-blocking mode, so a 1-byte read returns EAGAIN for a
// healthy idle connection, 0 (EOF) when the backend has closed it, and data
// when the backend sent something unsolicited (both make the conn unusable;
// consuming the byte is harmless because the conn is then discarded).
// It always returns true so RawConn.Read never waits.
func (c *conn) probeFd(fd uintptr) bool {
	n, err := syscall.Read(int(fd), c.probeB[:])
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		c.dead = false
	case err != nil, n >= 0:
		// n == 0: orderly close; n > 0: unsolicited data; err: reset etc.
		c.dead = true
	}
	return true
}
