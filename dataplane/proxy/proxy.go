// Package proxy is the data plane's HTTP request path: it routes each request with the current
// routing table, picks a usable server of the target pool (round-robin, or the one an affinity cookie
// names), rewrites the request for the backend (headers, Host, path override), and forwards it over
// a pooled HTTP/1.1 connection. Configurations are swapped in whole through an atomic pointer; the
// request path takes no lock.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/drain"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/metrics"
	"github.com/fleetgate/fleetgate/dataplane/route"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Proxy forwards requests for one gateway.
type Proxy struct {
	log   *slog.Logger
	state atomic.Pointer[state]

	mu     sync.Mutex                  // serializes Apply, Clear and drain bookkeeping
	conns  map[string]io.Closer        // connection pools by tlsOptions.key, kept across configs
	stats  map[health.Key]*serverStats // connection counts, kept across configs
	drains *drain.Book[*server]

	metrics   *metrics.Metrics
	accessLog *slog.Logger

	stop context.CancelFunc
	done chan struct{}
}

// state is one applied configuration, immutable.
type state struct {
	version int64
	maxBody int64 // largest request body, bytes; 0: unlimited
	table   *route.Table
	targets []*backendSet        // indexed by route.Target.Pair
	certs   map[int32]*certStore // Https listener certificates by port
}

// HealthLookup finds the health state machine of a (settings, server) pair; nil if it is not probed.
type HealthLookup func(health.Key) *health.Tracker

// New returns a proxy with no configuration: every request gets 404 until Apply. Close stops its
// drain bookkeeping.
func New(log *slog.Logger) *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		log:    log,
		conns:  map[string]io.Closer{},
		stats:  map[health.Key]*serverStats{},
		drains: drain.NewBook[*server](log, ""),
		stop:   cancel,
		done:   make(chan struct{}),
	}
	p.state.Store(&state{table: &route.Table{}})
	go func() {
		defer close(p.done)
		p.drains.Run(ctx, &p.mu)
	}()
	return p
}

// Observe turns on request metrics and, with accessLog set, one access log line per request. Call it
// before serving.
func (p *Proxy) Observe(m *metrics.Metrics, accessLog *slog.Logger) {
	p.metrics, p.accessLog = m, accessLog
}

// Close stops the proxy's background work.
func (p *Proxy) Close() {
	p.stop()
	<-p.done
}

// Version is the configuration version being served.
func (p *Proxy) Version() int64 { return p.state.Load().version }

// Apply compiles a validated gateway and makes it current. Requests in flight finish with the
// configuration they started with; connections to servers that remain are kept.
// healthOf gives each server's state machine, read on every request; nil treats every server as
// healthy. affinityKey keys the affinity cookies.
// drains are the operator's drains to apply.
func (p *Proxy) Apply(version int64, gw *fgv1.Gateway, healthOf HealthLookup, affinityKey []byte, drains []*fgv1.AdminDrain) (*route.Table, error) {
	table, err := route.Compile(gw)
	if err != nil {
		return nil, err
	}
	certs, err := compileCerts(gw)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := &builder{gw: gw, old: p.conns, used: map[string]io.Closer{}, healthOf: healthOf, affinityKey: affinityKey, stats: p.stats}
	st := &state{version: version, maxBody: config.LimitsOf(gw).MaxRequestBody, table: table, certs: certs}
	for _, pair := range table.Pairs() {
		bs, err := b.backendSet(pair)
		if err != nil {
			b.closeNew()
			return nil, err
		}
		st.targets = append(st.targets, bs)
	}
	p.updateDrains(p.state.Load(), st, drains, time.Now())
	for _, d := range p.drains.Drains {
		if !d.Done {
			b.used[d.Server.connKey] = d.Server.conns // a draining server keeps its connections
		}
	}
	p.state.Store(st)
	p.drains.Notify()
	for key, c := range p.conns {
		if b.used[key] == nil {
			c.Close() // idle connections now; busy ones as their requests finish
		}
	}
	p.conns = b.used
	return table, nil
}

// Clear stops routing: every request gets 404.
func (p *Proxy) Clear(version int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := &state{version: version, table: &route.Table{}}
	p.updateDrains(p.state.Load(), next, nil, time.Now())
	p.state.Store(next)
	p.drains.Notify()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = map[string]io.Closer{}
}

// Handler serves the listeners on one port.
func (p *Proxy) Handler(port int32) http.Handler { return &portHandler{p: p, port: port} }

