// Package worker is a data-plane worker: it applies snapshots from the agent to the proxy and opens
// and closes the listeners they name, on the worker's bind address.
package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/agent"
	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/http1"
	"github.com/fleetgate/fleetgate/dataplane/http2"
	"github.com/fleetgate/fleetgate/dataplane/l4"
	"github.com/fleetgate/fleetgate/dataplane/metrics"
	"github.com/fleetgate/fleetgate/dataplane/probe"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Config of a worker.
type Config struct {
	// BindAddress is the IP its listeners bind to, e.g. 127.0.0.2.
	BindAddress string
	// ShutdownGrace bounds how long a removed listener's in-flight requests may take (default 30s).
	ShutdownGrace time.Duration
	// Prober runs health probes (default probe.Run).
	Prober health.Prober
	// Metrics, if set, are updated; AccessLog, if set, gets one line per request.
	Metrics   *metrics.Metrics
	AccessLog *slog.Logger
	Log       *slog.Logger
}

// Worker serves one gateway's listeners.
type Worker struct {
	cfg    Config
	log    *slog.Logger
	proxy  *proxy.Proxy
	l4     *l4.Proxy
	health *health.Manager

	changed  chan struct{}
	stopFwd  chan struct{}
	fwdDone  chan struct{}
	stopOnce sync.Once

	mu        sync.Mutex // serializes Apply and Shutdown
	listeners map[int32]*listener
	closing   sync.WaitGroup
}

// listener is one port the worker listens on.
type listener struct {
	spec portSpec
	ln   net.Listener // the socket
	// Layer-4 ports: the l4 proxy serves ln.
	wg sync.WaitGroup
	// HTTP(S) ports: acc accepts from ln for the current server, srv.
	acc *acceptor
	srv *server
}

// server is the server of an HTTP(S) port, fed by a handoff listener of the port's acceptor:
// HTTP/1.x connections go to h1, the data plane's own HTTP/1 server; with HTTP/2 on, h2, its own
// HTTP/2 server, serves the connections that negotiated h2 by ALPN on Https ports, and those that h1 finds
// opening with the HTTP/2 preface on Http ports (h2c by prior knowledge).
type server struct {
	h1   *http1.Server
	h2   *http2.Server
	done chan struct{} // Serve returned (both)
}

// shutdown stops the server gracefully, up to ctx; then it closes what is left.
func (s *server) shutdown(ctx context.Context) error {
	var errs [2]error
	var wg sync.WaitGroup
	if s.h1 != nil {
		wg.Go(func() {
			if errs[0] = s.h1.Shutdown(ctx); errs[0] != nil {
				s.h1.Close()
			}
		})
	}
	if s.h2 != nil {
		wg.Go(func() {
			if errs[1] = s.h2.Shutdown(ctx); errs[1] != nil {
				s.h2.Close()
			}
		})
	}
	wg.Wait()
	<-s.done
	return errors.Join(errs[:]...)
}

// portSpec is what a port's server is built from: a change needs a new server on the port.
//
// The limits that the servers take as fields (header size, read-header and idle timeouts) cannot
// change while it serves, so a change of limits, like a change of protocol, starts a new server
// on the same socket: new connections go to the new server at once, while the old one finishes the
// connections it has (idle ones are closed right away, busy ones after their request, within the
// shutdown grace), with its old limits. No connection is refused. The connection limit (in the
// acceptor) and the body limit (in the proxy) apply at once without a new server.
type portSpec struct {
	mode   listenMode
	limits serverLimits
}

// listenMode is what a port's server speaks.
type listenMode struct {
	https, http2 bool
	l4           bool // a layer-4 (Tcp/Tls) listener, served by the l4 proxy
}

// serverLimits are the limits an http.Server holds.
type serverLimits struct {
	maxHeaderBytes    int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
}

var _ agent.Applier = (*Worker)(nil)

// New returns a worker serving nothing yet.
func New(cfg Config) *Worker {
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Prober == nil {
		cfg.Prober = health.ProberFunc(probe.Run)
	}
	w := &Worker{
		cfg:       cfg,
		log:       cfg.Log,
		proxy:     proxy.New(cfg.Log),
		l4:        l4.New(cfg.Log),
		health:    health.NewManager(cfg.Prober, cfg.Log),
		listeners: map[int32]*listener{},
		changed:   make(chan struct{}, 1),
		stopFwd:   make(chan struct{}),
		fwdDone:   make(chan struct{}),
	}
	w.proxy.Observe(cfg.Metrics, cfg.AccessLog)
	if cfg.Metrics != nil {
		w.health.Observe(cfg.Metrics.Probe)
	}
	go func() {
		defer close(w.fwdDone)
		w.forwardChanges(w.stopFwd)
	}()
	return w
}

// Health is the worker's probe manager: its view of the backend servers.
func (w *Worker) Health() *health.Manager { return w.health }

// Version is the configuration version being served.
func (w *Worker) Version() int64 { return w.proxy.Version() }

