package proxy

import (
	"context"
	"sync"

	"github.com/fleetgate/fleetgate/dataplane/upstream"
)

// ClientConn is one client connection's own backend connections, for settings with
// dedicatedBackendConnection: never shared with another client, closed when the client's closes.
// The zero value is ready; its pools are made on first use (most connections never need one).
// A server gives a connection's requests its ClientConn with WithClientConn and calls Close when
// the connection closes or is hijacked (the worker keeps it in its connection).
type ClientConn struct {
	mu    sync.Mutex
	pools map[string]*upstream.Pool // by server address
	done  bool
}

type clientConnKey struct{}

// WithClientConn makes cc the client connection of the requests under ctx.
func WithClientConn(ctx context.Context, cc *ClientConn) context.Context {
	return context.WithValue(ctx, clientConnKey{}, cc)
}

func clientConnOf(ctx context.Context) *ClientConn {
	cc, _ := ctx.Value(clientConnKey{}).(*ClientConn)
	return cc
}

// pool returns the client connection's own pool to a server; nil once the client connection closed.
func (cc *ClientConn) pool(addr string, opts upstream.Options) *upstream.Pool {
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

// Close closes the backend connections, and makes later requests use the shared pools.
func (cc *ClientConn) Close() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.done = true
	for _, p := range cc.pools {
		p.Close()
	}
	cc.pools = nil
}
