//go:build !linux

package sockio

import "net"

// Wrap gives nc: raw reads and writes are Linux's only.
func Wrap(nc net.Conn) net.Conn { return nc }
