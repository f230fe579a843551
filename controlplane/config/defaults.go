package config

import (
	"strings"

	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Defaults of optional fields, as Azure Application Gateway has them.
const (
	DefaultRequestTimeout     = 20 // seconds
	DefaultProbeInterval      = 30 // seconds
	DefaultProbeTimeout       = 30 // seconds
	DefaultUnhealthyThreshold = 3
	DefaultProbeHost          = "127.0.0.1"
	DefaultProbePath          = "/"
	DefaultStatusCodes        = "200-399"
)

// Canonical spellings of enumerated values.
const (
	ProtocolHTTP  = "Http"
	ProtocolHTTPS = "Https"
	ProtocolTCP   = "Tcp"
	ProtocolTLS   = "Tls"

	RuleBasic     = "Basic"
	RulePathBased = "PathBasedRouting"

	Enabled  = "Enabled"
	Disabled = "Disabled"

	DefaultAffinityCookieName = "ApplicationGatewayAffinity"
	DefaultDrainTimeout       = 30 // seconds, without connectionDraining
	DefaultL4IdleTimeout      = 20 // seconds, layer-4 backend settings' timeout
)

// Normalize fills in defaults and rewrites enumerated values to their canonical spelling, in place.
// Values it does not recognise are left as they are for Validate to report.
func Normalize(gw *fgv1.Gateway) {
	if gw.EnableHttp2 == nil {
		gw.EnableHttp2 = proto.Bool(true)
	}
	normalizeLimits(gw)
	for _, c := range gw.GetSslCertificates() {
		c.PublicCertData = "" // derived from data on get; never stored
	}
	for _, l := range gw.GetHttpListeners() {
		l.Protocol = canonical(l.Protocol, ProtocolHTTP, ProtocolHTTP, ProtocolHTTPS)
		if l.HostName != "" {
			l.HostNames = append([]string{l.HostName}, l.HostNames...)
			l.HostName = ""
		}
		for i, h := range l.HostNames {
			l.HostNames[i] = strings.ToLower(h)
		}
	}
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		s.Protocol = canonical(s.Protocol, ProtocolHTTP, ProtocolHTTP, ProtocolHTTPS)
		if s.RequestTimeout == nil {
			s.RequestTimeout = proto.Int32(DefaultRequestTimeout)
		}
		if s.ValidateCertChainAndExpiration == nil {
			s.ValidateCertChainAndExpiration = proto.Bool(true)
		}
		if s.ValidateSni == nil {
			s.ValidateSni = proto.Bool(true)
		}
		s.CookieBasedAffinity = canonical(s.CookieBasedAffinity, Disabled, Enabled, Disabled)
		if s.CookieBasedAffinity == Enabled && s.AffinityCookieName == "" {
			s.AffinityCookieName = DefaultAffinityCookieName
		}
	}
	for _, p := range gw.GetProbes() {
		p.Protocol = canonical(p.Protocol, ProtocolHTTP, ProtocolHTTP, ProtocolHTTPS, ProtocolTCP, ProtocolTLS)
		if p.Host == "" && !p.PickHostNameFromBackendHttpSettings {
			p.Host = DefaultProbeHost
		}
		if p.Path == "" {
			p.Path = DefaultProbePath
		}
		if p.Interval == nil {
			p.Interval = proto.Int32(DefaultProbeInterval)
		}
		if p.Timeout == nil {
			p.Timeout = proto.Int32(DefaultProbeTimeout)
		}
		if p.UnhealthyThreshold == nil {
			p.UnhealthyThreshold = proto.Int32(DefaultUnhealthyThreshold)
		}
		if p.Match == nil {
			p.Match = &fgv1.ProbeMatch{}
		}
		if len(p.Match.StatusCodes) == 0 {
			p.Match.StatusCodes = []string{DefaultStatusCodes}
		}
	}
	for _, r := range gw.GetRequestRoutingRules() {
		r.RuleType = canonical(r.RuleType, "", RuleBasic, RulePathBased)
	}
	for _, l := range gw.GetListeners() {
		l.Protocol = canonical(l.Protocol, "", ProtocolTCP, ProtocolTLS)
		for i, h := range l.HostNames {
			l.HostNames[i] = strings.ToLower(h)
		}
	}
	for _, s := range gw.GetBackendSettingsCollection() {
		s.Protocol = canonical(s.Protocol, ProtocolTCP, ProtocolTCP, ProtocolTLS)
		if s.Timeout == nil {
			s.Timeout = proto.Int32(DefaultL4IdleTimeout)
		}
	}
	for _, r := range gw.GetRoutingRules() {
		r.RuleType = canonical(r.RuleType, RuleBasic, RuleBasic)
	}
}

// canonical returns the allowed value equal to v ignoring case, def when v is empty, or v unchanged.
func canonical(v, def string, allowed ...string) string {
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	return v
}
