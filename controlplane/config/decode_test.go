package config_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// want is testdata/appgw1.yaml built by hand.
func wantGolden() *fgv1.Gateway {
	i32 := proto.Int32
	return &fgv1.Gateway{
		Name:        "appgw1",
		EnableHttp2: proto.Bool(true),
		Limits:      defaultLimits(),
		HttpListeners: []*fgv1.HttpListener{
			{Name: "web", Protocol: "Http", Port: 8080},
			{Name: "api", Protocol: "Http", Port: 8081, HostNames: []string{"api.example.com", "*.api.example.com"}},
		},
		BackendAddressPools: []*fgv1.BackendAddressPool{{
			Name:             "pool1",
			BackendAddresses: []*fgv1.BackendAddress{{IpAddress: "127.0.0.10"}, {Fqdn: "app.internal.example"}},
		}},
		BackendHttpSettingsCollection: []*fgv1.BackendHttpSettings{
			{Name: "settings1", Port: 9001, Protocol: "Http", RequestTimeout: i32(20), Probe: "probe1",
				ValidateCertChainAndExpiration: proto.Bool(true), ValidateSni: proto.Bool(true), CookieBasedAffinity: "Disabled"},
		},
		Probes: []*fgv1.Probe{{
			Name: "probe1", Protocol: "Http", Host: "127.0.0.1", Path: "/health",
			Interval: i32(30), Timeout: i32(30), UnhealthyThreshold: i32(3),
			Match: &fgv1.ProbeMatch{StatusCodes: []string{"200-399"}},
		}},
		UrlPathMaps: []*fgv1.UrlPathMap{{
			Name: "map1", DefaultBackendAddressPool: "pool1", DefaultBackendHttpSettings: "settings1",
			PathRules: []*fgv1.PathRule{{Name: "images", Paths: []string{"/images/*"}, BackendAddressPool: "pool1", BackendHttpSettings: "settings1"}},
		}},
		RequestRoutingRules: []*fgv1.RequestRoutingRule{
			{Name: "r1", RuleType: "Basic", Priority: i32(100), HttpListener: "web", BackendAddressPool: "pool1", BackendHttpSettings: "settings1"},
			{Name: "r2", RuleType: "PathBasedRouting", Priority: i32(200), HttpListener: "api", UrlPathMap: "map1"},
		},
	}
}

// defaultLimits are the limits Normalize fills in, spelled out.
func defaultLimits() *fgv1.Limits {
	return &fgv1.Limits{
		MaxRequestHeaderBytes:     proto.Int32(65536),
		ReadHeaderTimeoutSeconds:  proto.Int32(10),
		ClientIdleTimeoutSeconds:  proto.Int32(120),
		MaxConnectionsPerListener: proto.Int32(0),
		MaxRequestBodyBytes:       proto.Int64(0),
	}
}

func TestDecodeYAML(t *testing.T) {
	got := golden(t)
	if want := wantGolden(); !proto.Equal(got, want) {
		t.Errorf("Decode(%s) =\n%v\nwant\n%v", goldenPath, got, want)
	}
}

