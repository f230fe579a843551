//go:build !linux

package http1

// ClientGone reports false: only Linux watches for a client that left.
func (c *conn) ClientGone() bool { return false }
