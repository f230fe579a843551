package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/route"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// backendSet is a pool's servers under one backend settings, with everything the request path needs
// worked out when the configuration was applied.
type backendSet struct {
	pool, settings string
	timeout        time.Duration
	servers        []*server
	minServers     int    // the probe's fail-open floor
	hostName       string // Host sent instead of the client's ("": keep it)
	hostFromServer bool   // send the server's address as Host
	path           string // backend path override
	dedicated      bool   // one backend connection per client connection
	drainTimeout   time.Duration

	affinity     bool
	cookieName   string
	corsName     string
	serverByHash map[string]*server
	next         atomic.Uint64
}

// server is one backend server as addressed by a settings' port.
type server struct {
	addr    string
	host    string          // IP or FQDN, without the port
	conns   *serverConns    // connections to it
	connKey string          // conns' key in Proxy.conns
	health  *health.Tracker // nil: not probed, always usable
	stats   *serverStats    // connections, across configurations
	// draining: no new clients; drainEnded is set when the drain is over (then not even
	// affinity cookies reach it).
	draining   bool
	drainEnded *atomic.Bool
	// Affinity: the cookie value naming this server, and the two Set-Cookie values.
	hash       string
	setCookies []string
}

// choose picks the server for a request: the one its affinity cookie names while that one is usable,
// else the next usable one round-robin. fresh reports that the client must be told (new cookie).
func (bs *backendSet) choose(r *http.Request) (srv *server, fresh bool) {
	if bs.affinity {
		for _, name := range [2]string{bs.cookieName, bs.corsName} {
			if v, ok := cookieValue(r.Header, name); ok {
				// The affinity exception: a draining server keeps its clients until its drain ends.
				if s := bs.serverByHash[v]; s != nil && s.usable() && (!s.draining || !s.drainEnded.Load()) {
					return s, false
				}
			}
		}
	}
	return bs.pick(), true
}

// cookieValue is the value of the first cookie called name in the request's Cookie fields whose
// value is valid, as http.Request.Cookie finds it (the same trimming, surrounding double quotes
// removed, none past net/http's default limit of 3,000 cookies), without parsing every cookie into
// an http.Cookie: a returning client's request reads its affinity cookie with no allocation.
func cookieValue(h http.Header, name string) (string, bool) {
	lines := h["Cookie"]
	count := 0
	for _, line := range lines {
		count += strings.Count(line, ";") + 1
	}
	if count > maxCookies {
		return "", false
	}
	for _, line := range lines {
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			n, v, _ := strings.Cut(trimHTTPSpace(part), "=")
			if trimHTTPSpace(n) != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if validCookieValue(v) {
				return v, true
			}
		}
	}
	return "", false
}

// maxCookies is net/http's default limit on the cookies of a request (GODEBUG httpcookiemaxnum):
// past it, it reads none.
const maxCookies = 3000

// trimHTTPSpace trims what textproto.TrimString does: ASCII spaces, tabs and line ends.
func trimHTTPSpace(s string) string { return strings.Trim(s, " \t\r\n") }

// validCookieValue reports whether v holds only the bytes net/http accepts in a cookie value.
func validCookieValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < 0x20 || b >= 0x7f || b == '"' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
}

func (s *server) usable() bool { return s.health == nil || s.health.Usable() }

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
		if s := bs.servers[(start+i)%n]; s.usable() && !s.draining {
			return s
		}
	}
	if m := uint64(min(bs.minServers, len(bs.servers))); m > 0 {
		return bs.servers[start%m]
	}
	return nil
}

// pickExcept returns the next usable server round-robin that is not among tried, or nil.
func (bs *backendSet) pickExcept(tried []*server) *server {
	n := uint64(len(bs.servers))
	start := bs.next.Add(1) - 1
	for i := range n {
		s := bs.servers[(start+i)%n]
		if s.usable() && !s.draining && !slices.Contains(tried, s) {
			return s
		}
	}
	return nil
}

// pool returns the connection pool for a request to this server: the client connection's own when
// the settings want dedicated connections, else the shared one (per SNI name where that follows the
// request's Host).
func (s *server) pool(r *http.Request, dedicated bool) *upstream.Pool {
	if dedicated {
		if cc := clientConnOf(r.Context()); cc != nil {
			if p := cc.pool(s.addr, s.conns.options(r.Host)); p != nil {
				return p
			}
		}
	}
	return s.conns.pool(r.Host)
}

