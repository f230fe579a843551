package config

import (
	"fmt"
	"strings"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

var (
	l4Protocols = []string{ProtocolTCP, ProtocolTLS}
	l4RuleTypes = []string{RuleBasic}
)

// layer4 checks the layer-4 listeners, backend settings and rules, and what they share with the HTTP
// ones: names of listeners, settings and rules are unique across both kinds, a port belongs to one
// kind, priorities are unique across all rules, HTTP settings use HTTP probes and layer-4 settings
// Tcp or Tls ones.
func (v *validator) layer4(gw *fgv1.Gateway, certs, pools, probes, roots map[string]bool, priorities map[int32]int) {
	httpPorts := map[int32]int{}
	for i, l := range gw.GetHttpListeners() {
		httpPorts[l.GetPort()] = i
	}
	httpNames := names(gw.GetHttpListeners(), (*fgv1.HttpListener).GetName)
	uniqueNames(v, "listeners", gw.GetListeners(), (*fgv1.Listener).GetName)
	type portHost struct {
		port int32
		host string
	}
	claimed := map[portHost]int{}
	portProtocol := map[int32]int{}
	for i, l := range gw.GetListeners() {
		f := fmt.Sprintf("listeners[%d]", i)
		if httpNames[l.GetName()] {
			v.add(f+".name", fmt.Sprintf("%q is already the name of an HTTP listener", l.GetName()))
		}
		v.oneOf(f+".protocol", l.GetProtocol(), l4Protocols)
		v.port(f+".port", l.GetPort())
		if j, ok := httpPorts[l.GetPort()]; ok {
			v.add(f+".port", fmt.Sprintf("%d is already httpListeners[%d]'s: a port is either an HTTP or a layer-4 listener's", l.GetPort(), j))
		}
		if j, ok := portProtocol[l.GetPort()]; ok && gw.GetListeners()[j].GetProtocol() != l.GetProtocol() {
			v.add(f+".protocol", fmt.Sprintf("%s, but listeners[%d] on port %d is %s: listeners sharing a port share a protocol",
				l.GetProtocol(), j, l.GetPort(), gw.GetListeners()[j].GetProtocol()))
		} else if !ok {
			portProtocol[l.GetPort()] = i
		}
		switch {
		case l.GetProtocol() == ProtocolTLS:
			v.ref(f+".sslCertificate", l.GetSslCertificate(), certs, "sslCertificates", true)
		case l.GetSslCertificate() != "":
			v.add(f+".sslCertificate", "applies only to protocol Tls")
		}
		hosts := l.GetHostNames()
		if len(hosts) > 0 && l.GetProtocol() != ProtocolTLS {
			v.add(f+".hostNames", "apply only to protocol Tls (they match the SNI)")
		}
		if len(hosts) == 0 {
			hosts = []string{""}
		}
		for k, h := range hosts {
			hf := fmt.Sprintf("%s.hostNames[%d]", f, k)
			if h != "" && !validHostPattern(h) {
				v.add(hf, fmt.Sprintf("%q is not a host name", h))
				continue
			}
			key := portHost{l.GetPort(), h}
			if j, ok := claimed[key]; ok {
				v.add(f, fmt.Sprintf("port %d (SNI %q) is already served by listeners[%d]", l.GetPort(), h, j))
				continue
			}
			claimed[key] = i
		}
	}
	listeners := names(gw.GetListeners(), (*fgv1.Listener).GetName)

	httpSettings := names(gw.GetBackendHttpSettingsCollection(), (*fgv1.BackendHttpSettings).GetName)
	probeByName := map[string]*fgv1.Probe{}
	for _, p := range gw.GetProbes() {
		probeByName[p.GetName()] = p
	}
	for i, s := range gw.GetBackendHttpSettingsCollection() {
		if p := probeByName[s.GetProbe()]; p != nil && (p.GetProtocol() == ProtocolTCP || p.GetProtocol() == ProtocolTLS) {
			v.add(fmt.Sprintf("backendHttpSettingsCollection[%d].probe", i), fmt.Sprintf("probe %q is %s; HTTP settings take an Http or Https probe", p.GetName(), p.GetProtocol()))
		}
	}
	uniqueNames(v, "backendSettingsCollection", gw.GetBackendSettingsCollection(), (*fgv1.BackendSettings).GetName)
	for i, s := range gw.GetBackendSettingsCollection() {
		f := fmt.Sprintf("backendSettingsCollection[%d]", i)
		if httpSettings[s.GetName()] {
			v.add(f+".name", fmt.Sprintf("%q is already the name of backendHttpSettingsCollection entry", s.GetName()))
		}
		v.port(f+".port", s.GetPort())
		v.oneOf(f+".protocol", s.GetProtocol(), l4Protocols)
		v.rangeOpt(f+".timeout", s.Timeout, MinTimeout, MaxTimeout)
		v.ref(f+".probe", s.GetProbe(), probes, "probes", false)
		if p := probeByName[s.GetProbe()]; p != nil && p.GetProtocol() != ProtocolTCP && p.GetProtocol() != ProtocolTLS {
			v.add(f+".probe", fmt.Sprintf("probe %q is %s; layer-4 settings take a Tcp or Tls probe", p.GetName(), p.GetProtocol()))
		}
		for k, r := range s.GetTrustedRootCertificates() {
			v.ref(fmt.Sprintf("%s.trustedRootCertificates[%d]", f, k), r, roots, "trustedRootCertificates", true)
		}
		if s.GetProtocol() != ProtocolTLS && (len(s.GetTrustedRootCertificates()) > 0 || s.GetHostName() != "" || s.GetPickHostNameFromBackendAddress()) {
			v.add(f, "trustedRootCertificates, hostName and pickHostNameFromBackendAddress apply only to protocol Tls")
		}
		if h := s.GetHostName(); h != "" {
			if s.GetPickHostNameFromBackendAddress() {
				v.add(f+".hostName", "must be empty when pickHostNameFromBackendAddress is true")
			} else if !hostRE.MatchString(strings.ToLower(h)) {
				v.add(f+".hostName", fmt.Sprintf("%q is not a host name", h))
			}
		}
	}
	l4Settings := names(gw.GetBackendSettingsCollection(), (*fgv1.BackendSettings).GetName)

	httpRules := names(gw.GetRequestRoutingRules(), (*fgv1.RequestRoutingRule).GetName)
	uniqueNames(v, "routingRules", gw.GetRoutingRules(), (*fgv1.RoutingRule).GetName)
	listenerRule := map[string]int{}
	for i, r := range gw.GetRoutingRules() {
		f := fmt.Sprintf("routingRules[%d]", i)
		if httpRules[r.GetName()] {
			v.add(f+".name", fmt.Sprintf("%q is already the name of a request routing rule", r.GetName()))
		}
		v.oneOf(f+".ruleType", r.GetRuleType(), l4RuleTypes)
		switch {
		case r.Priority == nil:
			v.add(f+".priority", fmt.Sprintf("is required (%d-%d)", MinPriority, MaxPriority))
		case r.GetPriority() < MinPriority || r.GetPriority() > MaxPriority:
			v.add(f+".priority", fmt.Sprintf("%d is out of range %d-%d", r.GetPriority(), MinPriority, MaxPriority))
		default:
			if j, ok := priorities[r.GetPriority()]; ok {
				v.add(f+".priority", fmt.Sprintf("%d is already the priority of requestRoutingRules[%d]", r.GetPriority(), j))
			}
			for k, other := range gw.GetRoutingRules()[:i] {
				if other.GetPriority() == r.GetPriority() {
					v.add(f+".priority", fmt.Sprintf("%d is already the priority of routingRules[%d]", r.GetPriority(), k))
				}
			}
		}
		v.ref(f+".listener", r.GetListener(), listeners, "listeners", true)
		if l := r.GetListener(); l != "" {
			if j, ok := listenerRule[l]; ok {
				v.add(f+".listener", fmt.Sprintf("%q is already used by routingRules[%d]; a listener serves one rule", l, j))
			}
			listenerRule[l] = i
		}
		v.ref(f+".backendAddressPool", r.GetBackendAddressPool(), pools, "backendAddressPools", true)
		v.ref(f+".backendSettings", r.GetBackendSettings(), l4Settings, "backendSettingsCollection", true)
	}
}
