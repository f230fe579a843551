package http1

import (
	"golang.org/x/sys/unix"
)

// ClientGone reports whether the client has closed or reset its connection while a request is
// served: the socket is polled for POLLRDHUP, with no wait and no read (TLS included: a close
// notification waiting to be read does not hide the end of the stream). A client that shuts down
// its sending side counts as gone, as for nginx. The proxy's backend exchange asks it (through the
// request's context, an upstream.ClientWatcher) while a backend is slow to answer.
func (c *conn) ClientGone() bool {
	rc := socketOf(c.rw)
	if rc == nil {
		return false
	}
	gone := false
	err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone || err != nil // closed here (Server.Close): no one is left to answer either
}
