package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/sockio"
)

// Defaults applied by NewPool to zero Options fields.
const (
	DefaultMaxIdleConns           = 64
	DefaultIdleTimeout            = 90 * time.Second
	DefaultDialTimeout            = 5 * time.Second
	DefaultExpectContinueTimeout  = 1 * time.Second
	DefaultMaxResponseHeaderBytes = 1 << 20
)

// Options configures a Pool. The zero value is usable; zero fields take the
// defaults listed with each field.
type Options struct {
	// MaxIdleConns is the number of idle connections kept per Pool
	// (default 64). A negative value disables keep-alive pooling: every
	// connection is closed after one exchange.
	MaxIdleConns int

	// IdleTimeout closes connections that have been idle longer than this
	// (default 90s). It should be shorter than the backend's own keep-alive
	// timeout so the gateway, not the backend, closes idle connections.
	IdleTimeout time.Duration

	// DialTimeout bounds connecting, including the TLS handshake (default 5s).
	DialTimeout time.Duration

	// TLSConfig, if non-nil, makes the Pool dial TLS (HTTPS backends). It is
	// cloned; ServerName defaults to the host part of the address and
	// NextProtos is forced to "http/1.1" because the Pool speaks HTTP/1.1 only.
	TLSConfig *tls.Config

	// ExpectContinueTimeout is how long Forward waits for a "100 Continue"
	// from the backend after sending the header of a request that carries
	// "Expect: 100-continue" and a body, before sending the body anyway
	// (default 1s).
	ExpectContinueTimeout time.Duration

	// MaxResponseHeaderBytes limits the size of the response header block
	// read from the backend (default 1 MiB).
	MaxResponseHeaderBytes int64

	// BodyReadTimeout, if positive, aborts a response body transfer when a
	// single read from the backend makes no progress for this long (like
	// nginx's proxy_read_timeout, but for the body only; the header wait is
	// bounded by Forward's timeout argument). Zero means no limit, which is
	// what long-lived streams (SSE) usually want.
	BodyReadTimeout time.Duration
}

// Pool holds keep-alive connections to one backend address ("host:port") and
// forwards requests over them. It is safe for concurrent use.
//
// Idle connections are kept in a LIFO list (the most recently used connection
// is reused first, so surplus connections age out), capped at MaxIdleConns.
// Connections idle for longer than IdleTimeout are closed on checkout and by a
// background timer, so an unused Pool does not hold sockets forever.
type Pool struct {
	addr string
	opts Options

	dialer net.Dialer

	mu         sync.Mutex
	idle       []*conn // LIFO; ordered by idleSince ascending
	closed     bool
	sweep      *time.Timer
	sweepArmed bool
}

