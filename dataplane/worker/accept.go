package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/http1"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
	"github.com/fleetgate/fleetgate/dataplane/sockio"
)

// acceptor owns an HTTP(S) port's socket. One goroutine accepts connections, no more than the
// connection limit at once, and hands each to the port's current server through a handoff
// listener. Replacing the server (new limits, another protocol) swaps the handoff: the socket stays
// open, so no client is refused while the old server finishes its connections.
//
// At the connection limit the acceptor stops accepting (as HAProxy's maxconn and Go's
// netutil.LimitListener do, rather than accepting and closing at once): new connections wait in the
// kernel's accept queue, and are served as soon as a connection closes; once that queue is full the
// kernel drops further connection attempts and clients retry.
//
// Each connection is wrapped so that closing it frees its slot. On Https ports the acceptor does
// the TLS handshake itself (in a goroutine per connection, bounded by the read-header timeout), then
// hands h2 connections to the server's HTTP/2 listener and the others to its HTTP/1 one.
type acceptor struct {
	ln   net.Listener
	port int32
	log  *slog.Logger

	max  atomic.Int64 // 0: no limit
	open atomic.Int64
	slot chan struct{} // a connection closed, or the limit changed

	ctx    context.Context // canceled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and handshakes

	mu       sync.Mutex
	cur      *handoff
	lastWarn time.Time
}

