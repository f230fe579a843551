package http1

import "net"

// A SocketHolder is a connection (or the network connection under a TLS one) that wraps a socket
// the server may replace. While a connection is parked (idle, see Server), the server closes the
// holder's socket, keeping a duplicate of its descriptor outside Go's network poller, and gives
// the holder a new net.Conn for the same socket when the connection wakes: Go's poll descriptor
// and the net package's objects are most of what an idle connection still costs. If the socket
// cannot be given back, or the connection's idle timeout passed while parked, the holder gets a
// closed one.
//
// The server calls Socket and SetSocket only while no goroutine uses the connection: its owner
// must leave it to the server (including Close) while the server serves it.
type SocketHolder interface {
	Socket() net.Conn
	SetSocket(net.Conn)
}