// TLSConfig is the server TLS configuration of an Https port: the certificate is chosen per
// connection by SNI from the current configuration. http2 adds "h2" to ALPN.
func (p *Proxy) TLSConfig(port int32, http2 bool) *tls.Config {
	protos := []string{"http/1.1"}
	if http2 {
		protos = []string{"h2", "http/1.1"}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cs := p.state.Load().certs[port]
			if cs == nil {
				return nil, fmt.Errorf("no certificate on port %d", port)
			}
			return cs.pick(hello.ServerName)
		},
	}
}

type portHandler struct {
	p    *Proxy
	port int32
}

func (h *portHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	if p.metrics == nil && p.accessLog == nil {
		h.serve(w, r, &exchange{})
		return
	}
	var ex exchange
	start := time.Now()
	method, uri, host, client := r.Method, r.RequestURI, r.Host, r.RemoteAddr
	var cw *countingWriter
	if p.accessLog != nil {
		cw = &countingWriter{ResponseWriter: w}
		w = cw
	}
	defer func() {
		p.metrics.Request(ex.listener, ex.rule, ex.pool, ex.server, ex.status, ex.upstream)
		if cw != nil {
			p.logAccess(r.Context(), &ex, method, uri, host, client, cw.bytes, time.Since(start))
		}
	}()
	h.serve(w, r, &ex)
}

// serve routes and forwards one request, and notes in ex what it did.
func (h *portHandler) serve(w http.ResponseWriter, r *http.Request, ex *exchange) {
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		ex.status = http.StatusOK
		serveOptionsStar(w, r)
		return
	}
	st := h.p.state.Load()
	t := st.table.Match(h.port, r.Host, r.URL.Path)
	if t == nil {
		ex.status = http.StatusNotFound
		http.Error(w, "404 no routing rule matches this request", http.StatusNotFound)
		return
	}
	bs := st.targets[t.Pair]
	ex.listener, ex.rule, ex.pool = t.Listener, t.Rule, bs.pool
	if r.ContentLength == 0 {
		// A server request of length 0 has no body, but HTTP/2 gives one that ends at once: it
		// goes on without, as net/http's ReverseProxy does, or a GET would reach the backend
		// chunked (with an empty body) and lose its retry on a stale backend connection.
		r.Body = http.NoBody
	}
	if max := st.maxBody; max > 0 {
		if r.ContentLength > max {
			ex.status = http.StatusRequestEntityTooLarge
			tooLarge(w, r, max)
			return
		}
		if r.ContentLength < 0 {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
	}
	srv, fresh := bs.choose(r)
	if srv == nil {
		ex.status = http.StatusBadGateway
		http.Error(w, "502 Bad Gateway: no healthy backend server is available in pool "+bs.pool, http.StatusBadGateway)
		return
	}
	ex.server = srv.addr
	if fresh && bs.affinity {
		// A new or re-routed client: name the server in both cookies.
		w.Header()["Set-Cookie"] = srv.setCookies
	}
	upgrade := upgradeOf(r)
	prepareOutbound(r, r.TLS != nil)
	if bs.hostName != "" {
		r.Host = bs.hostName
	}
	if bs.path != "" {
		r.URL.Path = route.Rewrite(t, r.URL.Path, bs.path)
		r.URL.RawPath = ""
	}
	var (
		status int
		err    error
		tried  [maxConnectAttempts]*server
	)
	upstreamStart := time.Now()
	for attempt := 0; ; attempt++ {
		tried[attempt] = srv
		if bs.hostFromServer {
			r.Host = srv.host
		}
		status, upgrade, err = h.forward(w, r, bs, srv, upgrade)
		// A server that could not be connected to has seen nothing of the request, whatever its
		// method: try another (nginx's proxy_next_upstream error), so that a server that just went
		// down costs no request before its probe notices.
		if status != 0 || !errors.Is(err, upstream.ErrDial) || attempt+1 == maxConnectAttempts || r.Context().Err() != nil {
			break
		}
		next := bs.pickExcept(tried[:attempt+1])
		if next == nil {
			break
		}
		h.p.log.Debug("could not connect; trying another server", "server", srv.addr, "next", next.addr, "err", err)
		srv = next
		ex.server = srv.addr
		if bs.affinity {
			w.Header()["Set-Cookie"] = srv.setCookies
		}
	}
	ex.upstream = time.Since(upstreamStart)
	ex.status = status
	if err == nil {
		return
	}
	if status != 0 {
		// The response had begun; all that is left is to cut it short.
		h.p.log.Debug("response aborted", "server", srv.addr, "err", err)
		if upgrade != "" {
			return
		}
		panic(http.ErrAbortHandler)
	}
	ex.status = http.StatusBadGateway
	switch {
	case errors.Is(err, upstream.ErrTimeout):
		ex.status = http.StatusGatewayTimeout
		http.Error(w, "504 Gateway Timeout: backend server "+srv.addr+" did not answer in time", http.StatusGatewayTimeout)
	case r.Context().Err() == nil && errors.Is(err, errDrainCut):
		http.Error(w, "502 Bad Gateway: backend server "+srv.addr+" was drained", http.StatusBadGateway)
	case errors.Is(err, upstream.ErrCanceled), errors.Is(err, context.Canceled):
		ex.status = 0 // the client went away
		if r.ProtoMajor == 1 {
			// Nothing is sent (nginx's 499): the HTTP/1 server would answer 200 for a handler
			// that wrote nothing, and a client that only shut down its sending side would read it.
			panic(http.ErrAbortHandler)
		}
	case errors.As(err, new(*http.MaxBytesError)):
		// A body of unknown length grew past the limit: the backend connection was dropped before
		// the body's end, so the backend never got a complete request.
		ex.status = http.StatusRequestEntityTooLarge
		tooLarge(w, r, st.maxBody)
	case errors.Is(err, upstream.ErrRequestBody):
		ex.status = http.StatusBadRequest
		http.Error(w, "400 Bad Request: the request body could not be read", http.StatusBadRequest)
	case errors.Is(err, upstream.ErrInvalidRequest):
		h.p.log.Warn("request not forwardable", "server", srv.addr, "err", err)
		ex.status = http.StatusInternalServerError
		http.Error(w, "500 Internal Server Error: the request cannot be forwarded", http.StatusInternalServerError)
	default:
		h.p.log.Debug("backend error", "server", srv.addr, "err", err)
		http.Error(w, "502 Bad Gateway: backend server "+srv.addr+" could not be reached", http.StatusBadGateway)
	}
}