// Apply serves a snapshot: new listeners are opened first, so that a port that cannot be bound
// rejects the snapshot while the previous configuration keeps serving; then the routing table is
// swapped; then listeners no longer named are closed gracefully.
func (w *Worker) Apply(_ context.Context, snap *fgv1.Snapshot) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if snap.GetDeleted() {
		w.proxy.Clear(snap.GetVersion())
		_ = w.l4.Apply(snap.GetVersion(), &fgv1.Gateway{}, nil, nil)
		w.health.Update(snap.GetVersion(), nil)
		w.closeAllExcept(nil)
		return nil
	}
	targets, err := health.Targets(snap.GetGateway())
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(w.cfg.BindAddress); err == nil && !ip.IsUnspecified() {
		for i := range targets {
			targets[i].Spec.LocalIP = ip
		}
	}
	gw := snap.GetGateway()
	limits := config.LimitsOf(gw)
	httpLimits := serverLimits{limits.MaxRequestHeaderBytes, limits.ReadHeaderTimeout, limits.ClientIdleTimeout}
	want := map[int32]portSpec{}
	for _, l := range gw.GetHttpListeners() {
		want[l.GetPort()] = portSpec{listenMode{https: l.GetProtocol() == config.ProtocolHTTPS, http2: gw.GetEnableHttp2()}, httpLimits}
	}
	for _, l := range gw.GetListeners() {
		want[l.GetPort()] = portSpec{mode: listenMode{l4: true}}
	}
	// A port that changes between HTTP and layer 4 gets a new socket: the old one is closed first
	// (its connections finish in the background), so there is a moment when the port refuses
	// connections. Other changes keep the socket (see portSpec).
	var replaced []*listener
	for port, spec := range want {
		if l := w.listeners[port]; l != nil && l.spec.mode.l4 != spec.mode.l4 {
			l.closeSocket()
			delete(w.listeners, port)
			replaced = append(replaced, l)
		}
	}
	opened := map[int32]*listener{}
	for port, spec := range want {
		if w.listeners[port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(w.cfg.BindAddress, strconv.Itoa(int(port))))
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return fmt.Errorf("listener port %d: %w", port, err)
		}
		opened[port] = &listener{ln: ln, spec: spec}
	}
	w.health.Update(snap.GetVersion(), targets)
	if err := w.l4.Apply(snap.GetVersion(), gw, w.health.Tracker, snap.GetDrains()); err != nil {
		for _, o := range opened {
			o.ln.Close()
		}
		return err
	}
	if _, err := w.proxy.Apply(snap.GetVersion(), gw, w.health.Tracker, snap.GetAffinityKey(), snap.GetDrains()); err != nil {
		for _, o := range opened {
			o.ln.Close()
		}
		return err
	}
	for port, l := range opened {
		w.serve(port, l, limits.MaxConnections)
	}
	for port, spec := range want {
		l := w.listeners[port]
		if spec.mode.l4 || opened[port] != nil {
			continue
		}
		l.acc.setMax(limits.MaxConnections)
		if l.spec != spec {
			old := l.srv
			l.spec = spec
			w.startServer(port, l)
			w.log.Info("listener server replaced", "address", l.ln.Addr().String())
			w.closing.Add(1)
			go func() {
				defer w.closing.Done()
				// A connection handed to the old server just before the swap is read before the
				// server shuts down (net/http drops a connection whose first request it reads
				// while shutting down).
				time.Sleep(replacedServerLinger)
				w.shutdownServer(old)
			}()
		}
	}
	w.cfg.Metrics.ConfigVersion(snap.GetVersion())
	for _, l := range replaced {
		w.closing.Add(1)
		go func() {
			defer w.closing.Done()
			w.shutdown(l)
		}()
	}
	keep := make(map[int32]bool, len(want))
	for port := range want {
		keep[port] = true
	}
	w.closeAllExcept(keep)
	return nil
}

// serve starts serving a newly opened port, with at most maxConns connections at once (HTTP ports).
func (w *Worker) serve(port int32, l *listener, maxConns int) {
	w.listeners[port] = l
	if l.spec.mode.l4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := w.l4.Serve(l.ln, port); err != nil && !errors.Is(err, net.ErrClosed) {
				w.log.Error("layer-4 listener stopped", "port", port, "err", err)
			}
		}()
		w.log.Info("layer-4 listener open", "address", l.ln.Addr().String())
		return
	}
	l.acc = newAcceptor(l.ln, port, w.log)
	l.acc.setMax(maxConns)
	w.startServer(port, l)
	l.acc.start()
	w.log.Info("listener open", "address", l.ln.Addr().String())
}