func newAcceptor(ln net.Listener, port int32, log *slog.Logger) *acceptor {
	ctx, cancel := context.WithCancel(context.Background())
	return &acceptor{ln: ln, port: port, log: log, slot: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

// start runs the accept loop.
func (a *acceptor) start() {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.run()
	}()
}

// setMax changes the connection limit (0: none); it applies to the next connection accepted.
func (a *acceptor) setMax(n int) {
	a.max.Store(int64(n))
	a.freed()
}

// handoff makes a new handoff listener the current one, for a new server, and returns it with the
// one it replaces (nil if none). tlsConfig is set on Https ports; handshakeTimeout bounds the TLS
// handshake.
func (a *acceptor) handoff(tlsConfig *tls.Config, handshakeTimeout time.Duration) (cur, prev *handoff) {
	h := &handoff{a: a, conns: make(chan net.Conn), h2conns: make(chan net.Conn), closed: make(chan struct{}),
		tls: tlsConfig, handshakeTimeout: handshakeTimeout}
	a.mu.Lock()
	prev, a.cur = a.cur, h
	a.mu.Unlock()
	return h, prev
}

func (a *acceptor) current() *handoff {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// close closes the socket: no more connections are accepted, handshakes in progress are abandoned
// and every handoff listener reports net.ErrClosed. Connections already handed over are the
// servers' to finish.
func (a *acceptor) close() {
	a.cancel()
	a.ln.Close()
	a.wg.Wait()
}

func (a *acceptor) run() {
	var pause time.Duration
	for a.waitSlot() {
		raw, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || a.ctx.Err() != nil {
				return
			}
			if !retryableAccept(err) {
				a.log.Error("listener stopped accepting", "port", a.port, "err", err)
				a.cancel()
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			a.log.Warn("accept failed; retrying", "port", a.port, "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-a.ctx.Done():
				return
			}
			continue
		}
		pause = 0
		a.open.Add(1)
		a.dispatch(&countedConn{Conn: sockio.Wrap(raw), a: a})
	}
}

// waitSlot waits until a connection may be accepted; false once the acceptor is closed.
func (a *acceptor) waitSlot() bool {
	for {
		if m := a.max.Load(); m <= 0 || a.open.Load() < m {
			return a.ctx.Err() == nil
		}
		a.warnFull()
		select {
		case <-a.slot:
		case <-a.ctx.Done():
			return false
		}
	}
}

func (a *acceptor) freed() {
	select {
	case a.slot <- struct{}{}:
	default:
	}
}

func (a *acceptor) warnFull() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now(); now.Sub(a.lastWarn) >= time.Minute {
		a.lastWarn = now
		a.log.Warn("listener at its connection limit; new connections wait to be accepted",
			"port", a.port, "maxConnectionsPerListener", a.max.Load())
	}
}

// dispatch hands a new connection to the current server, through a TLS handshake on Https ports.
func (a *acceptor) dispatch(c net.Conn) {
	for {
		h := a.current()
		if h == nil || a.ctx.Err() != nil {
			c.Close()
			return
		}
		if h.tls != nil {
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.handshake(c, h)
			}()
			return
		}
		if h.deliver(c, false) {
			return
		}
		// That server stopped taking connections: the connection is untouched. Give it to the
		// server replacing it, waiting (briefly) for it to be installed; only a closing port drops it.
		for a.current() == h && a.ctx.Err() == nil {
			select {
			case <-a.ctx.Done():
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// handshake does the TLS handshake of an Https connection, and hands it to the server it was
// accepted for.
func (a *acceptor) handshake(c net.Conn, h *handoff) {
	ctx := a.ctx
	if h.handshakeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.handshakeTimeout)
		defer cancel()
	}
	tc := tls.Server(c, h.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader) {
			// As net/http does: a plain HTTP request sent to an Https port gets a plain answer.
			rhe.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(rhe.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		a.log.Debug("TLS handshake failed", "port", a.port, "client", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	if !h.deliver(tc, tc.ConnectionState().NegotiatedProtocol == "h2") {
		c.Close()
	}
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// retryableAccept tells an accept failure that may pass (resource exhaustion, an aborted
// connection) from a broken listener.
func retryableAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handoff is the net.Listener that a port's HTTP/1 server serves: the acceptor hands it
// connections. Connections that negotiated h2 by ALPN go to another listener, H2. Closing it (the
// server's Shutdown does) leaves the socket open for the next server.
type handoff struct {
	a                *acceptor
	conns, h2conns   chan net.Conn
	closed           chan struct{}
	once             sync.Once
	tls              *tls.Config
	handshakeTimeout time.Duration
}

// deliver hands c to the server (its h2 listener if h2); false if this handoff was closed (or
// the acceptor) first.
func (h *handoff) deliver(c net.Conn, h2 bool) bool {
	ch := h.conns
	if h2 {
		ch = h.h2conns
	}
	select {
	case ch <- c:
		return true
	case <-h.closed:
		return false
	case <-h.a.ctx.Done():
		return false
	}
}

func (h *handoff) Accept() (net.Conn, error) { return h.accept(h.conns) }

func (h *handoff) accept(conns chan net.Conn) (net.Conn, error) {
	select {
	case <-h.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-conns:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	case <-h.a.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.closed) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.a.ln.Addr() }

// H2 is the listener of the connections that negotiated h2.
func (h *handoff) H2() net.Listener { return h2Listener{h} }

type h2Listener struct{ h *handoff }

func (l h2Listener) Accept() (net.Conn, error) { return l.h.accept(l.h.h2conns) }
func (l h2Listener) Close() error              { return l.h.Close() }
func (l h2Listener) Addr() net.Addr            { return l.h.Addr() }

// countedConn holds one of the acceptor's connection slots until it is closed, and the
// connection's dedicated backend connections (no map by connection needed to find them).
type countedConn struct {
	net.Conn
	a         *acceptor
	once      sync.Once
	dedicated proxy.ClientConn
}

// countedOf finds the countedConn under c (a TLS connection's), nil if there is none.
func countedOf(c net.Conn) *countedConn {
	for {
		switch x := c.(type) {
		case *countedConn:
			return x
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = x.NetConn()
		default:
			return nil
		}
	}
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.a.open.Add(-1)
		c.a.freed()
	})
	return err
}

// Socket and SetSocket make the connection an http1.SocketHolder: while it is parked (idle), the
// HTTP/1 server takes its socket out of Go's poller and gives it back as a new net.Conn when it
// wakes. The server serves the connection from the moment it is handed over, so nothing else
// reads or writes Conn meanwhile.
var _ http1.SocketHolder = (*countedConn)(nil)

func (c *countedConn) Socket() net.Conn     { return c.Conn }
func (c *countedConn) SetSocket(s net.Conn) { c.Conn = sockio.Wrap(s) }

// SyscallConn gives the socket underneath, so that the HTTP/1 server can wait for an idle
// connection's next request without a buffer.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite half-closes the connection (upgrade tunnels pass a client's half-close on).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