// maxConnectAttempts is how many servers a request tries when connecting fails.
const maxConnectAttempts = 3

// forward sends the request to srv: as an upgrade when upgrade is set and the client connection
// can switch protocols (else upgrade comes back ""), as a plain exchange otherwise. The request
// counts towards the server's connections (for draining) while it runs.
func (h *portHandler) forward(w http.ResponseWriter, r *http.Request, bs *backendSet, srv *server, upgrade string) (int, string, error) {
	up := srv.pool(r, bs.dedicated)
	stats := srv.stats
	stats.inflight.Add(1)
	defer stats.inflight.Add(-1)
	if upgrade != "" {
		status, err := h.upgrade(w, r, up, upgrade, bs.timeout, stats)
		if !errors.Is(err, upstream.ErrUpgradeNotSupported) {
			return status, upgrade, err
		}
		// This client connection cannot switch protocols: serve the request as if it had not asked.
	}
	status, err := up.ForwardCut(r.Context(), w, r, bs.timeout, &stats.cutter)
	return status, "", err
}

// errDrainCut is what a request cut by a drain deadline fails with.
var errDrainCut = upstream.ErrCut

// upgrade forwards an Upgrade request, under a context that the server's drain deadline ends.
func (h *portHandler) upgrade(w http.ResponseWriter, r *http.Request, up *upstream.Pool, proto string,
	timeout time.Duration, stats *serverStats) (int, error) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if cw, ok := r.Context().(upstream.ClientWatcher); ok {
		ctx = watchedContext{ctx, cw} // the backend exchange still asks whether the client left
	}
	stopCut := context.AfterFunc(stats.lifetime(), cancel)
	defer stopCut()
	status, err := up.Upgrade(ctx, w, r, proto, timeout, stats.track)
	if err != nil && r.Context().Err() == nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", errDrainCut, err)
	}
	return status, err
}

// watchedContext is a context derived from a request's that is still an upstream.ClientWatcher.
type watchedContext struct {
	context.Context
	cw upstream.ClientWatcher
}

func (c watchedContext) ClientGone() bool { return c.cw.ClientGone() }

// tooLarge answers 413 and, on HTTP/1, closes the connection rather than read the rest of the body.
func tooLarge(w http.ResponseWriter, r *http.Request, max int64) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	http.Error(w, fmt.Sprintf("413 Request Entity Too Large: the request body is larger than %d bytes", max), http.StatusRequestEntityTooLarge)
}

// serveOptionsStar answers "OPTIONS *" as net/http's server does by default (the h2 listeners turn
// that off so that every request takes the same path): an empty 200, reading at most 4 KiB
// of any body.
func serveOptionsStar(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
}

// requestTimeout is a settings' response-header timeout.
func requestTimeout(set *fgv1.BackendHttpSettings) time.Duration {
	if set.RequestTimeout == nil {
		return config.DefaultRequestTimeout * time.Second
	}
	return time.Duration(set.GetRequestTimeout()) * time.Second
}