// NewPool returns a Pool for the backend at addr ("host:port"). No connection
// is made until the first Forward.
func NewPool(addr string, opts Options) *Pool {
	if opts.MaxIdleConns == 0 {
		opts.MaxIdleConns = DefaultMaxIdleConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.ExpectContinueTimeout <= 0 {
		opts.ExpectContinueTimeout = DefaultExpectContinueTimeout
	}
	if opts.MaxResponseHeaderBytes <= 0 {
		opts.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	p := &Pool{
		addr: addr,
		opts: opts,
		dialer: net.Dialer{
			Timeout:   opts.DialTimeout,
			KeepAlive: 30 * time.Second,
		},
	}
	if opts.TLSConfig != nil {
		cfg := opts.TLSConfig.Clone()
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		cfg.NextProtos = []string{"http/1.1"}
		p.opts.TLSConfig = cfg
	}
	if opts.MaxIdleConns > 0 {
		p.idle = make([]*conn, 0, min(opts.MaxIdleConns, 16))
	}
	return p
}

// Addr returns the backend address the Pool connects to.
func (p *Pool) Addr() string { return p.addr }

// IdleConns returns the number of idle connections currently pooled.
func (p *Pool) IdleConns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Close closes all idle connections and makes later Forward and Upgrade calls
// fail with ErrDial (wrapping ErrPoolClosed). A connection in use by a running
// Forward call is not interrupted: the exchange completes and the connection
// is closed as soon as it is returned, instead of being pooled; a running
// Forward that needs a new connection (the stale-connection retry) fails with
// ErrPoolClosed rather than dialing. So no connection outlives a closed Pool's
// running Forward calls.
//
// Close does not end tunnels opened by Upgrade: their connections never
// belong to the pool, and they end when either side closes or when the
// context given to Upgrade is done.
//
// Close is idempotent and always returns nil.
func (p *Pool) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	if p.sweep != nil {
		p.sweep.Stop()
		p.sweepArmed = false
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
	return nil
}

// liveCheckAfter is how long a connection must have been idle before a
// request that could be retried checks it (see get).
const liveCheckAfter = 250 * time.Millisecond

// get returns a connection for one exchange: the most recently used healthy
// idle connection, or a freshly dialed one.
//
// Checking an idle connection costs a system call, so it is skipped for a
// request that Forward retries on a fresh connection anyway (retryable) when
// the connection was in use less than liveCheckAfter ago: under load every
// request takes a connection idle for microseconds, and a backend closing one
// then costs a retry, not an error. Left longer, a connection is checked for
// every request, since a backend may also have sent something unsolicited
// (say a 408) that would be read as the response.
func (p *Pool) get(ctx context.Context, retryable bool) (*conn, error) {
	for {
		c, idle, err := p.popIdle()
		if err != nil {
			return nil, err
		}
		if c == nil {
			return p.dial(ctx)
		}
		if retryable && idle < liveCheckAfter || c.alive() {
			return c, nil
		}
		// The backend closed it while it sat idle (or sent something
		// unsolicited, such as a 408): drop it and try the next one.
		c.close()
	}
}

// popIdle removes and returns the newest idle connection and how long it was
// idle, or nil if there is none. If the newest one has expired, every idle
// connection has (the list is ordered by idle time), so all are closed.
func (p *Pool) popIdle() (*conn, time.Duration, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, 0, wrap(p.addr, ErrDial, "", ErrPoolClosed)
	}
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil, 0, nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	if idle := time.Since(c.idleSince); idle < p.opts.IdleTimeout {
		p.mu.Unlock()
		return c, idle, nil
	}
	expired := append([]*conn(nil), p.idle...)
	clear(p.idle)
	p.idle = p.idle[:0]
	p.mu.Unlock()
	c.close()
	for _, e := range expired {
		e.close()
	}
	return nil, 0, nil
}

// put returns a healthy connection whose exchange completed cleanly to the
// idle list, or closes it if the list is full or the Pool is closed.
func (p *Pool) put(c *conn) {
	if p.opts.MaxIdleConns < 0 {
		c.close()
		return
	}
	c.reused = true
	c.idleSince = time.Now()
	// Nothing of the exchange stays with the idle connection: the response refers to the
	// outgoing request, which a proxy builds from its client's (and its pooled buffers).
	c.resp, c.body = http.Response{}, respBody{}
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.opts.MaxIdleConns {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.sweepArmed {
		p.sweepArmed = true
		if p.sweep == nil {
			p.sweep = time.AfterFunc(p.opts.IdleTimeout, p.sweepIdle)
		} else {
			p.sweep.Reset(p.opts.IdleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweepIdle runs on the sweep timer: it closes expired idle connections and
// re-arms the timer for the next expiry while idle connections remain.
func (p *Pool) sweepIdle() {
	now := time.Now()
	p.mu.Lock()
	if p.closed || !p.sweepArmed {
		p.mu.Unlock()
		return
	}
	k := 0
	for k < len(p.idle) && now.Sub(p.idle[k].idleSince) >= p.opts.IdleTimeout {
		k++
	}
	var expired []*conn
	if k > 0 {
		expired = append(expired, p.idle[:k]...)
		n := copy(p.idle, p.idle[k:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	if len(p.idle) > 0 {
		next := p.opts.IdleTimeout - now.Sub(p.idle[0].idleSince)
		p.sweep.Reset(max(next, 10*time.Millisecond))
	} else {
		p.sweepArmed = false
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// dial opens a new connection to the backend, unless the Pool is closed.
func (p *Pool) dial(ctx context.Context) (*conn, error) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil, wrap(p.addr, ErrDial, "", ErrPoolClosed)
	}
	nc, err := p.dialTCP(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, canceled(p.addr, ctx)
		}
		return nil, wrap(p.addr, ErrDial, "", err)
	}
	return newConn(nc, p), nil
}

// dialTCP connects, and for a TLS backend shakes hands, all within the dial timeout (as
// tls.Dialer). The socket is read and written with raw system calls (sockio), under TLS too.
func (p *Pool) dialTCP(ctx context.Context) (net.Conn, error) {
	if p.dialer.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.dialer.Timeout)
		defer cancel()
	}
	nc, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	nc = sockio.Wrap(nc)
	if p.opts.TLSConfig == nil {
		return nc, nil
	}
	tc := tls.Client(nc, p.opts.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}
