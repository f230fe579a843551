package route_test

import (
	"fmt"
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/route"
)

const doc = `
name: gw
httpListeners:
  - {name: basic80, port: 80}
  - {name: api, port: 80, hostNames: [api.example.com]}
  - {name: wild, port: 80, hostNames: ["*.example.com"]}
  - {name: deepwild, port: 80, hostNames: ["*.eu.example.com"]}
  - {name: paths, port: 81}
  - {name: unrouted, port: 82}
backendAddressPools:
  - {name: web, backendAddresses: [{ipAddress: 127.0.0.10}]}
  - {name: api, backendAddresses: [{ipAddress: 127.0.0.11}]}
  - {name: images, backendAddresses: [{ipAddress: 127.0.0.12}]}
  - {name: video, backendAddresses: [{ipAddress: 127.0.0.13}]}
backendHttpSettingsCollection:
  - {name: s, port: 9000}
urlPathMaps:
  - name: m
    defaultBackendAddressPool: web
    defaultBackendHttpSettings: s
    pathRules:
      - {name: images, paths: ["/images/*"], backendAddressPool: images, backendHttpSettings: s}
      - {name: hd, paths: ["/images/hd/*", "/video"], backendAddressPool: video, backendHttpSettings: s}
requestRoutingRules:
  - {name: r-basic, ruleType: Basic, priority: 10, httpListener: basic80, backendAddressPool: web, backendHttpSettings: s}
  - {name: r-api, ruleType: Basic, priority: 20, httpListener: api, backendAddressPool: api, backendHttpSettings: s}
  - {name: r-wild, ruleType: Basic, priority: 30, httpListener: wild, backendAddressPool: images, backendHttpSettings: s}
  - {name: r-deep, ruleType: Basic, priority: 40, httpListener: deepwild, backendAddressPool: video, backendHttpSettings: s}
  - {name: r-paths, ruleType: PathBasedRouting, priority: 50, httpListener: paths, urlPathMap: m}
`

func compile(t testing.TB, doc string) *route.Table {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatal(err)
	}
	tab, err := route.Compile(gw)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestMatch(t *testing.T) {
	tab := compile(t, doc)
	tests := []struct {
		port       int32
		host, path string
		rule, pool string // rule "" means no match
		pathRule   string
	}{
		{80, "anything.test", "/", "r-basic", "web", ""},
		{80, "", "/", "r-basic", "web", ""},
		{80, "api.example.com", "/x", "r-api", "api", ""},
		{80, "API.Example.COM:80", "/x", "r-api", "api", ""},
		{80, "api.example.com.", "/x", "r-api", "api", ""},
		{80, "www.example.com", "/", "r-wild", "images", ""},
		{80, "a.b.example.com", "/", "r-wild", "images", ""},
		{80, "fr.eu.example.com", "/", "r-deep", "video", ""}, // longest wildcard wins
		{80, "example.com", "/", "r-basic", "web", ""},        // wildcard does not take the apex
		{80, "[::1]:80", "/", "r-basic", "web", ""},
		{81, "x", "/", "r-paths", "web", ""},
		{81, "x", "/images/", "r-paths", "images", "images"},
		{81, "x", "/images/cat.png", "r-paths", "images", "images"},
		{81, "x", "/images", "r-paths", "web", ""},              // "/images/*" needs the slash
		{81, "x", "/images/hd/1.png", "r-paths", "video", "hd"}, // longest prefix wins
		{81, "x", "/video", "r-paths", "video", "hd"},           // exact path
		{81, "x", "/video/1", "r-paths", "web", ""},             // exact path is not a prefix
		{82, "x", "/", "", "", ""},                              // listener without a rule
		{83, "x", "/", "", "", ""},                              // no listener
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s %s", tt.port, tt.host, tt.path), func(t *testing.T) {
			got := tab.Match(tt.port, tt.host, tt.path)
			if tt.rule == "" {
				if got != nil {
					t.Fatalf("Match = rule %q, want no match", got.Rule)
				}
				return
			}
			if got == nil {
				t.Fatalf("no match, want rule %q", tt.rule)
			}
			if pool := tab.Pairs()[got.Pair].Pool; got.Rule != tt.rule || pool != tt.pool || got.PathRule != tt.pathRule {
				t.Fatalf("Match = rule %q pool %q pathRule %q, want %q %q %q", got.Rule, pool, got.PathRule, tt.rule, tt.pool, tt.pathRule)
			}
		})
	}
	if ports := tab.Ports(); fmt.Sprint(ports) != "[80 81 82]" {
		t.Fatalf("Ports = %v", ports)
	}
}

// A port with only multi-site listeners answers no unknown host.
func TestMultiSiteOnlyRejectsUnknownHost(t *testing.T) {
	tab := compile(t, `
name: gw
httpListeners: [{name: a, port: 80, hostNames: [a.test]}]
backendAddressPools: [{name: p}]
backendHttpSettingsCollection: [{name: s, port: 1}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: a, backendAddressPool: p, backendHttpSettings: s}]
`)
	if got := tab.Match(80, "b.test", "/"); got != nil {
		t.Fatalf("unknown host matched rule %q", got.Rule)
	}
	if got := tab.Match(80, "a.test", "/"); got == nil || got.Rule != "r" {
		t.Fatalf("a.test did not match rule r: %v", got)
	}
}

// Lookup cost must stay flat as path rules grow: compare 10 and 10,000 rules in one run.
func BenchmarkMatchPaths(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			d := `
name: gw
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p}]
backendHttpSettingsCollection: [{name: s, port: 1}]
urlPathMaps:
  - name: m
    defaultBackendAddressPool: p
    defaultBackendHttpSettings: s
    pathRules:
`
			for i := range n {
				d += fmt.Sprintf("      - {name: r%d, paths: [\"/svc%d/api/*\"], backendAddressPool: p, backendHttpSettings: s}\n", i, i)
			}
			d += "requestRoutingRules: [{name: r, ruleType: PathBasedRouting, priority: 1, httpListener: l, urlPathMap: m}]\n"
			tab := compile(b, d)
			path := fmt.Sprintf("/svc%d/api/items/42", n/2)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if tab.Match(80, "example.com", path) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}
