package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Ranges of numeric fields.
const (
	MinPort, MaxPort                       = 1, 65535
	MinTimeout, MaxTimeout                 = 1, 86400 // request timeout, probe interval and timeout (s)
	MinUnhealthyThreshold, MaxUnhealthyThr = 1, 20
	MinPriority, MaxPriority               = 1, 20000
	MinStatusCode, MaxStatusCode           = 100, 599
	MaxMinServers                          = 100
	MaxProbeBody                           = 4090    // bytes
	MinDrainTimeout, MaxDrainTimeout       = 1, 3600 // seconds
	MaxNameLength                          = 80
)

// Protocols each kind of object accepts today.
var (
	listenerProtocols = []string{ProtocolHTTP, ProtocolHTTPS}
	affinityValues    = []string{Enabled, Disabled}
	settingsProtocols = []string{ProtocolHTTP, ProtocolHTTPS}
	probeProtocols    = []string{ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolTLS}
	ruleTypes         = []string{RuleBasic, RulePathBased}
)

var (
	namePattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	cookieNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	// A DNS name: labels of letters, digits and '-', not starting or ending with '-'.
	hostLabel = `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`
	hostRE    = regexp.MustCompile(`^(` + hostLabel + `\.)*` + hostLabel + `\.?$`)
)

