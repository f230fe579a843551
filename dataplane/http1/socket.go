package http1

import (
	"net"
	"time"
)

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

// closedSocket is what a SocketHolder holds once its parked socket is closed: the addresses are
// the socket's, for whoever asks after.
type closedSocket struct{ local, remote net.Addr }

func (closedSocket) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (closedSocket) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (closedSocket) Close() error                     { return nil }
func (s closedSocket) LocalAddr() net.Addr            { return s.local }
func (s closedSocket) RemoteAddr() net.Addr           { return s.remote }
func (closedSocket) SetDeadline(time.Time) error      { return net.ErrClosed }
func (closedSocket) SetReadDeadline(time.Time) error  { return net.ErrClosed }
func (closedSocket) SetWriteDeadline(time.Time) error { return net.ErrClosed }
