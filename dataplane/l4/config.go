package l4

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/drain"
	"github.com/fleetgate/fleetgate/dataplane/health"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// state is one applied layer-4 configuration. It is immutable once published, but for the
// round-robin counters of its backend sets.
type state struct {
	version int64
	ports   map[int32]*portRoutes
	sets    []*backendSet
	// servers indexes every server of every backend set by its drain identity.
	servers map[serverID]*server
}

// portRoutes are the layer-4 listeners of one port: one Tcp listener, or Tls listeners chosen by SNI.
type portRoutes struct {
	tcp *listener
	// Tls: exact host names, wildcards (longest suffix first), the fallback listener (the one without
	// host names, else the first), and the server TLS configuration that picks among them.
	exact     map[string]*listener
	wildcards []wildcardListener
	fallback  *listener
	tlsConfig *tls.Config
}

type wildcardListener struct {
	suffix string // ".example.com" for "*.example.com"
	l      *listener
}

// listener is a layer-4 listener with its rule's target.
type listener struct {
	name   string
	cert   *tls.Certificate // Tls only
	target *backendSet      // nil: no rule serves the listener (connections are closed)
}

// byServerName picks the Tls listener for a client's SNI: an exact host name, then the longest
// matching wildcard, then the fallback.
func (pr *portRoutes) byServerName(name string) *listener {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if l := pr.exact[name]; l != nil {
		return l
	}
	for _, w := range pr.wildcards {
		if len(name) > len(w.suffix) && strings.HasSuffix(name, w.suffix) {
			return w.l
		}
	}
	return pr.fallback
}

// serverID names a server in a pool under a backend settings: the unit of connection accounting and
// draining.
type serverID = drain.ID

// backendSet is a pool's servers under one layer-4 backend settings.
type backendSet struct {
	pool, settings string
	idle           time.Duration // idle timeout of a connection
	servers        []*server
	minServers     int // the probe's fail-open floor
	next           atomic.Uint64
}

// server is one backend server as the settings reach it.
type server struct {
	id       serverID
	addr     string // "host:port"
	host     string // IP or FQDN
	health   *health.Tracker
	stats    *serverStats // open connections, kept across configurations
	draining bool         // an operator's drain: no new connections
	tls      *tls.Config  // nil: plain TCP
}

func (s *server) usable() bool { return s.health == nil || s.health.Usable() }

