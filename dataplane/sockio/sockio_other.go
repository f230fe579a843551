//go:build !linux

package sockio

import "net"

// Socket is the raw reader and writer of one connection's socket (Linux only).
type Socket struct{}

// New gives nil: use nc.
func New(nc net.Conn) *Socket { return nil }

// Read is never called: New gives no Socket.
func (*Socket) Read(p []byte) (int, error) { panic("sockio: no Socket on this system") }

// Write is never called: New gives no Socket.
func (*Socket) Write(p []byte) (int, error) { panic("sockio: no Socket on this system") }

// Wrap gives nc.
func Wrap(nc net.Conn) net.Conn { return nc }
