package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// maxSNIPools bounds the per-server pools kept when the SNI follows each request's Host.
const maxSNIPools = 64

// tlsOptions is how a settings reaches its servers: nil for Http.
type tlsOptions struct {
	roots       *x509.CertPool // nil: system roots
	rootsID     string
	checkChain  bool   // validateCertChainAndExpiration
	checkName   bool   // validateSni
	fixedName   string // sniName or hostName: the same server name for every request
	fromAddress bool   // pickHostNameFromBackendAddress: the server's own host is the name
}

// backendTLS works out a settings' TLS options.
func backendTLS(gw *fgv1.Gateway, set *fgv1.BackendHttpSettings) (*tlsOptions, error) {
	if set.GetProtocol() != config.ProtocolHTTPS {
		return nil, nil
	}
	roots, rootsID, err := config.RootPool(gw, set)
	if err != nil {
		return nil, err
	}
	o := &tlsOptions{
		roots:       roots,
		rootsID:     rootsID,
		checkChain:  set.ValidateCertChainAndExpiration == nil || set.GetValidateCertChainAndExpiration(),
		checkName:   set.ValidateSni == nil || set.GetValidateSni(),
		fixedName:   set.GetSniName(),
		fromAddress: set.GetPickHostNameFromBackendAddress(),
	}
	if o.fixedName == "" {
		o.fixedName = set.GetHostName()
	}
	return o, nil
}

// key names the connections to a server under these options, so that servers reached the same way
// keep their pools across configurations.
func (o *tlsOptions) key(addr, host string) string {
	if o == nil {
		return addr
	}
	return fmt.Sprintf("https|%s|%s|%v|%v|%v|%s", addr, o.fixedName, o.fromAddress, o.checkChain, o.checkName, o.rootsID)
}

// config returns the client TLS configuration for one server name. Verification is done by hand so
// that each of Azure's two switches turns off exactly its check.
func (o *tlsOptions) config(serverName string) *tls.Config {
	name := serverName
	return &tls.Config{
		ServerName:         name,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("backend sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			if o.checkChain {
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: o.roots, Intermediates: inter, CurrentTime: time.Now()}); err != nil {
					return fmt.Errorf("backend certificate: %w", err)
				}
			}
			if o.checkName {
				if err := leaf.VerifyHostname(name); err != nil {
					return fmt.Errorf("backend certificate: %w", err)
				}
			}
			return nil
		},
	}
}

// serverConns holds the connection pools to one server: one pool, or for Https settings whose SNI
// follows the request's Host, one per server name.
type serverConns struct {
	addr, host string
	tls        *tlsOptions
	fixed      *upstream.Pool // Http, or Https with a fixed name

	mu     sync.Mutex
	byName map[string]*upstream.Pool
}

func newServerConns(addr, host string, o *tlsOptions) *serverConns {
	c := &serverConns{addr: addr, host: host, tls: o}
	switch {
	case o == nil:
		c.fixed = upstream.NewPool(addr, upstream.Options{})
	case o.fixedName != "":
		c.fixed = upstream.NewPool(addr, upstream.Options{TLSConfig: o.config(o.fixedName)})
	case o.fromAddress:
		c.fixed = upstream.NewPool(addr, upstream.Options{TLSConfig: o.config(host)})
	default:
		c.byName = map[string]*upstream.Pool{}
	}
	return c
}

// options returns the options of a new pool to this server for a request with the given Host.
func (c *serverConns) options(reqHost string) upstream.Options {
	if c.tls == nil {
		return upstream.Options{}
	}
	return upstream.Options{TLSConfig: c.tls.config(c.serverName(reqHost))}
}

func (c *serverConns) serverName(reqHost string) string {
	switch {
	case c.tls.fixedName != "":
		return c.tls.fixedName
	case c.tls.fromAddress:
		return c.host
	}
	if h, _, err := net.SplitHostPort(reqHost); err == nil {
		reqHost = h
	}
	return strings.TrimSuffix(strings.ToLower(reqHost), ".")
}

// pool returns the shared pool for a request with the given Host (the Host sent to the backend).
func (c *serverConns) pool(reqHost string) *upstream.Pool {
	if c.fixed != nil {
		return c.fixed
	}
	name := c.serverName(reqHost)
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.byName[name]
	if p == nil {
		if len(c.byName) >= maxSNIPools {
			// Too many names: fall back to the server's own.
			name = c.host
			if p = c.byName[name]; p != nil {
				return p
			}
		}
		p = upstream.NewPool(c.addr, upstream.Options{TLSConfig: c.tls.config(name)})
		c.byName[name] = p
	}
	return p
}

// Close closes every pool.
func (c *serverConns) Close() error {
	if c.fixed != nil {
		c.fixed.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.byName {
		p.Close()
	}
	return nil
}

// certStore holds the certificates of one Https port, chosen by SNI like listeners are by Host: an
// exact host name, then the longest wildcard, then the port's basic listener's (or the first).
type certStore struct {
	exact     map[string]*tls.Certificate
	wildcards []wildcardCert
	fallback  *tls.Certificate
}

type wildcardCert struct {
	suffix string
	cert   *tls.Certificate
}

func (cs *certStore) pick(serverName string) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c := cs.exact[name]; c != nil {
		return c, nil
	}
	for _, w := range cs.wildcards {
		if len(name) > len(w.suffix) && strings.HasSuffix(name, w.suffix) {
			return w.cert, nil
		}
	}
	if cs.fallback == nil {
		return nil, fmt.Errorf("no certificate for %q", serverName)
	}
	return cs.fallback, nil
}

// compileCerts builds the certificate stores of a gateway's Https ports.
func compileCerts(gw *fgv1.Gateway) (map[int32]*certStore, error) {
	parsed := map[string]*tls.Certificate{}
	for _, c := range gw.GetSslCertificates() {
		kp, err := config.ParseKeyPair(c.GetData())
		if err != nil {
			return nil, fmt.Errorf("ssl certificate %q: %w", c.GetName(), err)
		}
		parsed[c.GetName()] = &kp
	}
	out := map[int32]*certStore{}
	for _, l := range gw.GetHttpListeners() {
		if l.GetProtocol() != config.ProtocolHTTPS {
			continue
		}
		cert := parsed[l.GetSslCertificate()]
		if cert == nil {
			return nil, fmt.Errorf("listener %q: ssl certificate %q not found", l.GetName(), l.GetSslCertificate())
		}
		cs := out[l.GetPort()]
		if cs == nil {
			cs = &certStore{exact: map[string]*tls.Certificate{}}
			out[l.GetPort()] = cs
		}
		if len(l.GetHostNames()) == 0 || cs.fallback == nil {
			cs.fallback = cert // the basic listener's, else the first
		}
		for _, h := range l.GetHostNames() {
			h = strings.ToLower(h)
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				cs.wildcards = append(cs.wildcards, wildcardCert{suffix: suffix, cert: cert})
			} else {
				cs.exact[h] = cert
			}
		}
	}
	for _, cs := range out {
		sort.SliceStable(cs.wildcards, func(i, j int) bool { return len(cs.wildcards[i].suffix) > len(cs.wildcards[j].suffix) })
	}
	return out, nil
}