// builder turns a gateway's settings and pools into backend sets, reusing connection pools of the
// previous configuration where servers are reached the same way.
type builder struct {
	gw          *fgv1.Gateway
	old, used   map[string]io.Closer
	healthOf    HealthLookup
	affinityKey []byte
	stats       map[health.Key]*serverStats // the proxy's, kept across configurations
	created     []io.Closer
}

func (b *builder) backendSet(pair route.Pair) (*backendSet, error) {
	var bp *fgv1.BackendAddressPool
	for _, p := range b.gw.GetBackendAddressPools() {
		if p.GetName() == pair.Pool {
			bp = p
		}
	}
	var set *fgv1.BackendHttpSettings
	for _, s := range b.gw.GetBackendHttpSettingsCollection() {
		if s.GetName() == pair.Settings {
			set = s
		}
	}
	if bp == nil || set == nil {
		return nil, fmt.Errorf("route to pool %q with settings %q: not configured", pair.Pool, pair.Settings)
	}
	bs := &backendSet{
		pool:           pair.Pool,
		settings:       pair.Settings,
		timeout:        requestTimeout(set),
		hostName:       set.GetHostName(),
		hostFromServer: set.GetPickHostNameFromBackendAddress(),
		path:           set.GetPath(),
		dedicated:      set.GetDedicatedBackendConnection(),
		drainTimeout:   drainTimeout(set),
		affinity:       set.GetCookieBasedAffinity() == config.Enabled,
	}
	for _, pr := range b.gw.GetProbes() {
		if pr.GetName() == set.GetProbe() {
			bs.minServers = int(pr.GetMinServers())
		}
	}
	if bs.affinity {
		bs.cookieName = set.GetAffinityCookieName()
		if bs.cookieName == "" {
			bs.cookieName = config.DefaultAffinityCookieName
		}
		bs.corsName = bs.cookieName + "CORS"
		bs.serverByHash = map[string]*server{}
	}
	tlsOpts, err := backendTLS(b.gw, set)
	if err != nil {
		return nil, fmt.Errorf("backend settings %q: %w", set.GetName(), err)
	}
	for _, a := range bp.GetBackendAddresses() {
		addr := config.ServerAddress(a, set.GetPort())
		srv := &server{addr: addr, host: a.GetIpAddress() + a.GetFqdn()}
		statsKey := health.Key{Settings: pair.Settings, Address: addr}
		if srv.stats = b.stats[statsKey]; srv.stats == nil {
			srv.stats = newServerStats()
			b.stats[statsKey] = srv.stats
		}
		key := tlsOpts.key(addr, srv.host)
		conns, _ := b.used[key].(*serverConns)
		if conns == nil {
			conns, _ = b.old[key].(*serverConns)
		}
		if conns == nil {
			conns = newServerConns(addr, srv.host, tlsOpts)
			b.created = append(b.created, conns)
		}
		b.used[key] = conns
		srv.conns, srv.connKey = conns, key
		if b.healthOf != nil {
			srv.health = b.healthOf(health.Key{Settings: pair.Settings, Address: addr})
		}
		if bs.affinity {
			srv.hash = affinityHash(b.affinityKey, pair.Settings, addr)
			srv.setCookies = []string{
				bs.cookieName + "=" + srv.hash + "; Path=/",
				bs.corsName + "=" + srv.hash + "; Path=/; SameSite=None; Secure",
			}
			bs.serverByHash[srv.hash] = srv
		}
		bs.servers = append(bs.servers, srv)
	}
	return bs, nil
}

// closeNew closes the pools made for a configuration that is not applied after all.
func (b *builder) closeNew() {
	for _, c := range b.created {
		c.Close()
	}
}

// affinityHash names a server in an affinity cookie without revealing its address: a keyed hash,
// the same on every worker of the gateway, so that each honours the others' cookies.
func affinityHash(key []byte, settings, addr string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(settings))
	m.Write([]byte{0})
	m.Write([]byte(addr))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}
