package health

import (
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/probe"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Key names a probed pair: a server under one backend settings.
type Key struct {
	Settings string
	Address  string // "host:port" with the settings' port, as config.ServerAddress
}

// Target is everything needed to probe one pair.
type Target struct {
	Key
	Spec       probe.Spec
	Interval   time.Duration
	Threshold  int
	MinServers int
	// Fingerprint changes when anything that affects probing changes.
	Fingerprint string
}

// Targets lists one target per unique (server, backend settings) pair that a rule uses, with the
// settings' custom probe or, without one, the default probe: the settings' protocol and port,
// Host 127.0.0.1 (or the settings' host name), path /, every 30 s, timeout 30 s, 3 failures,
// healthy on 200-399.
func Targets(gw *fgv1.Gateway) ([]Target, error) {
	probes := map[string]*fgv1.Probe{}
	for _, p := range gw.GetProbes() {
		probes[p.GetName()] = p
	}
	seen := map[Key]bool{}
	var out []Target
	for _, pu := range config.PoolUses(gw) {
		for _, set := range pu.Settings {
			tlsRoots, fp, err := config.RootPool(gw, set)
			if err != nil {
				return nil, fmt.Errorf("backend settings %q: %w", set.GetName(), err)
			}
			for _, a := range pu.Pool.GetBackendAddresses() {
				k := Key{Settings: set.GetName(), Address: config.ServerAddress(a, set.GetPort())}
				if seen[k] {
					continue
				}
				seen[k] = true
				t := target(k, a, set, probes[set.GetProbe()])
				if t.Spec.Protocol == config.ProtocolHTTPS {
					// The same TLS checks as traffic meets.
					t.Spec.RootCAs, t.Spec.CustomRoots = tlsRoots, tlsRoots != nil
					t.Spec.ServerName = set.GetSniName()
					t.Spec.SkipChainCheck = !set.GetValidateCertChainAndExpiration() && set.ValidateCertChainAndExpiration != nil
					t.Spec.SkipNameCheck = !set.GetValidateSni() && set.ValidateSni != nil
				}
				t.Fingerprint = fmt.Sprintf("%s|%s|%d|%s|%s|%s|%v|%v|%d|%s|%s|%v|%v", t.Spec.Protocol, t.Spec.Host, t.Spec.Port,
					t.Spec.HostHeader, t.Spec.Path, t.Spec.ServerName, t.Spec.Timeout, t.Interval, t.Threshold,
					fmt.Sprint(t.Spec.Match), fp, t.Spec.SkipChainCheck, t.Spec.SkipNameCheck)
				out = append(out, t)
			}
		}
		for _, set := range pu.L4Settings {
			roots, fp, err := l4Roots(gw, set)
			if err != nil {
				return nil, fmt.Errorf("backend settings %q: %w", set.GetName(), err)
			}
			for _, a := range pu.Pool.GetBackendAddresses() {
				k := Key{Settings: set.GetName(), Address: config.ServerAddress(a, set.GetPort())}
				if seen[k] {
					continue
				}
				seen[k] = true
				t := l4Target(k, a, set, probes[set.GetProbe()])
				if t.Spec.Protocol == config.ProtocolTLS {
					t.Spec.RootCAs, t.Spec.CustomRoots = roots, roots != nil
				}
				t.Fingerprint = fmt.Sprintf("l4|%s|%s|%d|%s|%v|%v|%d|%s", t.Spec.Protocol, t.Spec.Host, t.Spec.Port,
					t.Spec.ServerName, t.Spec.Timeout, t.Interval, t.Threshold, fp)
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// l4Target is the probe of a layer-4 pair: the custom probe (Tcp or Tls), or by default the
// settings' protocol on their port, every 30 s, timeout 30 s, 3 failures.
func l4Target(k Key, a *fgv1.BackendAddress, set *fgv1.BackendSettings, p *fgv1.Probe) Target {
	host := a.GetIpAddress() + a.GetFqdn()
	t := Target{Key: k, Spec: probe.Spec{Host: host, Port: int(set.GetPort()), Protocol: set.GetProtocol()}}
	t.Spec.ServerName = set.GetHostName()
	if t.Spec.ServerName == "" {
		t.Spec.ServerName = host
	}
	t.Spec.Timeout = config.DefaultProbeTimeout * time.Second
	t.Interval = config.DefaultProbeInterval * time.Second
	t.Threshold = config.DefaultUnhealthyThreshold
	if p != nil {
		t.Spec.Protocol = p.GetProtocol()
		if p.Port != nil {
			t.Spec.Port = int(p.GetPort())
		}
		t.Spec.Timeout = time.Duration(p.GetTimeout()) * time.Second
		t.Interval = time.Duration(p.GetInterval()) * time.Second
		t.Threshold = int(p.GetUnhealthyThreshold())
		t.MinServers = int(p.GetMinServers())
	}
	return t
}

// l4Roots is the CA pool of layer-4 Tls settings: nil (system roots) when they name none.
func l4Roots(gw *fgv1.Gateway, set *fgv1.BackendSettings) (*x509.CertPool, string, error) {
	if len(set.GetTrustedRootCertificates()) == 0 {
		return nil, "", nil
	}
	// The same trusted roots, looked up through HTTP settings naming them.
	return config.RootPool(gw, &fgv1.BackendHttpSettings{TrustedRootCertificates: set.GetTrustedRootCertificates()})
}

func target(k Key, a *fgv1.BackendAddress, set *fgv1.BackendHttpSettings, p *fgv1.Probe) Target {
	host := a.GetIpAddress()
	if host == "" {
		host = a.GetFqdn()
	}
	// The Host the settings send to the backend, if they override it.
	settingsHost := set.GetHostName()
	if set.GetPickHostNameFromBackendAddress() {
		settingsHost = host
	}
	t := Target{Key: k, Spec: probe.Spec{Host: host, Port: int(set.GetPort())}}
	if p == nil {
		t.Spec.Protocol = set.GetProtocol()
		t.Spec.HostHeader = config.DefaultProbeHost
		if settingsHost != "" {
			t.Spec.HostHeader = settingsHost
		}
		t.Spec.Path = config.DefaultProbePath
		t.Spec.Timeout = config.DefaultProbeTimeout * time.Second
		t.Spec.Match = probe.Match{Status: [][2]int{{200, 399}}}
		t.Interval = config.DefaultProbeInterval * time.Second
		t.Threshold = config.DefaultUnhealthyThreshold
		return t
	}
	t.Spec.Protocol = p.GetProtocol()
	t.Spec.HostHeader = p.GetHost()
	if p.GetPickHostNameFromBackendHttpSettings() {
		t.Spec.HostHeader = settingsHost
	}
	if p.Port != nil {
		t.Spec.Port = int(p.GetPort())
	}
	t.Spec.Path = p.GetPath()
	t.Spec.Timeout = time.Duration(p.GetTimeout()) * time.Second
	t.Interval = time.Duration(p.GetInterval()) * time.Second
	t.Threshold = int(p.GetUnhealthyThreshold())
	t.MinServers = int(p.GetMinServers())
	for _, c := range p.GetMatch().GetStatusCodes() {
		if lo, hi, err := config.ParseStatusRange(c); err == nil {
			t.Spec.Match.Status = append(t.Spec.Match.Status, [2]int{lo, hi})
		}
	}
	t.Spec.Match.Body = p.GetMatch().GetBody()
	return t
}

// ServerHost returns the host part of a key's address.
func (k Key) ServerHost() string {
	h, _, _ := net.SplitHostPort(k.Address)
	return h
}

// Port returns the port of a key's address.
func (k Key) Port() int {
	_, p, _ := net.SplitHostPort(k.Address)
	n, _ := strconv.Atoi(p)
	return n
}