// Validate checks a normalized gateway and reports every invalid field at once, as a *ValidationError.
// It returns nil when the gateway is valid.
func Validate(gw *fgv1.Gateway) error {
	v := &validator{}
	v.name("name", gw.GetName())
	v.limits(gw.GetLimits())

	certs := v.sslCertificates(gw.GetSslCertificates())
	listeners := v.listeners(gw.GetHttpListeners(), certs)
	pools := names(gw.GetBackendAddressPools(), (*fgv1.BackendAddressPool).GetName)
	probes := names(gw.GetProbes(), (*fgv1.Probe).GetName)
	settings := names(gw.GetBackendHttpSettingsCollection(), (*fgv1.BackendHttpSettings).GetName)
	maps := names(gw.GetUrlPathMaps(), (*fgv1.UrlPathMap).GetName)

	roots := names(gw.GetTrustedRootCertificates(), (*fgv1.TrustedRootCertificate).GetName)
	uniqueNames(v, "trustedRootCertificates", gw.GetTrustedRootCertificates(), (*fgv1.TrustedRootCertificate).GetName)
	for i, r := range gw.GetTrustedRootCertificates() {
		if _, err := ParseCertificates(r.GetData()); err != nil {
			v.add(fmt.Sprintf("trustedRootCertificates[%d].data", i), err.Error())
		}
	}
	probeByName := map[string]*fgv1.Probe{}
	for _, p := range gw.GetProbes() {
		probeByName[p.GetName()] = p
	}
	uniqueNames(v, "backendAddressPools", gw.GetBackendAddressPools(), (*fgv1.BackendAddressPool).GetName)
	for i, p := range gw.GetBackendAddressPools() {
		v.pool(fmt.Sprintf("backendAddressPools[%d]", i), p)
	}
	uniqueNames(v, "probes", gw.GetProbes(), (*fgv1.Probe).GetName)
	for i, p := range gw.GetProbes() {
		v.probe(fmt.Sprintf("probes[%d]", i), p)
	}
	uniqueNames(v, "backendHttpSettingsCollection", gw.GetBackendHttpSettingsCollection(), (*fgv1.BackendHttpSettings).GetName)
	for i, s := range gw.GetBackendHttpSettingsCollection() {
		f := fmt.Sprintf("backendHttpSettingsCollection[%d]", i)
		v.port(f+".port", s.GetPort())
		v.oneOf(f+".protocol", s.GetProtocol(), settingsProtocols)
		v.rangeOpt(f+".requestTimeout", s.RequestTimeout, MinTimeout, MaxTimeout)
		v.ref(f+".probe", s.GetProbe(), probes, "probes", false)
		v.settingsHost(f, s, probeByName[s.GetProbe()])
		for k, r := range s.GetTrustedRootCertificates() {
			v.ref(fmt.Sprintf("%s.trustedRootCertificates[%d]", f, k), r, roots, "trustedRootCertificates", true)
		}
		if len(s.GetTrustedRootCertificates()) > 0 && s.GetProtocol() != ProtocolHTTPS {
			v.add(f+".trustedRootCertificates", "apply only to protocol Https")
		}
		if p := s.GetPath(); p != "" && (!strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#*")) {
			v.add(f+".path", fmt.Sprintf("%q must start with '/' and hold no '?', '#' or '*'", p))
		}
		if n := s.GetSniName(); n != "" && !hostRE.MatchString(strings.ToLower(n)) {
			v.add(f+".sniName", fmt.Sprintf("%q is not a host name", n))
		}
		if s.GetCookieBasedAffinity() != "" {
			v.oneOf(f+".cookieBasedAffinity", s.GetCookieBasedAffinity(), affinityValues)
		}
		if n := s.GetAffinityCookieName(); n != "" && !cookieNameRE.MatchString(n) {
			v.add(f+".affinityCookieName", fmt.Sprintf("%q is not a cookie name (1-64 letters, digits, '-', '_', '.')", n))
		}
		if cd := s.GetConnectionDraining(); cd.GetEnabled() || cd.GetDrainTimeoutInSec() != 0 {
			if t := cd.GetDrainTimeoutInSec(); t < MinDrainTimeout || t > MaxDrainTimeout {
				v.add(f+".connectionDraining.drainTimeoutInSec", fmt.Sprintf("%d is out of range %d-%d", t, MinDrainTimeout, MaxDrainTimeout))
			}
		}
		if s.GetDedicatedBackendConnection() && gw.GetEnableHttp2() {
			v.add(f+".dedicatedBackendConnection", "needs enableHttp2: false (HTTP/2 multiplexes clients on one connection)")
		}
	}
	uniqueNames(v, "urlPathMaps", gw.GetUrlPathMaps(), (*fgv1.UrlPathMap).GetName)
	for i, m := range gw.GetUrlPathMaps() {
		f := fmt.Sprintf("urlPathMaps[%d]", i)
		v.ref(f+".defaultBackendAddressPool", m.GetDefaultBackendAddressPool(), pools, "backendAddressPools", true)
		v.ref(f+".defaultBackendHttpSettings", m.GetDefaultBackendHttpSettings(), settings, "backendHttpSettingsCollection", true)
		uniqueNames(v, f+".pathRules", m.GetPathRules(), (*fgv1.PathRule).GetName)
		seen := map[string]bool{}
		for j, r := range m.GetPathRules() {
			rf := fmt.Sprintf("%s.pathRules[%d]", f, j)
			if len(r.GetPaths()) == 0 {
				v.add(rf+".paths", "at least one path is required")
			}
			for k, p := range r.GetPaths() {
				pf := fmt.Sprintf("%s.paths[%d]", rf, k)
				if v.path(pf, p) {
					if seen[p] {
						v.add(pf, fmt.Sprintf("path %q appears more than once in the map", p))
					}
					seen[p] = true
				}
			}
			v.ref(rf+".backendAddressPool", r.GetBackendAddressPool(), pools, "backendAddressPools", true)
			v.ref(rf+".backendHttpSettings", r.GetBackendHttpSettings(), settings, "backendHttpSettingsCollection", true)
		}
	}
	priorities := v.rules(gw.GetRequestRoutingRules(), listeners, pools, settings, maps)
	v.layer4(gw, certs, pools, probes, roots, priorities)

	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: v.errs}
}

type validator struct {
	errs []FieldError
}

func (v *validator) add(field, desc string) {
	v.errs = append(v.errs, FieldError{Field: field, Description: desc})
}

func (v *validator) name(field, s string) {
	switch {
	case s == "":
		v.add(field, "is required")
	case len(s) > MaxNameLength:
		v.add(field, fmt.Sprintf("%d characters is longer than %d", len(s), MaxNameLength))
	case !namePattern.MatchString(s):
		v.add(field, fmt.Sprintf("%q must start with a letter or digit and hold only letters, digits, '.', '_' and '-'", s))
	}
}

