// Package proxy is the data plane's HTTP request path: it routes each request with the current
// routing table, picks a server of the target pool round-robin, and forwards the request over a pooled
// HTTP/1.1 connection. Configurations are swapped in whole through an atomic pointer; the request path
// takes no lock.
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/route"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Proxy forwards requests for one gateway.
type Proxy struct {
	log   *slog.Logger
	state atomic.Pointer[state]

	mu        sync.Mutex                // serializes Apply
	upstreams map[string]*upstream.Pool // by upstreamOptions' key
}

// state is one applied configuration, immutable.
type state struct {
	version int64
	table   *route.Table
	targets []*backendSet // indexed by route.Target.Pair
}

// backendSet is a pool's servers under one backend settings.
type backendSet struct {
	pool, settings string
	timeout        time.Duration
	servers        []*server
	minServers     int    // the probe's fail-open floor
	hostName       string // Host sent instead of the client's ("": keep it)
	hostFromServer bool   // send the server's address as Host
	next           atomic.Uint64
}

// server is one backend server as addressed by a settings' port.
type server struct {
	addr     string
	host     string // IP or FQDN, without the port
	upstream *upstream.Pool
	health   *health.Tracker // nil: not probed, always usable
}

// HealthLookup finds the health state machine of a (settings, server) pair; nil if it is not probed.
type HealthLookup func(health.Key) *health.Tracker

// New returns a proxy with no configuration: every request gets 404 until Apply.
func New(log *slog.Logger) *Proxy {
	p := &Proxy{log: log, upstreams: map[string]*upstream.Pool{}}
	p.state.Store(&state{table: &route.Table{}})
	return p
}

// Version is the configuration version being served.
func (p *Proxy) Version() int64 { return p.state.Load().version }

// Apply compiles a validated gateway and makes it current. Requests in flight finish with the
// configuration they started with; connections to servers that remain are kept.
// health gives each server's state machine, read on every request; nil treats every server as healthy.
func (p *Proxy) Apply(version int64, gw *fgv1.Gateway, healthOf HealthLookup) (*route.Table, error) {
	table, err := route.Compile(gw)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pools := map[string]*fgv1.BackendAddressPool{}
	for _, bp := range gw.GetBackendAddressPools() {
		pools[bp.GetName()] = bp
	}
	settings := map[string]*fgv1.BackendHttpSettings{}
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		settings[s.GetName()] = s
	}
	probes := map[string]*fgv1.Probe{}
	for _, pr := range gw.GetProbes() {
		probes[pr.GetName()] = pr
	}
	used := map[string]*upstream.Pool{}
	st := &state{version: version, table: table}
	for _, pair := range table.Pairs() {
		bp, set := pools[pair.Pool], settings[pair.Settings]
		if bp == nil || set == nil {
			return nil, fmt.Errorf("route to pool %q with settings %q: not configured", pair.Pool, pair.Settings)
		}
		timeout := time.Duration(set.GetRequestTimeout()) * time.Second
		if set.RequestTimeout == nil {
			timeout = config.DefaultRequestTimeout * time.Second
		}
		bs := &backendSet{pool: pair.Pool, settings: pair.Settings, timeout: timeout,
			hostName: set.GetHostName(), hostFromServer: set.GetPickHostNameFromBackendAddress()}
		if pr := probes[set.GetProbe()]; pr != nil {
			bs.minServers = int(pr.GetMinServers())
		}
		roots, rootsID, err := config.RootPool(gw, set)
		if err != nil {
			return nil, fmt.Errorf("backend settings %q: %w", set.GetName(), err)
		}
		for _, a := range bp.GetBackendAddresses() {
			addr := config.ServerAddress(a, set.GetPort())
			opts, poolKey := upstreamOptions(set, a, roots, rootsID)
			up := used[poolKey]
			if up == nil {
				up = p.upstreams[poolKey]
				if up == nil {
					up = upstream.NewPool(addr, opts)
				}
				used[poolKey] = up
			}
			srv := &server{addr: addr, host: a.GetIpAddress() + a.GetFqdn(), upstream: up}
			if healthOf != nil {
				srv.health = healthOf(health.Key{Settings: pair.Settings, Address: addr})
			}
			bs.servers = append(bs.servers, srv)
		}
		st.targets = append(st.targets, bs)
	}
	p.state.Store(st)
	for key, up := range p.upstreams {
		if used[key] == nil {
			up.Close() // idle connections now; busy ones as their requests finish
		}
	}
	p.upstreams = used
	return table, nil
}

