// Package l4 is the data plane's layer-4 path: Tcp and Tls listeners (TLS terminated here, the
// listener and its certificate picked by SNI) forwarding each client connection to one server of the
// rule's pool, over plain TCP or re-encrypted, verified TLS.
//
// Per connection: the next usable server round-robin (probe health, not draining) is dialled; if that
// fails the next usable one is, each at most once; with none left the client connection is closed.
// Bytes are copied both ways, half-closes passed on, until both directions ended, an error, or the
// settings' idle timeout (no byte either way for that long) ends the connection.
//
// Configurations are swapped in whole through an atomic pointer; connections keep going across
// applies. Open connections are counted per server (pool, settings, address) across
// configurations, which is what draining waits on and cuts.
package l4

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/drain"
	"github.com/fleetgate/fleetgate/dataplane/health"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const (
	// dialTimeout bounds connecting to a server: TCP, and the TLS handshake for Tls settings.
	dialTimeout = 5 * time.Second
	// handshakeTimeout bounds a client's TLS handshake on a Tls listener.
	handshakeTimeout = 10 * time.Second
)

// HealthLookup finds a (settings, server) pair's health state machine; nil: not probed, always usable.
type HealthLookup func(health.Key) *health.Tracker

// Proxy serves the layer-4 listeners of one gateway.
type Proxy struct {
	log   *slog.Logger
	state atomic.Pointer[state]

	// pickMu orders choosing a server (and counting the connection against it) with publishing a
	// configuration: a connection is either counted before a drain starts, so the drain waits for it,
	// or it chooses from the configuration that has the server removed or draining.
	pickMu sync.RWMutex

	mu     sync.Mutex // serializes Apply and drain bookkeeping
	stats  map[serverID]*serverStats
	drains *drain.Book[struct{}]

	connMu   sync.Mutex
	conns    map[*conn]struct{} // every client connection being handled
	shutdown bool               // Shutdown began: connections accepted from now on are closed
	handlers sync.WaitGroup     // connection handlers

	dialer    net.Dialer
	splice    bool // splice plain TCP both ways where the kernel can; tests turn it off to compare
	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New returns a proxy with no configuration: every connection is closed at once until Apply.
// Close stops its drain bookkeeping.
func New(log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		log:    log,
		stats:  map[serverID]*serverStats{},
		drains: drain.NewBook[struct{}](log, "layer-4 "),
		conns:  map[*conn]struct{}{},
		stop:   cancel,
		done:   make(chan struct{}),
		splice: spliceSupported,
	}
	p.state.Store(&state{ports: map[int32]*portRoutes{}, servers: map[serverID]*server{}})
	go func() {
		defer close(p.done)
		p.drains.Run(ctx, &p.mu)
	}()
	return p
}

// Close stops the proxy's background work. It does not close connections (see Shutdown).
func (p *Proxy) Close() {
	p.closeOnce.Do(p.stop)
	<-p.done
}

// Version is the configuration version being served.
func (p *Proxy) Version() int64 { return p.state.Load().version }

// Apply compiles the gateway's layer-4 listeners, settings and rules and makes them current for new
// connections; connections already open keep going. Servers that left their pool start draining
// (no new connections; open ones continue until they close or the drain deadline — 30 s — passes,
// then they are closed); servers named by an operator's drain (drains) take no new connections
// either, with deadline started_at + timeout_seconds (0: 30 s); a server that comes back cancels
// its drain.
func (p *Proxy) Apply(version int64, gw *fgv1.Gateway, healthOf HealthLookup, drains []*fgv1.AdminDrain) error {
	next, err := compile(version, gw, healthOf)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, bs := range next.sets {
		for _, s := range bs.servers {
			if s.stats = p.stats[s.id]; s.stats == nil {
				s.stats = newServerStats()
				p.stats[s.id] = s.stats
			}
		}
	}
	p.updateDrains(p.state.Load(), next, drains, time.Now())
	// A server listed twice in a pool is two *server with one id: both take the drain.
	for _, bs := range next.sets {
		for _, s := range bs.servers {
			s.draining = next.servers[s.id].draining
		}
	}
	p.pickMu.Lock()
	p.state.Store(next)
	// Forget the stats of servers gone for good: not configured, not draining, no connection. No
	// connection can be counted against them any more (pickMu).
	for id, s := range p.stats {
		if next.servers[id] == nil && p.drains.Drains[id] == nil && s.Active() == 0 {
			delete(p.stats, id)
		}
	}
	p.pickMu.Unlock()
	p.drains.Notify()
	return nil
}