func (v *validator) port(field string, p int32) {
	if p < MinPort || p > MaxPort {
		v.add(field, fmt.Sprintf("%d is out of range %d-%d", p, MinPort, MaxPort))
	}
}

func (v *validator) rangeOpt(field string, p *int32, lo, hi int32) {
	if p != nil && (*p < lo || *p > hi) {
		v.add(field, fmt.Sprintf("%d is out of range %d-%d", *p, lo, hi))
	}
}

func (v *validator) oneOf(field, s string, allowed []string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.add(field, fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", ")))
}

// ref checks that a reference names an existing object.
func (v *validator) ref(field, name string, known map[string]bool, kind string, required bool) {
	switch {
	case name == "" && required:
		v.add(field, "is required")
	case name != "" && !known[name]:
		v.add(field, fmt.Sprintf("%q does not name any of %s", name, kind))
	}
}

func (v *validator) path(field, p string) bool {
	switch {
	case !strings.HasPrefix(p, "/"):
		v.add(field, fmt.Sprintf("%q must start with '/'", p))
	case strings.Contains(strings.TrimSuffix(p, "*"), "*"):
		v.add(field, fmt.Sprintf("%q may hold '*' only at the end", p))
	case strings.ContainsAny(p, "?#"):
		v.add(field, fmt.Sprintf("%q must not hold a query or fragment", p))
	default:
		return true
	}
	return false
}

func names[T any](items []T, name func(T) string) map[string]bool {
	m := make(map[string]bool, len(items))
	for _, it := range items {
		m[name(it)] = true
	}
	return m
}

// uniqueNames checks that every item of a list has a valid name, different from the others'.
func uniqueNames[T any](v *validator, field string, items []T, name func(T) string) {
	seen := make(map[string]int, len(items))
	for i, it := range items {
		n := name(it)
		f := fmt.Sprintf("%s[%d].name", field, i)
		v.name(f, n)
		if j, ok := seen[n]; ok && n != "" {
			v.add(f, fmt.Sprintf("%q is already the name of %s[%d]", n, field, j))
		}
		seen[n] = i
	}
}

// sslCertificates checks each listener certificate: a PEM chain and its private key, already read
// from any files by the client.
func (v *validator) sslCertificates(cs []*fgv1.SslCertificate) map[string]bool {
	uniqueNames(v, "sslCertificates", cs, (*fgv1.SslCertificate).GetName)
	for i, c := range cs {
		f := fmt.Sprintf("sslCertificates[%d]", i)
		if c.GetCertFile() != "" || c.GetKeyFile() != "" {
			v.add(f, "certFile and keyFile are read by gatewayctl apply; send their contents as data")
			continue
		}
		if _, err := ParseKeyPair(c.GetData()); err != nil {
			v.add(f+".data", err.Error())
		}
	}
	return names(cs, (*fgv1.SslCertificate).GetName)
}

