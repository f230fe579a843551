// Package route is the data plane's routing table: compiled once per configuration from a gateway's
// listeners, rules and URL path maps, then read without locks on every request.
//
// A request is matched on (listener port, Host, path):
//   - Host: an exact multi-site host name first, then the longest matching wildcard ("*.example.com"
//     matches any name below example.com, not example.com itself), then the port's basic listener.
//     Lookups cost one map probe per label of the request's host name, however many names.
//   - Path (PathBasedRouting rules): an exact path first, then the longest prefix ("/images/*"), then the
//     URL path map's default. Lookups cost one map probe per distinct prefix length, however many rules.
package route

import (
	"fmt"
	"sort"
	"strings"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Pair is a backend pool used with a backend settings: what a request is finally sent to.
type Pair struct {
	Pool, Settings string
}

// Target is the result of a match.
type Target struct {
	Listener string
	Rule     string
	// PathRule is the matched path rule's name; empty for Basic rules and path-map defaults.
	PathRule string
	// Path is the matched path pattern as configured ("/images/*"); empty when none matched.
	Path string
	// Pair indexes Table.Pairs.
	Pair int
}

// Table is an immutable routing table.
type Table struct {
	ports map[int32]*portRoutes
	pairs []Pair
}

type portRoutes struct {
	exact     map[string]*listenerRoutes
	wildcards map[string]*listenerRoutes // by suffix: ".example.com" for "*.example.com"
	basic     *listenerRoutes
}

type listenerRoutes struct {
	basic *Target // Basic rule
	paths *pathMap
}

type pathMap struct {
	exact    map[string]*Target
	prefix   map[string]*Target
	lengths  []int // distinct prefix lengths, longest first
	fallback *Target
}

// Compile builds the table of a valid, normalized gateway. Listeners without a rule serve nothing.
func Compile(gw *fgv1.Gateway) (*Table, error) {
	t := &Table{ports: map[int32]*portRoutes{}}
	pairIndex := map[Pair]int{}
	pair := func(pool, settings string) int {
		p := Pair{pool, settings}
		if i, ok := pairIndex[p]; ok {
			return i
		}
		pairIndex[p] = len(t.pairs)
		t.pairs = append(t.pairs, p)
		return len(t.pairs) - 1
	}
	maps := map[string]*fgv1.UrlPathMap{}
	for _, m := range gw.GetUrlPathMaps() {
		maps[m.GetName()] = m
	}
	rules := map[string]*fgv1.RequestRoutingRule{}
	for _, r := range gw.GetRequestRoutingRules() {
		rules[r.GetHttpListener()] = r
	}
	for _, l := range gw.GetHttpListeners() {
		pr := t.ports[l.GetPort()]
		if pr == nil {
			pr = &portRoutes{exact: map[string]*listenerRoutes{}}
			t.ports[l.GetPort()] = pr
		}
		r := rules[l.GetName()]
		if r == nil {
			continue
		}
		lr := &listenerRoutes{}
		if r.GetUrlPathMap() == "" {
			lr.basic = &Target{Listener: l.GetName(), Rule: r.GetName(), Pair: pair(r.GetBackendAddressPool(), r.GetBackendHttpSettings())}
		} else {
			m := maps[r.GetUrlPathMap()]
			if m == nil {
				return nil, fmt.Errorf("rule %q: url path map %q not found", r.GetName(), r.GetUrlPathMap())
			}
			lr.paths = compilePathMap(l.GetName(), r.GetName(), m, pair)
		}
		hosts := l.GetHostNames()
		if len(hosts) == 0 {
			pr.basic = lr
		}
		for _, h := range hosts {
			h = strings.ToLower(h)
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				if pr.wildcards == nil {
					pr.wildcards = map[string]*listenerRoutes{}
				}
				if _, dup := pr.wildcards[suffix]; !dup {
					pr.wildcards[suffix] = lr
				}
			} else {
				pr.exact[h] = lr
			}
		}
	}
	return t, nil
}

func compilePathMap(listener, rule string, m *fgv1.UrlPathMap, pair func(string, string) int) *pathMap {
	pm := &pathMap{
		exact:    map[string]*Target{},
		prefix:   map[string]*Target{},
		fallback: &Target{Listener: listener, Rule: rule, Pair: pair(m.GetDefaultBackendAddressPool(), m.GetDefaultBackendHttpSettings())},
	}
	seen := map[int]bool{}
	for _, pr := range m.GetPathRules() {
		t := &Target{Listener: listener, Rule: rule, PathRule: pr.GetName(), Pair: pair(pr.GetBackendAddressPool(), pr.GetBackendHttpSettings())}
		for _, p := range pr.GetPaths() {
			tp := *t
			tp.Path = p
			if prefix, ok := strings.CutSuffix(p, "*"); ok {
				pm.prefix[prefix] = &tp
				if !seen[len(prefix)] {
					seen[len(prefix)] = true
					pm.lengths = append(pm.lengths, len(prefix))
				}
			} else {
				pm.exact[p] = &tp
			}
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(pm.lengths)))
	return pm
}

// Pairs lists every (pool, settings) pair a rule can route to; Target.Pair indexes it.
func (t *Table) Pairs() []Pair { return t.pairs }

// Ports lists the listener ports, ascending.
func (t *Table) Ports() []int32 {
	ports := make([]int32, 0, len(t.ports))
	for p := range t.ports {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports
}

// Match returns the target of a request, or nil when no listener or rule takes it (404).
// host is the request's Host header, with or without a port, in any case.
func (t *Table) Match(port int32, host, path string) *Target {
	pr := t.ports[port]
	if pr == nil {
		return nil
	}
	lr := pr.lookupHost(host)
	if lr == nil {
		return nil
	}
	if lr.basic != nil {
		return lr.basic
	}
	return lr.paths.lookup(path)
}

func (pr *portRoutes) lookupHost(host string) *listenerRoutes {
	if len(pr.exact) > 0 || len(pr.wildcards) > 0 {
		h := normalizeHost(host)
		if lr, ok := pr.exact[h]; ok {
			return lr
		}
		if len(pr.wildcards) > 0 {
			// Suffixes from the longest: ".b.example.com", ".example.com", ".com" for
			// "a.b.example.com"; a wildcard needs at least one character before its suffix.
			for i := 1; i < len(h); i++ {
				if h[i] != '.' {
					continue
				}
				if lr, ok := pr.wildcards[h[i:]]; ok {
					return lr
				}
			}
		}
	}
	return pr.basic
}

func (pm *pathMap) lookup(path string) *Target {
	if t, ok := pm.exact[path]; ok {
		return t
	}
	for _, n := range pm.lengths {
		if n > len(path) {
			continue
		}
		if t, ok := pm.prefix[path[:n]]; ok {
			return t
		}
	}
	return pm.fallback
}

// normalizeHost strips the port and a trailing dot and lowercases, allocating only when the host has
// upper-case letters.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}