// Serve accepts connections on ln for the layer-4 listener(s) of port until ln is closed (then it
// returns nil). Temporary accept failures (out of file descriptors) are retried after a pause.
func (p *Proxy) Serve(ln net.Listener, port int32) error {
	var pause time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !retryableAccept(err) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			p.log.Warn("layer-4 accept failed; retrying", "port", port, "err", err, "pause", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		c := &conn{clientRaw: raw}
		if !p.track(c) {
			raw.Close()
			continue
		}
		go p.serveConn(c, port)
	}
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

// track registers a connection (and its handler); false once Shutdown began.
func (p *Proxy) track(c *conn) bool {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.shutdown {
		return false
	}
	p.conns[c] = struct{}{}
	p.handlers.Add(1)
	return true
}

func (p *Proxy) untrack(c *conn) {
	p.connMu.Lock()
	delete(p.conns, c)
	p.connMu.Unlock()
	p.handlers.Done()
}

// Shutdown stops nothing by itself (the caller closes listeners); it waits until every open
// connection ended or ctx is done, then closes the rest. Connections accepted once it began are
// closed at once.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.connMu.Lock()
	p.shutdown = true
	p.connMu.Unlock()
	pause := 5 * time.Millisecond
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		p.connMu.Lock()
		n := len(p.conns)
		p.connMu.Unlock()
		if n == 0 {
			p.handlers.Wait()
			return nil
		}
		select {
		case <-ctx.Done():
			p.connMu.Lock()
			rest := make([]*conn, 0, len(p.conns))
			for c := range p.conns {
				rest = append(rest, c)
			}
			p.connMu.Unlock()
			for _, c := range rest {
				c.abort()
			}
			p.handlers.Wait()
			return ctx.Err()
		case <-t.C:
			pause = min(2*pause, 200*time.Millisecond)
			t.Reset(pause)
		}
	}
}

// recoverPanic logs a panic of a connection's goroutine and closes the connection.
func (p *Proxy) recoverPanic(c *conn, where string) {
	if v := recover(); v != nil {
		p.log.Error("panic in layer-4 connection handler", "where", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		c.abort()
	}
}

// serveConn handles one client connection to its end.
func (p *Proxy) serveConn(c *conn, port int32) {
	defer p.untrack(c)
	defer func() {
		c.abort() // both sides closed, whatever happened
		if c.stats != nil {
			c.stats.remove(c)
		}
	}()
	defer p.recoverPanic(c, "serve")

	client := side{conn: c.clientRaw, raw: c.clientRaw}
	pr := p.state.Load().ports[port]
	if pr == nil {
		p.log.Debug("no layer-4 listener on port; connection closed", "port", port)
		return
	}
	isTLS := pr.tlsConfig != nil
	serverName := ""
	if isTLS {
		c.clientRaw.SetDeadline(time.Now().Add(handshakeTimeout))
		tc := tls.Server(c.clientRaw, pr.tlsConfig)
		if err := tc.Handshake(); err != nil {
			p.log.Debug("layer-4 client TLS handshake failed", "port", port, "client", c.clientRaw.RemoteAddr().String(), "err", err)
			return
		}
		c.clientRaw.SetDeadline(time.Time{})
		serverName = tc.ConnectionState().ServerName
		client.conn = tc
	}
	backend, bs := p.connect(c, port, isTLS, serverName)
	if bs == nil {
		return
	}
	c.relay(p, client, backend, bs.idle)
}

// connect counts the connection against the next usable server of its listener's rule and dials
// it, falling back on the next usable servers (each tried once) when dialling fails. It returns the
// backend side and its set, or a nil set when no server could be reached.
func (p *Proxy) connect(c *conn, port int32, isTLS bool, serverName string) (side, *backendSet) {
	var tried []string
	for {
		p.pickMu.RLock()
		var (
			l   *listener
			srv *server
		)
		if pr := p.state.Load().ports[port]; pr != nil {
			switch {
			case isTLS && pr.tlsConfig != nil:
				l = pr.byServerName(serverName)
			case !isTLS:
				l = pr.tcp
			}
		}
		if l != nil && l.target != nil {
			if srv = l.target.pick(tried); srv != nil {
				c.stats = srv.stats
				srv.stats.add(c)
			}
		}
		p.pickMu.RUnlock()
		switch {
		case l == nil:
			p.log.Debug("no layer-4 listener for connection; closed", "port", port, "sni", serverName)
			return side{}, nil
		case l.target == nil:
			p.log.Debug("no routing rule serves layer-4 listener; connection closed", "listener", l.name)
			return side{}, nil
		case srv == nil:
			p.log.Debug("no usable backend server; connection closed", "listener", l.name, "pool", l.target.pool, "tried", len(tried))
			return side{}, nil
		}
		b, err := p.dial(c, srv)
		if err == nil {
			return b, l.target
		}
		srv.stats.remove(c)
		c.stats = nil
		if c.isAborted() {
			return side{}, nil
		}
		p.log.Debug("layer-4 backend dial failed; trying the next server", "pool", l.target.pool, "server", srv.addr, "err", err)
		tried = append(tried, srv.addr)
	}
}

// dial connects to a server within dialTimeout: TCP, then TLS for Tls settings.
func (p *Proxy) dial(c *conn, srv *server) (side, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	if !c.setDialCancel(cancel) {
		return side{}, errAborted
	}
	raw, err := p.dialer.DialContext(ctx, "tcp", srv.addr)
	c.setDialCancel(nil)
	if err != nil {
		return side{}, err
	}
	if !c.setBackend(raw) {
		return side{}, errAborted
	}
	b := side{conn: raw, raw: raw}
	if srv.tls == nil {
		return b, nil
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	tc := tls.Client(raw, srv.tls)
	if err := tc.Handshake(); err != nil {
		c.mu.Lock()
		c.backendRaw = nil
		c.mu.Unlock()
		raw.Close()
		return side{}, fmt.Errorf("TLS handshake with %s: %w", srv.addr, err)
	}
	raw.SetDeadline(time.Time{})
	b.conn = tc
	return b, nil
}

var errAborted = errors.New("connection closed")