func (v *validator) listeners(ls []*fgv1.HttpListener, certs map[string]bool) map[string]bool {
	uniqueNames(v, "httpListeners", ls, (*fgv1.HttpListener).GetName)
	portProtocol := map[int32]int{}
	type portHost struct {
		port int32
		host string
	}
	claimed := map[portHost]int{}
	for i, l := range ls {
		f := fmt.Sprintf("httpListeners[%d]", i)
		v.oneOf(f+".protocol", l.GetProtocol(), listenerProtocols)
		v.port(f+".port", l.GetPort())
		if j, ok := portProtocol[l.GetPort()]; ok && ls[j].GetProtocol() != l.GetProtocol() {
			v.add(f+".protocol", fmt.Sprintf("%s, but httpListeners[%d] on port %d is %s: listeners sharing a port share a protocol",
				l.GetProtocol(), j, l.GetPort(), ls[j].GetProtocol()))
		} else if !ok {
			portProtocol[l.GetPort()] = i
		}
		switch {
		case l.GetProtocol() == ProtocolHTTPS:
			v.ref(f+".sslCertificate", l.GetSslCertificate(), certs, "sslCertificates", true)
		case l.GetSslCertificate() != "":
			v.add(f+".sslCertificate", "applies only to protocol Https")
		}
		hosts := l.GetHostNames()
		basic := len(hosts) == 0
		if basic {
			hosts = []string{""} // the basic listener claims the empty host of its port
		}
		for k, h := range hosts {
			hf := fmt.Sprintf("%s.hostNames[%d]", f, k)
			// An empty entry in a non-empty hostNames is an error, not a hidden basic listener.
			if !basic && !validHostPattern(h) {
				v.add(hf, fmt.Sprintf("%q is not a host name (letters, digits, '-' and '.', optionally starting with \"*.\")", h))
				continue
			}
			key := portHost{l.GetPort(), h}
			if j, ok := claimed[key]; ok && j != i {
				if h == "" {
					v.add(f, fmt.Sprintf("port %d already has a basic listener, httpListeners[%d]", l.GetPort(), j))
				} else {
					v.add(hf, fmt.Sprintf("%q on port %d is already served by httpListeners[%d]", h, l.GetPort(), j))
				}
				continue
			}
			claimed[key] = i
		}
	}
	return names(ls, (*fgv1.HttpListener).GetName)
}

func validHostPattern(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	return len(h) <= 253 && hostRE.MatchString(h)
}

func (v *validator) pool(f string, p *fgv1.BackendAddressPool) {
	for j, a := range p.GetBackendAddresses() {
		af := fmt.Sprintf("%s.backendAddresses[%d]", f, j)
		switch {
		case a.GetIpAddress() != "" && a.GetFqdn() != "":
			v.add(af, "set ipAddress or fqdn, not both")
		case a.GetIpAddress() != "":
			if _, err := netip.ParseAddr(a.GetIpAddress()); err != nil {
				v.add(af+".ipAddress", fmt.Sprintf("%q is not an IP address", a.GetIpAddress()))
			}
		case a.GetFqdn() != "":
			if len(a.GetFqdn()) > 253 || !hostRE.MatchString(strings.ToLower(a.GetFqdn())) {
				v.add(af+".fqdn", fmt.Sprintf("%q is not a domain name", a.GetFqdn()))
			}
		default:
			v.add(af, "one of ipAddress or fqdn is required")
		}
	}
}

// settingsHost checks the settings' host name choice, and that a probe picking its host from the
// settings has one to pick.
func (v *validator) settingsHost(f string, s *fgv1.BackendHttpSettings, p *fgv1.Probe) {
	if h := s.GetHostName(); h != "" {
		if s.GetPickHostNameFromBackendAddress() {
			v.add(f+".hostName", "must be empty when pickHostNameFromBackendAddress is true")
		} else if !hostRE.MatchString(strings.ToLower(h)) {
			if _, err := netip.ParseAddr(h); err != nil {
				v.add(f+".hostName", fmt.Sprintf("%q is not a host name or IP address", h))
			}
		}
	}
	if p.GetPickHostNameFromBackendHttpSettings() && s.GetHostName() == "" && !s.GetPickHostNameFromBackendAddress() {
		v.add(f+".probe", fmt.Sprintf("probe %q picks its host name from these settings, which set neither hostName nor pickHostNameFromBackendAddress", p.GetName()))
	}
}

