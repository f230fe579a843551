package route_test

import (
	"testing"

	"github.com/fleetgate/fleetgate/dataplane/route"
)

// The backend path override table of Azure's "Application Gateway backend settings" page (issue 4),
// every row, through real compiled routing tables.
func TestRewriteAzureTable(t *testing.T) {
	const basic = `
name: gw
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p}]
backendHttpSettingsCollection: [{name: s, port: 1, path: /override/}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`
	pathBased := func(rule string) string {
		return `
name: gw
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p}]
backendHttpSettingsCollection: [{name: s, port: 1, path: /override/}]
urlPathMaps:
  - name: m
    defaultBackendAddressPool: p
    defaultBackendHttpSettings: s
    pathRules: [{name: pr, paths: ["` + rule + `"], backendAddressPool: p, backendHttpSettings: s}]
requestRoutingRules: [{name: r, ruleType: PathBasedRouting, priority: 1, httpListener: l, urlPathMap: m}]
`
	}
	tests := []struct {
		doc, request, want string
	}{
		{basic, "/home/", "/override/home/"},
		{basic, "/home/secondhome/", "/override/home/secondhome/"},
		{pathBased("/pathrule*"), "/pathrule/home/", "/override/home/"},
		{pathBased("/pathrule*"), "/pathrule/home/secondhome/", "/override/home/secondhome/"},
		{pathBased("/pathrule*"), "/home/", "/override/home/"},
		{pathBased("/pathrule*"), "/home/secondhome/", "/override/home/secondhome/"},
		{pathBased("/pathrule/home*"), "/pathrule/home/", "/override/"},
		{pathBased("/pathrule/home*"), "/pathrule/home/secondhome/", "/override/secondhome/"},
		{pathBased("/pathrule/"), "/pathrule/", "/override/"},
	}
	for _, tt := range tests {
		tab := compile(t, tt.doc)
		target := tab.Match(80, "x", tt.request)
		if got := route.Rewrite(target, tt.request, "/override/"); got != tt.want {
			t.Errorf("rule %q, request %s: forwarded %s, want %s", target.Path, tt.request, got, tt.want)
		}
	}
	if got := route.Rewrite(&route.Target{}, "/a/b", ""); got != "/a/b" {
		t.Errorf("no override changed the path to %s", got)
	}
}