// Clear stops routing: every request gets 404.
func (p *Proxy) Clear(version int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.Store(&state{version: version, table: &route.Table{}})
	for _, up := range p.upstreams {
		up.Close()
	}
	p.upstreams = map[string]*upstream.Pool{}
}

// Handler serves the listeners on one port.
func (p *Proxy) Handler(port int32) http.Handler { return &portHandler{p: p, port: port} }

type portHandler struct {
	p    *Proxy
	port int32
}

func (h *portHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := h.p.state.Load()
	t := st.table.Match(h.port, r.Host, r.URL.Path)
	if t == nil {
		http.Error(w, "404 no routing rule matches this request", http.StatusNotFound)
		return
	}
	bs := st.targets[t.Pair]
	srv := bs.pick()
	if srv == nil {
		http.Error(w, "502 Bad Gateway: no healthy backend server is available in pool "+bs.pool, http.StatusBadGateway)
		return
	}
	prepareOutbound(r, r.TLS != nil)
	switch {
	case bs.hostName != "":
		r.Host = bs.hostName
	case bs.hostFromServer:
		r.Host = srv.host
	}
	status, err := srv.upstream.Forward(r.Context(), w, r, bs.timeout)
	if err == nil {
		return
	}
	if status != 0 {
		// The response had begun; all that is left is to cut it short.
		h.p.log.Debug("response aborted", "server", srv.addr, "err", err)
		panic(http.ErrAbortHandler)
	}
	switch {
	case errors.Is(err, upstream.ErrTimeout):
		http.Error(w, "504 Gateway Timeout: backend server "+srv.addr+" did not answer in time", http.StatusGatewayTimeout)
	case errors.Is(err, upstream.ErrCanceled), errors.Is(err, context.Canceled):
		// The client went away.
	case errors.Is(err, upstream.ErrRequestBody):
		http.Error(w, "400 Bad Request: the request body could not be read", http.StatusBadRequest)
	case errors.Is(err, upstream.ErrInvalidRequest):
		h.p.log.Warn("request not forwardable", "server", srv.addr, "err", err)
		http.Error(w, "500 Internal Server Error: the request cannot be forwarded", http.StatusInternalServerError)
	default:
		h.p.log.Debug("backend error", "server", srv.addr, "err", err)
		http.Error(w, "502 Bad Gateway: backend server "+srv.addr+" could not be reached", http.StatusBadGateway)
	}
}

// pick returns the next usable server round-robin, skipping unhealthy ones. When none is usable and
// the probe sets minServers, the first minServers servers are treated as healthy (fail open).
// It returns nil when no server may be used.
func (bs *backendSet) pick() *server {
	n := uint64(len(bs.servers))
	if n == 0 {
		return nil
	}
	start := bs.next.Add(1) - 1
	for i := range n {
		s := bs.servers[(start+i)%n]
		if s.health == nil || s.health.Usable() {
			return s
		}
	}
	if m := uint64(min(bs.minServers, len(bs.servers))); m > 0 {
		return bs.servers[start%m]
	}
	return nil
}

// upstreamOptions returns the connection options to a server under some settings, and the key under
// which its connection pool is shared: servers reached the same way share one pool across configs.
// Https settings verify the server's certificate against roots (nil: the system roots) with the
// server name taken from the settings' host name, else the server's address.
func upstreamOptions(set *fgv1.BackendHttpSettings, a *fgv1.BackendAddress, roots *x509.CertPool, rootsID string) (upstream.Options, string) {
	addr := config.ServerAddress(a, set.GetPort())
	if set.GetProtocol() != config.ProtocolHTTPS {
		return upstream.Options{}, addr
	}
	name := set.GetHostName()
	if name == "" {
		name = a.GetFqdn()
	}
	if name == "" {
		name = a.GetIpAddress()
	}
	return upstream.Options{TLSConfig: &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}},
		"https|" + addr + "|" + name + "|" + rootsID
}