func (v *validator) probe(f string, p *fgv1.Probe) {
	v.oneOf(f+".protocol", p.GetProtocol(), probeProtocols)
	if p.GetPickHostNameFromBackendHttpSettings() && p.GetHost() != "" {
		v.add(f+".host", "must be empty when pickHostNameFromBackendHttpSettings is true")
	}
	if p.GetHost() != "" && !hostRE.MatchString(strings.ToLower(p.GetHost())) {
		if _, err := netip.ParseAddr(p.GetHost()); err != nil {
			v.add(f+".host", fmt.Sprintf("%q is not a host name or IP address", p.GetHost()))
		}
	}
	if !strings.HasPrefix(p.GetPath(), "/") {
		v.add(f+".path", fmt.Sprintf("%q must start with '/'", p.GetPath()))
	}
	v.rangeOpt(f+".interval", p.Interval, MinTimeout, MaxTimeout)
	v.rangeOpt(f+".timeout", p.Timeout, MinTimeout, MaxTimeout)
	v.rangeOpt(f+".unhealthyThreshold", p.UnhealthyThreshold, MinUnhealthyThreshold, MaxUnhealthyThr)
	v.rangeOpt(f+".port", p.Port, MinPort, MaxPort)
	if m := p.GetMinServers(); m < 0 || m > MaxMinServers {
		v.add(f+".minServers", fmt.Sprintf("%d is out of range 0-%d", m, MaxMinServers))
	}
	for k, c := range p.GetMatch().GetStatusCodes() {
		if _, _, err := ParseStatusRange(c); err != nil {
			v.add(fmt.Sprintf("%s.match.statusCodes[%d]", f, k), err.Error())
		}
	}
	if n := len(p.GetMatch().GetBody()); n > MaxProbeBody {
		v.add(f+".match.body", fmt.Sprintf("%d bytes is longer than %d", n, MaxProbeBody))
	}
}

// ParseStatusRange parses "200" or "200-399" into an inclusive range within 100-599.
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not a status code or range like \"200-399\"", s)
	case lo < MinStatusCode || hi > MaxStatusCode || lo > hi:
		return 0, 0, fmt.Errorf("%q is out of range %d-%d", s, MinStatusCode, MaxStatusCode)
	}
	return lo, hi, nil
}

// rules checks the HTTP routing rules and returns the priorities they take (priority -> index).
func (v *validator) rules(rs []*fgv1.RequestRoutingRule, listeners, pools, settings, maps map[string]bool) map[int32]int {
	uniqueNames(v, "requestRoutingRules", rs, (*fgv1.RequestRoutingRule).GetName)
	priorities := map[int32]int{}
	listenerRule := map[string]int{}
	for i, r := range rs {
		f := fmt.Sprintf("requestRoutingRules[%d]", i)
		v.oneOf(f+".ruleType", r.GetRuleType(), ruleTypes)
		switch {
		case r.Priority == nil:
			v.add(f+".priority", fmt.Sprintf("is required (%d-%d)", MinPriority, MaxPriority))
		case r.GetPriority() < MinPriority || r.GetPriority() > MaxPriority:
			v.add(f+".priority", fmt.Sprintf("%d is out of range %d-%d", r.GetPriority(), MinPriority, MaxPriority))
		default:
			if j, ok := priorities[r.GetPriority()]; ok {
				v.add(f+".priority", fmt.Sprintf("%d is already the priority of requestRoutingRules[%d]", r.GetPriority(), j))
			}
			priorities[r.GetPriority()] = i
		}
		v.ref(f+".httpListener", r.GetHttpListener(), listeners, "httpListeners", true)
		if l := r.GetHttpListener(); l != "" {
			if j, ok := listenerRule[l]; ok {
				v.add(f+".httpListener", fmt.Sprintf("%q is already used by requestRoutingRules[%d]; a listener serves one rule", l, j))
			}
			listenerRule[l] = i
		}
		switch r.GetRuleType() {
		case RuleBasic:
			v.ref(f+".backendAddressPool", r.GetBackendAddressPool(), pools, "backendAddressPools", true)
			v.ref(f+".backendHttpSettings", r.GetBackendHttpSettings(), settings, "backendHttpSettingsCollection", true)
			if r.GetUrlPathMap() != "" {
				v.add(f+".urlPathMap", "must be empty for a Basic rule")
			}
		case RulePathBased:
			v.ref(f+".urlPathMap", r.GetUrlPathMap(), maps, "urlPathMaps", true)
			if r.GetBackendAddressPool() != "" || r.GetBackendHttpSettings() != "" {
				v.add(f, "a PathBasedRouting rule takes its backends from its urlPathMap; backendAddressPool and backendHttpSettings must be empty")
			}
		}
	}
	return priorities
}
