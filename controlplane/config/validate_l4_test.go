package config_test

import (
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/config"
)

const l4Doc = `
name: gw
httpListeners: [{name: web, port: 8080}]
sslCertificates: [{name: c, data: %q}]
listeners:
  - {name: db, protocol: tcp, port: 5432}
  - {name: tls-a, protocol: Tls, port: 443, sslCertificate: c, hostNames: [a.test]}
  - {name: tls-b, protocol: Tls, port: 443, sslCertificate: c, hostNames: [b.test]}
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 127.0.0.10}]}]
backendHttpSettingsCollection: [{name: s, port: 80}]
backendSettingsCollection:
  - {name: tcp, port: 5432, probe: tcpprobe}
  - {name: tls, port: 443, protocol: Tls, hostName: backend.test}
probes: [{name: tcpprobe, protocol: Tcp, interval: 5}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: p, backendHttpSettings: s}]
routingRules:
  - {name: l4-db, priority: 2, listener: db, backendAddressPool: p, backendSettings: tcp}
  - {name: l4-a, priority: 3, listener: tls-a, backendAddressPool: p, backendSettings: tls}
  - {name: l4-b, priority: 4, listener: tls-b, backendAddressPool: p, backendSettings: tls}
`

func TestLayer4Valid(t *testing.T) {
	gw, err := config.Decode([]byte(strings.Replace(l4Doc, "%q", quoteYAML(testKeyPair), 1)))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatal(err)
	}
	if gw.GetListeners()[0].GetProtocol() != "Tcp" || gw.GetBackendSettingsCollection()[0].GetTimeout() != 20 || gw.GetRoutingRules()[0].GetRuleType() != "Basic" {
		t.Fatalf("defaults/canonical spelling: %v", gw)
	}
	uses := config.PoolUses(gw)
	if len(uses[0].L4Settings) != 2 {
		t.Fatalf("PoolUses L4Settings = %d, want 2", len(uses[0].L4Settings))
	}
}

func TestLayer4Errors(t *testing.T) {
	tests := []struct {
		name, from, to, field, desc string
	}{
		{"port shared with HTTP", "port: 5432}", "port: 8080}", "listeners[0].port", "a port is either an HTTP or a layer-4 listener's"},
		{"protocol", "protocol: tcp", "protocol: udp", "listeners[0].protocol", `"udp" is not one of Tcp, Tls`},
		{"Tls needs a certificate", "protocol: tcp, port: 5432}", "protocol: Tls, port: 5432}", "listeners[0].sslCertificate", "is required"},
		{"Tcp and Tls on one port", "{name: db, protocol: tcp, port: 5432}", "{name: db, protocol: tcp, port: 443}", "listeners[1].protocol", "listeners sharing a port share a protocol"},
		{"same SNI twice", "hostNames: [b.test]", "hostNames: [a.test]", "listeners[2]", "already served by listeners[1]"},
		{"priority shared with an HTTP rule", "priority: 2,", "priority: 1,", "routingRules[0].priority", "already the priority of requestRoutingRules[0]"},
		{"priority shared among layer-4 rules", "priority: 4,", "priority: 3,", "routingRules[2].priority", "already the priority of routingRules[1]"},
		{"settings name shared with HTTP settings", "name: tcp, port: 5432", "name: s, port: 5432", "backendSettingsCollection[0].name", "already the name of backendHttpSettingsCollection"},
		{"HTTP probe on layer-4 settings", "protocol: Tcp, interval", "protocol: Http, interval", "backendSettingsCollection[0].probe", "layer-4 settings take a Tcp or Tls probe"},
		{"timeout range", "{name: tcp, port: 5432,", "{name: tcp, port: 5432, timeout: 0,", "backendSettingsCollection[0].timeout", "0 is out of range 1-86400"},
		{"Tls fields on Tcp settings", "{name: tcp, port: 5432,", "{name: tcp, port: 5432, hostName: x.test,", "backendSettingsCollection[0]", "apply only to protocol Tls"},
		{"unknown listener", "listener: db,", "listener: nope,", "routingRules[0].listener", `"nope" does not name any of listeners`},
		{"unknown settings", "backendSettings: tcp}", "backendSettings: nope}", "routingRules[0].backendSettings", `"nope" does not name any of backendSettingsCollection`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(l4Doc, "%q", quoteYAML(testKeyPair), 1)
			if !strings.Contains(doc, tt.from) {
				t.Fatalf("test document lacks %q", tt.from)
			}
			gw, err := config.Decode([]byte(strings.Replace(doc, tt.from, tt.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			config.Normalize(gw)
			err = config.Validate(gw)
			if err == nil || !strings.Contains(err.Error(), tt.field+": ") || !strings.Contains(err.Error(), tt.desc) {
				t.Fatalf("Validate = %v\nwant %s: ...%s...", err, tt.field, tt.desc)
			}
		})
	}
}

func quoteYAML(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "\n", `\n`) + `"`
}
