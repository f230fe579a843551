package route_test

import (
	"fmt"
	"strings"
	"testing"
)

// Host lookup as multi-site listeners grow: one listener (and Basic rule) per host name on one port,
// beside a basic listener, the request for the middle one. scripts/bench.sh prints these beside
// BenchmarkMatchPaths (BENCH=routing).
//
//   - exact: "h<i>.example.com" names, one map probe.
//   - wildcard: "*.h<i>.example.com" names, the request for "www.h<n/2>.example.com".
//   - wildcard-miss: the same table, a host no wildcard takes (falls to the basic listener): every
//     wildcard is tried.
func BenchmarkMatchHosts(b *testing.B) {
	for _, kind := range []string{"exact", "wildcard", "wildcard-miss"} {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				pattern, host := "h%d.example.com", fmt.Sprintf("h%d.example.com", n/2)
				switch kind {
				case "wildcard":
					pattern, host = "*.h%d.example.com", fmt.Sprintf("www.h%d.example.com", n/2)
				case "wildcard-miss":
					pattern, host = "*.h%d.example.com", "www.nomatch.example.com"
				}
				tab := compile(b, hostsDoc(n, pattern))
				want := "r0"
				if kind != "wildcard-miss" {
					want = fmt.Sprintf("r%d", n/2+1)
				}
				if got := tab.Match(80, host, "/"); got == nil || got.Rule != want {
					b.Fatalf("Match(%q) = %v, want rule %s", host, got, want)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if tab.Match(80, host, "/") == nil {
						b.Fatal("no match")
					}
				}
			})
		}
	}
}

// hostsDoc is a gateway with a basic listener (rule r0) and n multi-site listeners on port 80, the
// i-th (rule r<i+1>) taking fmt.Sprintf(pattern, i).
func hostsDoc(n int, pattern string) string {
	var d strings.Builder
	d.WriteString(`name: gw
backendAddressPools: [{name: p}]
backendHttpSettingsCollection: [{name: s, port: 1}]
httpListeners:
  - {name: l0, port: 80}
`)
	for i := range n {
		fmt.Fprintf(&d, "  - {name: l%d, port: 80, hostNames: [%q]}\n", i+1, fmt.Sprintf(pattern, i))
	}
	d.WriteString("requestRoutingRules:\n")
	for i := range n + 1 {
		fmt.Fprintf(&d, "  - {name: r%d, ruleType: Basic, priority: %d, httpListener: l%d, backendAddressPool: p, backendHttpSettings: s}\n", i, i+1, i)
	}
	return d.String()
}