// pick returns the next server round-robin that is usable, not draining and not in tried; with none
// and a probe's minServers, the first minServers servers that are not draining (fail open); else nil.
func (bs *backendSet) pick(tried []string) *server {
	n := uint64(len(bs.servers))
	if n == 0 {
		return nil
	}
	start := bs.next.Add(1) - 1
	for i := range n {
		if s := bs.servers[(start+i)%n]; s.usable() && !s.draining && !contains(tried, s.addr) {
			return s
		}
	}
	m := uint64(min(bs.minServers, len(bs.servers)))
	for i := range m {
		if s := bs.servers[(start+i)%m]; !s.draining && !contains(tried, s.addr) {
			return s
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// idleTimeout is a settings' idle timeout.
func idleTimeout(set *fgv1.BackendSettings) time.Duration {
	if set.Timeout == nil || set.GetTimeout() <= 0 {
		return config.DefaultL4IdleTimeout * time.Second
	}
	return time.Duration(set.GetTimeout()) * time.Second
}

// rootPool builds the CA pool of Tls backend settings from the trusted root certificates they name:
// nil (the system roots) when they name none.
func rootPool(gw *fgv1.Gateway, set *fgv1.BackendSettings) (*x509.CertPool, error) {
	if len(set.GetTrustedRootCertificates()) == 0 {
		return nil, nil
	}
	data := map[string]string{}
	for _, r := range gw.GetTrustedRootCertificates() {
		data[r.GetName()] = r.GetData()
	}
	pool := x509.NewCertPool()
	for _, name := range set.GetTrustedRootCertificates() {
		d, ok := data[name]
		if !ok {
			return nil, fmt.Errorf("trusted root certificate %q not found", name)
		}
		certs, err := config.ParseCertificates(d)
		if err != nil {
			return nil, fmt.Errorf("trusted root certificate %q: %w", name, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// compile builds the layer-4 state of a gateway. Servers get no stats here: Apply attaches them.
func compile(version int64, gw *fgv1.Gateway, healthOf HealthLookup) (*state, error) {
	st := &state{version: version, ports: map[int32]*portRoutes{}, servers: map[serverID]*server{}}
	if len(gw.GetListeners()) == 0 {
		return st, nil
	}
	pools := map[string]*fgv1.BackendAddressPool{}
	for _, p := range gw.GetBackendAddressPools() {
		pools[p.GetName()] = p
	}
	settings := map[string]*fgv1.BackendSettings{}
	for _, s := range gw.GetBackendSettingsCollection() {
		settings[s.GetName()] = s
	}
	probes := map[string]*fgv1.Probe{}
	for _, p := range gw.GetProbes() {
		probes[p.GetName()] = p
	}
	certData := map[string]string{}
	for _, c := range gw.GetSslCertificates() {
		certData[c.GetName()] = c.GetData()
	}
	// The rule of each listener: the one with the lowest priority number if several claim it.
	rules := map[string]*fgv1.RoutingRule{}
	for _, r := range gw.GetRoutingRules() {
		if old := rules[r.GetListener()]; old == nil || r.GetPriority() < old.GetPriority() {
			rules[r.GetListener()] = r
		}
	}

	type pair struct{ pool, settings string }
	sets := map[pair]*backendSet{}
	target := func(r *fgv1.RoutingRule) (*backendSet, error) {
		key := pair{r.GetBackendAddressPool(), r.GetBackendSettings()}
		if bs := sets[key]; bs != nil {
			return bs, nil
		}
		bp, set := pools[key.pool], settings[key.settings]
		if bp == nil {
			return nil, fmt.Errorf("routing rule %q: backend address pool %q not found", r.GetName(), key.pool)
		}
		if set == nil {
			return nil, fmt.Errorf("routing rule %q: backend settings %q not found", r.GetName(), key.settings)
		}
		bs, err := newBackendSet(gw, bp, set, probes[set.GetProbe()], healthOf)
		if err != nil {
			return nil, fmt.Errorf("backend settings %q: %w", set.GetName(), err)
		}
		sets[key] = bs
		st.sets = append(st.sets, bs)
		for _, s := range bs.servers {
			st.servers[s.id] = s
		}
		return bs, nil
	}

	parsed := map[string]*tls.Certificate{}
	for _, l := range gw.GetListeners() {
		pr := st.ports[l.GetPort()]
		if pr == nil {
			pr = &portRoutes{}
			st.ports[l.GetPort()] = pr
		}
		ln := &listener{name: l.GetName()}
		if r := rules[l.GetName()]; r != nil {
			bs, err := target(r)
			if err != nil {
				return nil, err
			}
			ln.target = bs
		}
		switch l.GetProtocol() {
		case config.ProtocolTCP:
			if pr.tcp != nil || pr.exact != nil {
				return nil, fmt.Errorf("listener %q: port %d already has a layer-4 listener; a Tcp listener has its port to itself", l.GetName(), l.GetPort())
			}
			pr.tcp = ln
		case config.ProtocolTLS:
			if pr.tcp != nil {
				return nil, fmt.Errorf("listener %q: port %d already has Tcp listener %q", l.GetName(), l.GetPort(), pr.tcp.name)
			}
			name := l.GetSslCertificate()
			cert := parsed[name]
			if cert == nil {
				data, ok := certData[name]
				if !ok {
					return nil, fmt.Errorf("listener %q: ssl certificate %q not found", l.GetName(), name)
				}
				kp, err := config.ParseKeyPair(data)
				if err != nil {
					return nil, fmt.Errorf("ssl certificate %q: %w", name, err)
				}
				cert = &kp
				parsed[name] = cert
			}
			ln.cert = cert
			if pr.exact == nil {
				pr.exact = map[string]*listener{}
			}
			if len(l.GetHostNames()) == 0 || pr.fallback == nil {
				pr.fallback = ln // the listener without host names, else the first
			}
			for _, h := range l.GetHostNames() {
				h = strings.ToLower(strings.TrimSuffix(h, "."))
				if suffix, ok := strings.CutPrefix(h, "*"); ok {
					pr.wildcards = append(pr.wildcards, wildcardListener{suffix: suffix, l: ln})
				} else if pr.exact[h] == nil {
					pr.exact[h] = ln
				}
			}
		default:
			return nil, fmt.Errorf("listener %q: protocol %q is not Tcp or Tls", l.GetName(), l.GetProtocol())
		}
	}
	for _, pr := range st.ports {
		if pr.tcp != nil {
			continue
		}
		sort.SliceStable(pr.wildcards, func(i, j int) bool { return len(pr.wildcards[i].suffix) > len(pr.wildcards[j].suffix) })
		pr.tlsConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return pr.byServerName(hello.ServerName).cert, nil
			},
		}
	}
	return st, nil
}

// newBackendSet builds a pool's servers under layer-4 settings.
func newBackendSet(gw *fgv1.Gateway, bp *fgv1.BackendAddressPool, set *fgv1.BackendSettings, pr *fgv1.Probe, healthOf HealthLookup) (*backendSet, error) {
	bs := &backendSet{
		pool:       bp.GetName(),
		settings:   set.GetName(),
		idle:       idleTimeout(set),
		minServers: int(pr.GetMinServers()),
	}
	var roots *x509.CertPool
	isTLS := false
	switch set.GetProtocol() {
	case config.ProtocolTCP, "":
	case config.ProtocolTLS:
		isTLS = true
		var err error
		if roots, err = rootPool(gw, set); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("protocol %q is not Tcp or Tls", set.GetProtocol())
	}
	for _, a := range bp.GetBackendAddresses() {
		addr := config.ServerAddress(a, set.GetPort())
		s := &server{
			id:   serverID{Pool: bs.pool, Settings: bs.settings, Addr: addr},
			addr: addr,
			host: a.GetIpAddress() + a.GetFqdn(),
		}
		if healthOf != nil {
			s.health = healthOf(health.Key{Settings: bs.settings, Address: addr})
		}
		if isTLS {
			name := set.GetHostName()
			if name == "" {
				// pickHostNameFromBackendAddress, and the default: the server's own address.
				name = s.host
			}
			s.tls = &tls.Config{
				MinVersion:         tls.VersionTLS12,
				RootCAs:            roots,
				ServerName:         name,
				ClientSessionCache: tls.NewLRUClientSessionCache(16),
			}
		}
		bs.servers = append(bs.servers, s)
	}
	return bs, nil
}
