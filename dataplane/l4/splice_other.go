//go:build !linux

package l4

import "net"

const spliceSupported = false

// splice is not used where the kernel has no splice(2): copies go through buffers.
func (c *conn) splice(src, dst *net.TCPConn) (handled bool, err error) { return false, nil }
