package proxy

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/fleetgate/fleetgate/dataplane/upstream"
)

// clientConn is one client connection's own backend connections, for settings with
// dedicatedBackendConnection: never shared with another client, closed when the client's closes.
type clientConn struct {
	mu    sync.Mutex
	pools map[string]*upstream.Pool // by server address
	done  bool
}

type clientConnKey struct{}

func clientConnOf(ctx context.Context) *clientConn {
	cc, _ := ctx.Value(clientConnKey{}).(*clientConn)
	return cc
}

// pool returns the client connection's own pool to a server; nil once the client connection closed.
func (cc *clientConn) pool(addr string, opts upstream.Options) *upstream.Pool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.done {
		return nil
	}
	p := cc.pools[addr]
	if p == nil {
		opts.MaxIdleConns = 1
		p = upstream.NewPool(addr, opts)
		if cc.pools == nil {
			cc.pools = map[string]*upstream.Pool{}
		}
		cc.pools[addr] = p
	}
	return p
}

func (cc *clientConn) close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.done = true
	for _, p := range cc.pools {
		p.Close()
	}
	cc.pools = nil
}

// ConnHooks tracks client connections for dedicated backend connections: set ConnContext and
// ConnState of every listener's server to these.
type ConnHooks struct {
	conns sync.Map // net.Conn -> *clientConn
}

// ConnContext gives each client connection its own (lazily filled) set of backend connections.
func (h *ConnHooks) ConnContext(ctx context.Context, c net.Conn) context.Context {
	cc := &clientConn{} // pools made on first use: most connections never need one
	h.conns.Store(c, cc)
	return context.WithValue(ctx, clientConnKey{}, cc)
}

// ConnState closes a client connection's backend connections when it closes or is hijacked.
func (h *ConnHooks) ConnState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	if v, ok := h.conns.LoadAndDelete(c); ok {
		v.(*clientConn).close()
	}
}
