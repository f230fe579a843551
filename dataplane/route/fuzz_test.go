package route_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/route"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// FuzzMatchRewrite builds a routing table from fuzzed path rules (one per line of rules; lines the
// validator refuses are dropped, as an apply would refuse them) and matches a fuzzed host and path.
// Match must never panic and must agree with a naive reference: for the path, an exact rule
// first, else the longest matching prefix rule, else the map's default; for the host, an exact
// multi-site name, else the longest matching wildcard, else the basic listener. Rewrite, with a
// valid override, must give a path starting with '/' that adds no query and keeps the part of the
// path the rule did not match.
func FuzzMatchRewrite(f *testing.F) {
	f.Add("/images/*\n/images/hd/*\n/video", "/images/hd/cat.png", "api.example.com", "/override/")
	f.Add("/pathrule*\n/pathrule/home*", "/pathrule/home/secondhome/", "x.example.com:8080", "/override/")
	f.Add("/*\n/\n/a", "/a", "", "/")
	f.Add("/a/*\n/a/b*\n/a/b/c", "/a/b/c/d?x", "API.EXAMPLE.COM.", "/o")
	f.Add("", "", "[::1]:80", "")
	f.Add("/x", "/x", ".eu.example.com", "/")
	f.Fuzz(func(t *testing.T, rules, path, host, override string) {
		var patterns []string
		seen := map[string]bool{}
		for _, p := range strings.Split(rules, "\n") {
			if validPattern(p) && !seen[p] {
				seen[p] = true
				patterns = append(patterns, p)
			}
		}
		gw := fuzzGateway(patterns)
		config.Normalize(gw)
		if err := config.Validate(gw); err != nil {
			t.Fatalf("gateway built from valid patterns %q is invalid: %v", patterns, err)
		}
		tab, err := route.Compile(gw)
		if err != nil {
			t.Fatal(err)
		}
		for _, port := range []int32{80, 81, 82} {
			tab.Match(port, host, path) // never panics, whatever the port
		}

		// Host selection on port 80.
		got := tab.Match(80, host, path)
		if want := refListener(host); got == nil || got.Listener != want {
			t.Fatalf("Match(80, %q) = %+v, want listener %q", host, got, want)
		}

		// Path selection on port 81 (PathBasedRouting).
		tg := tab.Match(81, host, path)
		if tg == nil {
			t.Fatalf("Match(81, %q, %q) = nil, want a target", host, path)
		}
		if want := refPath(patterns, path); tg.Path != want {
			t.Fatalf("rules %q, path %q: matched %q, want %q", patterns, path, tg.Path, want)
		}

		// Path override.
		if !validOverride(override) {
			override = "/override/"
		}
		if out := route.Rewrite(tg, path, ""); out != path {
			t.Fatalf("Rewrite without override changed %q to %q", path, out)
		}
		out := route.Rewrite(tg, path, override)
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Rewrite(%q, %q, %q) = %q: does not start with '/'", tg.Path, path, override, out)
		}
		if strings.ContainsAny(out, "?#") && !strings.ContainsAny(path, "?#") {
			t.Fatalf("Rewrite(%q, %q, %q) = %q: a query or fragment appeared", tg.Path, path, override, out)
		}
		if !strings.HasPrefix(out, strings.TrimSuffix(override, "/")) {
			t.Fatalf("Rewrite(%q, %q, %q) = %q: does not start with the override", tg.Path, path, override, out)
		}
		rest := path
		switch {
		case tg.Path == "":
		case strings.HasSuffix(tg.Path, "*"):
			rest = path[len(tg.Path)-1:]
		default:
			rest = ""
		}
		if rest = strings.TrimPrefix(rest, "/"); !strings.HasSuffix(out, rest) {
			t.Fatalf("Rewrite(%q, %q, %q) = %q: lost the unmatched %q", tg.Path, path, override, out, rest)
		}
	})
}

// fuzzGateway has, on port 80, an exact, a wildcard, a deeper wildcard and a basic listener, and on
// port 81 a path map with one rule per pattern.
func fuzzGateway(patterns []string) *fgv1.Gateway {
	rule := func(name, listener string, prio int32) *fgv1.RequestRoutingRule {
		return &fgv1.RequestRoutingRule{Name: name, RuleType: config.RuleBasic, Priority: proto.Int32(prio),
			HttpListener: listener, BackendAddressPool: "p", BackendHttpSettings: "s"}
	}
	m := &fgv1.UrlPathMap{Name: "m", DefaultBackendAddressPool: "p", DefaultBackendHttpSettings: "s"}
	for i, p := range patterns {
		m.PathRules = append(m.PathRules, &fgv1.PathRule{Name: fmt.Sprintf("r%d", i), Paths: []string{p},
			BackendAddressPool: "p", BackendHttpSettings: "s"})
	}
	return &fgv1.Gateway{
		Name: "gw",
		HttpListeners: []*fgv1.HttpListener{
			{Name: "basic", Port: 80},
			{Name: "exact", Port: 80, HostNames: []string{"api.example.com"}},
			{Name: "wild", Port: 80, HostNames: []string{"*.example.com"}},
			{Name: "deep", Port: 80, HostNames: []string{"*.eu.example.com"}},
			{Name: "paths", Port: 81},
		},
		BackendAddressPools:           []*fgv1.BackendAddressPool{{Name: "p"}},
		BackendHttpSettingsCollection: []*fgv1.BackendHttpSettings{{Name: "s", Port: 9000}},
		UrlPathMaps:                   []*fgv1.UrlPathMap{m},
		RequestRoutingRules: []*fgv1.RequestRoutingRule{
			rule("r-basic", "basic", 1), rule("r-exact", "exact", 2), rule("r-wild", "wild", 3), rule("r-deep", "deep", 4),
			{Name: "r-paths", RuleType: config.RulePathBased, Priority: proto.Int32(5), HttpListener: "paths", UrlPathMap: "m"},
		},
	}
}

// validPattern is what the validator accepts as a path rule path.
func validPattern(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.Contains(strings.TrimSuffix(p, "*"), "*") && !strings.ContainsAny(p, "?#")
}

func validOverride(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.ContainsAny(p, "?#*")
}

// refPath is the naive reference of path rule matching: the pattern that wins ("" for the default).
func refPath(patterns []string, path string) string {
	for _, p := range patterns {
		if !strings.HasSuffix(p, "*") && p == path {
			return p
		}
	}
	best := ""
	for _, p := range patterns {
		prefix, ok := strings.CutSuffix(p, "*")
		if ok && strings.HasPrefix(path, prefix) && len(p) > len(best) {
			best = p
		}
	}
	return best
}

// refListener is the naive reference of host matching on port 80.
func refListener(host string) string {
	h := host
	if i := strings.LastIndex(h, ":"); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	// "*.example.com" matches names below example.com: something must come before the dot.
	below := func(suffix string) bool { return len(h) > len(suffix) && strings.HasSuffix(h, suffix) }
	switch {
	case h == "api.example.com":
		return "exact"
	case below(".eu.example.com"):
		return "deep"
	case below(".example.com"):
		return "wild"
	}
	return "basic"
}