// startServer starts a new server for an HTTP port's spec and makes it the one that new
// connections go to.
func (w *Worker) startServer(port int32, l *listener) {
	var tlsConfig *tls.Config
	if l.spec.mode.https {
		tlsConfig = w.proxy.TLSConfig(port, l.spec.mode.http2)
	}
	mode := l.spec.mode
	view, _ := l.acc.handoff(tlsConfig, l.spec.limits.readHeaderTimeout)
	s := &server{done: make(chan struct{})}
	var wg sync.WaitGroup
	serve := func(serve func() error) {
		wg.Go(func() {
			// net.ErrClosed: the port's socket was closed before this server was shut down.
			if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				w.log.Error("listener stopped", "port", port, "err", err)
			}
		})
	}
	h := w.proxy.Handler(port)
	s.h1 = &http1.Server{
		Handler:           h,
		ReadHeaderTimeout: l.spec.limits.readHeaderTimeout,
		IdleTimeout:       l.spec.limits.idleTimeout,
		MaxHeaderBytes:    l.spec.limits.maxHeaderBytes,
		ConnContext:       connContext,
		ConnState:         w.connState,
		Log:               w.log,
	}
	if mode.http2 {
		s.h2 = newHTTP2Server(h, l.spec, w.log)
		s.h2.ConnContext, s.h2.ConnState = connContext, w.connState
		serve(func() error { return s.h2.Serve(view.H2()) })
		if !mode.https {
			s.h1.H2C = func(c net.Conn) {
				if !view.deliver(c, true) {
					c.Close()
				}
			}
		}
	}
	serve(func() error { return s.h1.Serve(view) })
	l.srv = s
	go func() {
		wg.Wait()
		close(s.done)
	}()
}

// closeSocket stops accepting on the port and frees it; open connections are left alone.
func (l *listener) closeSocket() {
	if l.acc != nil {
		l.acc.close()
	} else {
		l.ln.Close()
	}
}

// closeAllExcept closes, in the background and gracefully, every listener whose port is not kept.
func (w *Worker) closeAllExcept(keep map[int32]bool) {
	for port, l := range w.listeners {
		if keep[port] {
			continue
		}
		delete(w.listeners, port)
		w.closing.Add(1)
		go func() {
			defer w.closing.Done()
			w.shutdown(l)
			w.log.Info("listener closed", "address", l.ln.Addr().String())
		}()
	}
}

// shutdown stops a listener: an HTTP server finishes its requests (up to the grace period); a
// layer-4 listener stops accepting, its connections live on in the l4 proxy.
func (w *Worker) shutdown(l *listener) {
	l.closeSocket()
	if l.srv == nil {
		l.wg.Wait()
		return
	}
	w.shutdownServer(l.srv)
}

// replacedServerLinger is how long a replaced server keeps running, idle for new connections,
// before it shuts down.
const replacedServerLinger = 500 * time.Millisecond

// shutdownServer stops a server: it takes no more connections, and its connections end as their
// requests finish, or are closed when the shutdown grace has passed.
func (w *Worker) shutdownServer(s *server) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.ShutdownGrace)
	defer cancel()
	s.shutdown(ctx)
}

// Shutdown stops accepting on every listener and waits, up to ctx, for requests in flight.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	ls := w.listeners
	w.listeners = map[int32]*listener{}
	w.mu.Unlock()
	var errs []error
	for _, l := range ls {
		l.closeSocket()
	}
	for _, l := range ls {
		if l.srv == nil {
			l.wg.Wait()
			continue
		}
		if err := l.srv.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := w.l4.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	w.closing.Wait()
	w.health.Close()
	w.proxy.Close()
	w.l4.Close()
	w.stopOnce.Do(func() { close(w.stopFwd) })
	<-w.fwdDone
	return errors.Join(errs...)
}

// newHTTP2Server is the server of a listener's HTTP/2 connections (h2 by ALPN over TLS; h2c by
// prior knowledge in the clear, handed over by the HTTP/1 server), with the gateway's limits
// against slow and oversized clients. TLS is done by the port's acceptor. "OPTIONS *" goes to the
// proxy, as with HTTP/1.
func newHTTP2Server(h http.Handler, spec portSpec, log *slog.Logger) *http2.Server {
	return &http2.Server{
		Handler:           h,
		ReadHeaderTimeout: spec.limits.readHeaderTimeout,
		IdleTimeout:       spec.limits.idleTimeout,
		MaxHeaderBytes:    spec.limits.maxHeaderBytes,
		Log:               log,
	}
}

// connContext gives a client connection's requests its dedicated backend connections, which
// the acceptor's countedConn holds (under TLS too). Dedicated connections need enableHttp2 off
// (config validation), so no h2c connection, handed over by the HTTP/1 server as a replay of its
// first bytes, ever needs them.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if cc := countedOf(c); cc != nil {
		return proxy.WithClientConn(ctx, &cc.dedicated)
	}
	return ctx
}

// connState counts client connections and closes dedicated backend connections with them.
func (w *Worker) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		w.cfg.Metrics.Connection(1)
	case http.StateClosed, http.StateHijacked:
		w.cfg.Metrics.Connection(-1)
		if cc := countedOf(c); cc != nil {
			cc.dedicated.Close()
		}
	}
}