func TestDecodeJSON(t *testing.T) {
	got := decodeFile(t, "testdata/appgw1.json")
	if want := wantGolden(); !proto.Equal(got, want) {
		t.Errorf("Decode(testdata/appgw1.json) =\n%v\nwant\n%v", got, want)
	}
	// Compact single-line JSON too.
	gw, err := config.Decode([]byte(`{"name":"x","httpListeners":[{"name":"web","port":80}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if gw.GetName() != "x" || gw.GetHttpListeners()[0].GetPort() != 80 {
		t.Errorf("Decode(compact JSON) = %v", gw)
	}
}

func TestDecodeOptionalPresence(t *testing.T) {
	// An explicit 0 in an optional field is kept (and rejected by Validate); omitted or null is unset
	// (and defaulted by Normalize).
	gw, err := config.Decode([]byte(`
backendHttpSettingsCollection:
  - {name: zero, requestTimeout: 0}
  - {name: omitted}
  - {name: "null", requestTimeout: null}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := gw.GetBackendHttpSettingsCollection()
	if s[0].RequestTimeout == nil || *s[0].RequestTimeout != 0 {
		t.Errorf("requestTimeout: 0 decoded as %v, want present 0", s[0].RequestTimeout)
	}
	for _, i := range []int{1, 2} {
		if s[i].RequestTimeout != nil {
			t.Errorf("settings %q: requestTimeout = %d, want unset", s[i].GetName(), *s[i].RequestTimeout)
		}
	}
	config.Normalize(gw)
	for i, want := range []int32{0, config.DefaultRequestTimeout, config.DefaultRequestTimeout} {
		if got := s[i].GetRequestTimeout(); got != want {
			t.Errorf("after Normalize, settings %q: requestTimeout = %d, want %d", s[i].GetName(), got, want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		errSubs []string // each must appear in the error
	}{
		{"unknown top-level field", "name: gw\nlistenerz: []\n", []string{"unknown field", `"listenerz"`}},
		{"unknown nested field", "name: gw\nhttpListeners:\n  - {name: web, prot: Http}\n", []string{"unknown field", `"prot"`}},
		{"unknown deeply nested field", "probes:\n  - name: p\n    match: {statusCode: [\"200\"]}\n", []string{"unknown field", `"statusCode"`}},
		{"unknown JSON field", `{"name": "gw", "sku": "Standard_v2"}`, []string{"unknown field", `"sku"`}},
		{"wrong type: string for int", "httpListeners:\n  - {name: web, port: eighty}\n", []string{"port"}},
		{"wrong type: out of int32 range", "httpListeners:\n  - {name: web, port: 4294967296}\n", []string{"port"}},
		{"wrong type: fraction for int", "httpListeners:\n  - {name: web, port: 80.5}\n", []string{"port"}},
		{"wrong type: list for string", "name: [a, b]\n", []string{"name"}},
		{"wrong type: number for string", "name: 123\n", []string{"name"}},
		{"wrong type: map for list", "httpListeners: {name: web}\n", []string{"decode gateway", "syntax error"}},
		{"wrong type: string for bool", "probes:\n  - {name: p, pickHostNameFromBackendHttpSettings: maybe}\n", []string{"pickHostNameFromBackendHttpSettings"}},
		{"wrong type: string for message", "probes:\n  - {name: p, match: ok}\n", []string{"decode gateway", "syntax error"}},
		{"wrong type: document is a list", "- name: gw\n", []string{"decode gateway"}},
		{"null list element", "httpListeners: [null]\n", []string{"decode gateway"}},
		{"malformed YAML", "name: gw\n  httpListeners: [\n", []string{"decode gateway"}},
		{"malformed JSON", `{"name": "gw"`, []string{"decode gateway"}},
		{"duplicate YAML key", "name: gw1\nname: gw2\n", []string{`"name" already set`}},
		{"duplicate JSON key", `{"name": "gw1", "name": "gw2"}`, []string{`"name" already set`}},
		{"duplicate nested key", "httpListeners:\n  - {name: web, port: 80, port: 81}\n", []string{`"port" already set`}},
		{"empty document", "", []string{"empty document"}},
		{"comment-only document", "# nothing\n", []string{"empty document"}},
		{"null document", "null\n", []string{"empty document"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, err := config.Decode([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Decode(%q) = %v, nil; want an error", tc.doc, gw)
			}
			if gw != nil {
				t.Errorf("Decode returned a gateway alongside error %v", err)
			}
			for _, sub := range tc.errSubs {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("Decode(%q) error %q does not mention %q", tc.doc, err, sub)
				}
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		check func(*fgv1.Gateway) bool
	}{
		{"empty mapping", "{}", func(g *fgv1.Gateway) bool { return proto.Equal(g, &fgv1.Gateway{}) }},
		{"quoted number for int", "httpListeners: [{port: \"80\"}]", func(g *fgv1.Gateway) bool { return g.HttpListeners[0].Port == 80 }},
		{"null list", "httpListeners: null", func(g *fgv1.Gateway) bool { return len(g.HttpListeners) == 0 }},
		{"YAML anchors", "backendAddressPools:\n  - &p {name: a}\nurlPathMaps:\n  - {name: m, defaultBackendAddressPool: a}\n",
			func(g *fgv1.Gateway) bool { return g.BackendAddressPools[0].Name == "a" }},
		{"quoted YAML 1.1 boolean as string", "name: \"yes\"", func(g *fgv1.Gateway) bool { return g.Name == "yes" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw, err := config.Decode([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Decode(%q): %v", tc.doc, err)
			}
			if !tc.check(gw) {
				t.Errorf("Decode(%q) = %v", tc.doc, gw)
			}
		})
	}
}

func TestNormalizeEnums(t *testing.T) {
	gw, err := config.Decode([]byte(`
name: gw
httpListeners:
  - {name: a, protocol: HTTP, port: 80}
  - {name: b, protocol: hTtPs, port: 443}
  - {name: c, port: 81}
  - {name: d, protocol: Spdy, port: 82}
backendHttpSettingsCollection:
  - {name: s, protocol: http, port: 80}
probes:
  - {name: p, protocol: HTTPS}
requestRoutingRules:
  - {name: r1, ruleType: basic}
  - {name: r2, ruleType: PATHBASEDROUTING}
  - {name: r3, ruleType: pathBasedRouting}
  - {name: r4, ruleType: Redirect}
  - {name: r5}
`))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	var got []string
	for _, l := range gw.GetHttpListeners() {
		got = append(got, l.GetProtocol())
	}
	got = append(got, gw.GetBackendHttpSettingsCollection()[0].GetProtocol(), gw.GetProbes()[0].GetProtocol())
	for _, r := range gw.GetRequestRoutingRules() {
		got = append(got, r.GetRuleType())
	}
	want := []string{
		"Http", "Https", "Http", "Spdy", // listeners: canonical, default Http, unknown left for Validate
		"Http", "Https", // settings, probe
		"Basic", "PathBasedRouting", "PathBasedRouting", "Redirect", "", // rules: no default
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("after Normalize: %q\nwant %q", got, want)
	}
}

func TestNormalizeDefaults(t *testing.T) {
	gw, err := config.Decode([]byte(`
name: gw
httpListeners:
  - {name: a, port: 80, hostName: WWW.Example.COM, hostNames: [Api.Example.com]}
backendHttpSettingsCollection:
  - {name: s, port: 80}
probes:
  - {name: p}
  - {name: picked, pickHostNameFromBackendHttpSettings: true, match: {body: ok}}
  - {name: explicit, host: h.example, path: /hc, interval: 5, timeout: 6, unhealthyThreshold: 7, match: {statusCodes: ["200"]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	i32 := proto.Int32
	want := &fgv1.Gateway{
		Name:        "gw",
		EnableHttp2: proto.Bool(true),
		Limits:      defaultLimits(),
		HttpListeners: []*fgv1.HttpListener{
			{Name: "a", Protocol: "Http", Port: 80, HostNames: []string{"www.example.com", "api.example.com"}},
		},
		BackendHttpSettingsCollection: []*fgv1.BackendHttpSettings{{Name: "s", Port: 80, Protocol: "Http", RequestTimeout: i32(20),
			ValidateCertChainAndExpiration: proto.Bool(true), ValidateSni: proto.Bool(true), CookieBasedAffinity: "Disabled"}},
		Probes: []*fgv1.Probe{
			{Name: "p", Protocol: "Http", Host: "127.0.0.1", Path: "/", Interval: i32(30), Timeout: i32(30), UnhealthyThreshold: i32(3),
				Match: &fgv1.ProbeMatch{StatusCodes: []string{"200-399"}}},
			{Name: "picked", Protocol: "Http", Path: "/", Interval: i32(30), Timeout: i32(30), UnhealthyThreshold: i32(3),
				PickHostNameFromBackendHttpSettings: true, Match: &fgv1.ProbeMatch{StatusCodes: []string{"200-399"}, Body: "ok"}},
			{Name: "explicit", Protocol: "Http", Host: "h.example", Path: "/hc", Interval: i32(5), Timeout: i32(6), UnhealthyThreshold: i32(7),
				Match: &fgv1.ProbeMatch{StatusCodes: []string{"200"}}},
		},
	}
	if !proto.Equal(gw, want) {
		t.Errorf("after Normalize:\n%v\nwant\n%v", gw, want)
	}
	if err := config.Validate(gw); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestNormalizeIdempotent(t *testing.T) {
	for _, path := range []string{goldenPath, "testdata/minimal.yaml", "testdata/invalid.yaml"} {
		gw := decodeFile(t, path)
		config.Normalize(gw)
		once := proto.Clone(gw)
		config.Normalize(gw)
		if !proto.Equal(once, gw) {
			t.Errorf("%s: Normalize is not idempotent:\nonce:  %v\ntwice: %v", path, once, gw)
		}
	}
	// The golden document spells out every default: Normalize leaves it unchanged.
	gw := golden(t)
	config.Normalize(gw)
	if !proto.Equal(gw, wantGolden()) {
		t.Errorf("Normalize changed %s:\n%v", goldenPath, gw)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	encoders := []struct {
		name string
		enc  func(*fgv1.Gateway) ([]byte, error)
	}{
		{"YAML", config.EncodeYAML},
		{"JSON", config.EncodeJSON},
	}
	docs := map[string]*fgv1.Gateway{}
	for _, path := range []string{goldenPath, "testdata/appgw1.json", "testdata/minimal.yaml", "testdata/invalid.yaml"} {
		gw := decodeFile(t, path)
		docs[path] = proto.Clone(gw).(*fgv1.Gateway)
		config.Normalize(gw)
		docs[path+" normalized"] = gw
	}
	// Values YAML would otherwise read as something other than a string, and explicit zeros in
	// optional fields, which must survive as present.
	docs["tricky"] = &fgv1.Gateway{
		Name: "yes",
		HttpListeners: []*fgv1.HttpListener{
			{Name: "on", Port: 80, HostNames: []string{"null", "~", "0123", "1e3", "true"}},
			{Name: "n", Port: -1, HostName: "y"},
		},
		BackendHttpSettingsCollection: []*fgv1.BackendHttpSettings{{Name: "0x1F", RequestTimeout: proto.Int32(0)}},
		Probes: []*fgv1.Probe{{
			Name: "p", Port: proto.Int32(0), MinServers: -5, PickHostNameFromBackendHttpSettings: true,
			Match: &fgv1.ProbeMatch{Body: "line1\nline2: \"quoted\" #not a comment\t\u00e9"},
		}},
		RequestRoutingRules: []*fgv1.RequestRoutingRule{{Name: "r", Priority: proto.Int32(0)}},
	}
	docs["empty match"] = &fgv1.Gateway{Probes: []*fgv1.Probe{{Name: "p", Match: &fgv1.ProbeMatch{}}}}
	docs["empty"] = &fgv1.Gateway{}

	for name, gw := range docs {
		for _, e := range encoders {
			t.Run(e.name+"/"+name, func(t *testing.T) {
				data, err := e.enc(gw)
				if err != nil {
					t.Fatalf("Encode%s: %v", e.name, err)
				}
				back, err := config.Decode(data)
				if err != nil {
					t.Fatalf("Decode(Encode%s(gw)): %v\n%s", e.name, err, data)
				}
				if !proto.Equal(back, gw) {
					t.Errorf("Decode(Encode%s(gw)) differs:\ngot  %v\nwant %v\ndocument:\n%s", e.name, back, gw, data)
				}
			})
		}
	}
}

func TestEncodeUsesDocumentFieldNames(t *testing.T) {
	gw := golden(t)
	for _, e := range []struct {
		name string
		enc  func(*fgv1.Gateway) ([]byte, error)
	}{{"YAML", config.EncodeYAML}, {"JSON", config.EncodeJSON}} {
		data, err := e.enc(gw)
		if err != nil {
			t.Fatal(err)
		}
		for _, field := range []string{"httpListeners", "backendHttpSettingsCollection", "requestTimeout", "unhealthyThreshold", "defaultBackendAddressPool", "ruleType"} {
			if !strings.Contains(string(data), field) {
				t.Errorf("Encode%s output lacks %q:\n%s", e.name, field, data)
			}
		}
		if strings.Contains(string(data), "http_listeners") {
			t.Errorf("Encode%s output uses proto field names:\n%s", e.name, data)
		}
	}
}
