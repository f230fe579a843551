package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const goldenPath = "testdata/appgw1.yaml"

// golden decodes testdata/appgw1.yaml, a valid document. Each call returns a fresh copy.
//
// Its objects, by index: httpListeners[0] web (basic, port 8080), httpListeners[1] api (8081,
// api.example.com and *.api.example.com); backendAddressPools[0] pool1 (addresses [0] ipAddress,
// [1] fqdn); backendHttpSettingsCollection[0] settings1 (probe probe1); probes[0] probe1;
// urlPathMaps[0] map1 (pathRules[0] images, "/images/*"); requestRoutingRules[0] r1 (Basic, web,
// priority 100), requestRoutingRules[1] r2 (PathBasedRouting, api, map1, priority 200).
func golden(t testing.TB) *fgv1.Gateway {
	t.Helper()
	return decodeFile(t, goldenPath)
}

func decodeFile(t testing.TB, path string) *fgv1.Gateway {
	t.Helper()
	data, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := config.Decode(data)
	if err != nil {
		t.Fatalf("Decode(%s): %v", path, err)
	}
	return gw
}

// fieldErrors returns the FieldErrors of a Validate result, failing the test if err is not a
// *ValidationError.
func fieldErrors(t *testing.T, err error) []config.FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate returned %T (%v), want *config.ValidationError", err, err)
	}
	if len(ve.Errors) == 0 {
		t.Fatalf("Validate returned a *ValidationError with no FieldErrors")
	}
	return ve.Errors
}

// fe is an expected FieldError: the exact field path and a substring of the description.
type fe struct{ field, desc string }

// checkErrors asserts that got holds exactly the errors of want (in any order): each want matches a
// distinct FieldError whose Field is equal and whose Description contains desc, and nothing else.
func checkErrors(t *testing.T, got []config.FieldError, want []fe) {
	t.Helper()
	used := make([]bool, len(got))
	var missing []fe
	for _, w := range want {
		found := false
		for i, g := range got {
			if !used[i] && g.Field == w.field && strings.Contains(g.Description, w.desc) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	var extra []config.FieldError
	for i, g := range got {
		if !used[i] {
			extra = append(extra, g)
		}
	}
	for _, m := range missing {
		t.Errorf("missing error %s: ...%s...", m.field, m.desc)
	}
	for _, e := range extra {
		t.Errorf("unexpected error %s", e.Error())
	}
	if len(missing)+len(extra) > 0 {
		t.Logf("all errors:\n%s", (&config.ValidationError{Errors: got}).Error())
	}
}

func TestValidateGolden(t *testing.T) {
	gw := golden(t)
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatalf("Validate(%s) = %v, want nil", goldenPath, err)
	}
	// The golden document spells every default out, so it is valid without Normalize too.
	if err := config.Validate(golden(t)); err != nil {
		t.Fatalf("Validate(%s) before Normalize = %v, want nil", goldenPath, err)
	}
}

func TestValidateMinimal(t *testing.T) {
	gw := decodeFile(t, "testdata/minimal.yaml")
	if err := config.Validate(gw); err == nil {
		t.Error("Validate of testdata/minimal.yaml before Normalize = nil, want errors (empty protocols, no probe path)")
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatalf("Validate(testdata/minimal.yaml) = %v, want nil", err)
	}
}

func TestValidateEmptyGateway(t *testing.T) {
	checkErrors(t, fieldErrors(t, config.Validate(&fgv1.Gateway{})), []fe{{"name", "is required"}})
	checkErrors(t, fieldErrors(t, config.Validate(nil)), []fe{{"name", "is required"}})
	// A gateway with a name and nothing else is valid: every list may be empty.
	if err := config.Validate(&fgv1.Gateway{Name: "empty"}); err != nil {
		t.Errorf("Validate(name only) = %v, want nil", err)
	}
}

func TestValidateRules(t *testing.T) {
	type gw = fgv1.Gateway
	i32 := proto.Int32
	addListener := func(g *gw, name string, port int32, hosts ...string) {
		g.HttpListeners = append(g.HttpListeners, &fgv1.HttpListener{Name: name, Port: port, HostNames: hosts})
	}
	probe := func(g *gw) *fgv1.Probe { return g.Probes[0] }
	settings := func(g *gw) *fgv1.BackendHttpSettings { return g.BackendHttpSettingsCollection[0] }
	pathRule := func(g *gw) *fgv1.PathRule { return g.UrlPathMaps[0].PathRules[0] }
	basic := func(g *gw) *fgv1.RequestRoutingRule { return g.RequestRoutingRules[0] }
	pathBased := func(g *gw) *fgv1.RequestRoutingRule { return g.RequestRoutingRules[1] }
	addr := func(g *gw, ip, fqdn string) {
		g.BackendAddressPools[0].BackendAddresses[0] = &fgv1.BackendAddress{IpAddress: ip, Fqdn: fqdn}
	}
	const addr0 = "backendAddressPools[0].backendAddresses[0]"

	tests := []struct {
		name   string
		mutate func(g *gw)
		want   []fe // nil: valid
	}{
		// Names: required, at most 80 characters, letters, digits, '.', '_', '-', not starting with a symbol.
		{"name/required", func(g *gw) { g.Name = "" }, []fe{{"name", "is required"}}},
		{"name/80 characters ok", func(g *gw) { g.Name = strings.Repeat("a", 80) }, nil},
		{"name/81 characters", func(g *gw) { g.Name = strings.Repeat("a", 81) }, []fe{{"name", "81 characters is longer than 80"}}},
		{"name/all allowed characters ok", func(g *gw) { g.Name = "Gw-1.prod_eu" }, nil},
		{"name/single digit ok", func(g *gw) { g.Name = "1" }, nil},
		{"name/leading dash", func(g *gw) { g.Name = "-gw" }, []fe{{"name", "must start with a letter or digit"}}},
		{"name/leading dot", func(g *gw) { g.Name = ".gw" }, []fe{{"name", "must start with a letter or digit"}}},
		{"name/space", func(g *gw) { g.Name = "app gw" }, []fe{{"name", `"app gw" must start with a letter or digit and hold only letters, digits`}}},
		{"name/slash", func(g *gw) { g.Name = "a/b" }, []fe{{"name", "hold only letters, digits, '.', '_' and '-'"}}},
		{"name/non-ASCII", func(g *gw) { g.Name = "gäteway" }, []fe{{"name", "hold only letters"}}},
		{"name/listener pattern", func(g *gw) { g.HttpListeners[0].Name = "web!"; basic(g).HttpListener = "web!" },
			[]fe{{"httpListeners[0].name", `"web!" must start with a letter or digit`}}},
		{"name/listener required", func(g *gw) { addListener(g, "", 9090) }, []fe{{"httpListeners[2].name", "is required"}}},
		{"name/pool pattern", func(g *gw) {
			g.BackendAddressPools = append(g.BackendAddressPools, &fgv1.BackendAddressPool{Name: "pool 2"})
		}, []fe{{"backendAddressPools[1].name", "must start with a letter or digit"}}},
		{"name/settings too long", func(g *gw) {
			g.BackendHttpSettingsCollection = append(g.BackendHttpSettingsCollection,
				&fgv1.BackendHttpSettings{Name: strings.Repeat("s", 81), Port: 80})
		}, []fe{{"backendHttpSettingsCollection[1].name", "81 characters is longer than 80"}}},
		{"name/probe required", func(g *gw) { g.Probes = append(g.Probes, &fgv1.Probe{}) }, []fe{{"probes[1].name", "is required"}}},
		{"name/path rule pattern", func(g *gw) { pathRule(g).Name = "_images" },
			[]fe{{"urlPathMaps[0].pathRules[0].name", "must start with a letter or digit"}}},
		{"name/rule required", func(g *gw) { basic(g).Name = "" }, []fe{{"requestRoutingRules[0].name", "is required"}}},

		// Names are unique per kind.
		{"unique/listeners", func(g *gw) { addListener(g, "web", 9090) },
			[]fe{{"httpListeners[2].name", `"web" is already the name of httpListeners[0]`}}},
		{"unique/pools", func(g *gw) {
			g.BackendAddressPools = append(g.BackendAddressPools, &fgv1.BackendAddressPool{Name: "pool1"})
		}, []fe{{"backendAddressPools[1].name", `"pool1" is already the name of backendAddressPools[0]`}}},
		{"unique/settings", func(g *gw) {
			g.BackendHttpSettingsCollection = append(g.BackendHttpSettingsCollection, &fgv1.BackendHttpSettings{Name: "settings1", Port: 80})
		}, []fe{{"backendHttpSettingsCollection[1].name", `"settings1" is already the name of backendHttpSettingsCollection[0]`}}},
		{"unique/probes", func(g *gw) { g.Probes = append(g.Probes, &fgv1.Probe{Name: "probe1"}) },
			[]fe{{"probes[1].name", `"probe1" is already the name of probes[0]`}}},
		{"unique/urlPathMaps", func(g *gw) {
			g.UrlPathMaps = append(g.UrlPathMaps, &fgv1.UrlPathMap{Name: "map1", DefaultBackendAddressPool: "pool1", DefaultBackendHttpSettings: "settings1"})
		}, []fe{{"urlPathMaps[1].name", `"map1" is already the name of urlPathMaps[0]`}}},
		{"unique/path rules within a map", func(g *gw) {
			m := g.UrlPathMaps[0]
			m.PathRules = append(m.PathRules, &fgv1.PathRule{Name: "images", Paths: []string{"/img/*"}, BackendAddressPool: "pool1", BackendHttpSettings: "settings1"})
		}, []fe{{"urlPathMaps[0].pathRules[1].name", `"images" is already the name of urlPathMaps[0].pathRules[0]`}}},
		{"unique/path rule names may repeat across maps", func(g *gw) {
			g.UrlPathMaps = append(g.UrlPathMaps, &fgv1.UrlPathMap{Name: "map2", DefaultBackendAddressPool: "pool1", DefaultBackendHttpSettings: "settings1",
				PathRules: []*fgv1.PathRule{{Name: "images", Paths: []string{"/images/*"}, BackendAddressPool: "pool1", BackendHttpSettings: "settings1"}}})
		}, nil},
		{"unique/rules", func(g *gw) {
			addListener(g, "web2", 9090)
			g.RequestRoutingRules = append(g.RequestRoutingRules, &fgv1.RequestRoutingRule{Name: "r1", RuleType: "Basic", Priority: i32(300),
				HttpListener: "web2", BackendAddressPool: "pool1", BackendHttpSettings: "settings1"})
		}, []fe{{"requestRoutingRules[2].name", `"r1" is already the name of requestRoutingRules[0]`}}},
		{"unique/same name across kinds ok", func(g *gw) { g.BackendAddressPools[0].Name = "web"; retargetPool(g, "pool1", "web") }, nil},

		// Listeners.
		{"listener/protocol omitted defaults to Http", func(g *gw) { g.HttpListeners[0].Protocol = "" }, nil},
		{"listener/protocol case-insensitive", func(g *gw) { g.HttpListeners[0].Protocol = "HTTP" }, nil},
		{"listener/protocol Https needs a certificate", func(g *gw) { g.HttpListeners[0].Protocol = "https" },
			[]fe{{"httpListeners[0].sslCertificate", "is required"}}},
		{"listener/protocol Ftp", func(g *gw) { g.HttpListeners[0].Protocol = "ftp" },
			[]fe{{"httpListeners[0].protocol", `"ftp" is not one of Http, Https`}}},
		{"listener/sslCertificate on Http", func(g *gw) { g.HttpListeners[0].SslCertificate = "c" },
			[]fe{{"httpListeners[0].sslCertificate", "applies only to protocol Https"}}},
		{"listener/mixed protocols on a port", func(g *gw) {
			g.HttpListeners[1].Port = g.HttpListeners[0].GetPort()
			g.HttpListeners[1].Protocol = "Https"
			g.HttpListeners[1].SslCertificate = "c"
			g.SslCertificates = []*fgv1.SslCertificate{{Name: "c", Data: testKeyPair}}
		}, []fe{{"httpListeners[1].protocol", "listeners sharing a port share a protocol"}}},
		{"sslCertificates/not a key pair", func(g *gw) { g.SslCertificates = []*fgv1.SslCertificate{{Name: "c", Data: testCA}} },
			[]fe{{"sslCertificates[0].data", "not a PEM certificate chain with its private key"}}},
		{"sslCertificates/files reach the server", func(g *gw) {
			g.SslCertificates = []*fgv1.SslCertificate{{Name: "c", CertFile: "a.pem", KeyFile: "a.key"}}
		},
			[]fe{{"sslCertificates[0]", "read by gatewayctl"}}},
		{"settings/path override", func(g *gw) { settings(g).Path = "override/" },
			[]fe{{"backendHttpSettingsCollection[0].path", "must start with '/'"}}},
		{"settings/affinity value", func(g *gw) { settings(g).CookieBasedAffinity = "Sometimes" },
			[]fe{{"backendHttpSettingsCollection[0].cookieBasedAffinity", `"Sometimes" is not one of Enabled, Disabled`}}},
		{"settings/affinity cookie name", func(g *gw) { settings(g).CookieBasedAffinity = "Enabled"; settings(g).AffinityCookieName = "a b" },
			[]fe{{"backendHttpSettingsCollection[0].affinityCookieName", "is not a cookie name"}}},
		{"settings/dedicated with http2", func(g *gw) { settings(g).DedicatedBackendConnection = true },
			[]fe{{"backendHttpSettingsCollection[0].dedicatedBackendConnection", "needs enableHttp2: false"}}},
		{"settings/dedicated without http2 ok", func(g *gw) { settings(g).DedicatedBackendConnection = true; g.EnableHttp2 = proto.Bool(false) }, nil},
		{"settings/drain timeout", func(g *gw) {
			settings(g).ConnectionDraining = &fgv1.ConnectionDraining{Enabled: true, DrainTimeoutInSec: 3601}
		}, []fe{{"backendHttpSettingsCollection[0].connectionDraining.drainTimeoutInSec", "3601 is out of range 1-3600"}}},
		{"settings/drain enabled without timeout", func(g *gw) { settings(g).ConnectionDraining = &fgv1.ConnectionDraining{Enabled: true} },
			[]fe{{"backendHttpSettingsCollection[0].connectionDraining.drainTimeoutInSec", "0 is out of range 1-3600"}}},
		{"settings/sniName", func(g *gw) { settings(g).SniName = "bad name" },
			[]fe{{"backendHttpSettingsCollection[0].sniName", "is not a host name"}}},
		{"listener/protocol unknown", func(g *gw) { g.HttpListeners[1].Protocol = "Tcp" },
			[]fe{{"httpListeners[1].protocol", `"Tcp" is not one of Http`}}},
		{"listener/port 0", func(g *gw) { g.HttpListeners[0].Port = 0 }, []fe{{"httpListeners[0].port", "0 is out of range 1-65535"}}},
		{"listener/port negative", func(g *gw) { g.HttpListeners[0].Port = -80 }, []fe{{"httpListeners[0].port", "-80 is out of range 1-65535"}}},
		{"listener/port 65536", func(g *gw) { g.HttpListeners[1].Port = 65536 }, []fe{{"httpListeners[1].port", "65536 is out of range 1-65535"}}},
		{"listener/port 1 ok", func(g *gw) { g.HttpListeners[0].Port = 1 }, nil},
		{"listener/port 65535 ok", func(g *gw) { g.HttpListeners[0].Port = 65535 }, nil},
		{"listener/host wildcard ok", func(g *gw) { g.HttpListeners[1].HostNames = []string{"*.example.com"} }, nil},
		{"listener/host upper case normalised", func(g *gw) { g.HttpListeners[1].HostNames = []string{"API.Example.COM"} }, nil},
		{"listener/host single label ok", func(g *gw) { g.HttpListeners[1].HostNames = []string{"localhost"} }, nil},
		{"listener/legacy hostName ok", func(g *gw) { g.HttpListeners[1].HostName = "www.example.com" }, nil},
		{"listener/host underscore", func(g *gw) { g.HttpListeners[1].HostNames[0] = "bad_host.example.com" },
			[]fe{{"httpListeners[1].hostNames[0]", `"bad_host.example.com" is not a host name`}}},
		{"listener/host leading dash", func(g *gw) { g.HttpListeners[1].HostNames[1] = "-api.example.com" },
			[]fe{{"httpListeners[1].hostNames[1]", "is not a host name"}}},
		{"listener/host empty label", func(g *gw) { g.HttpListeners[1].HostNames[0] = "api..example.com" },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host wildcard in the middle", func(g *gw) { g.HttpListeners[1].HostNames[0] = "api.*.example.com" },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host bare wildcard", func(g *gw) { g.HttpListeners[1].HostNames[0] = "*" },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host with port", func(g *gw) { g.HttpListeners[1].HostNames[0] = "api.example.com:8081" },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host label of 64 characters", func(g *gw) { g.HttpListeners[1].HostNames[0] = strings.Repeat("a", 64) + ".com" },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host label of 63 characters ok", func(g *gw) { g.HttpListeners[1].HostNames[0] = strings.Repeat("a", 63) + ".com" }, nil},
		{"listener/host longer than 253", func(g *gw) { g.HttpListeners[1].HostNames[0] = longHost(254) },
			[]fe{{"httpListeners[1].hostNames[0]", "is not a host name"}}},
		{"listener/host of 253 ok", func(g *gw) { g.HttpListeners[1].HostNames[0] = longHost(253) }, nil},
		{"listener/empty entry in hostNames", func(g *gw) { g.HttpListeners[1].HostNames = []string{"api.example.com", ""} },
			[]fe{{"httpListeners[1].hostNames[1]", `"" is not a host name`}}},
		{"listener/two basic listeners on one port", func(g *gw) { addListener(g, "web2", 8080) },
			[]fe{{"httpListeners[2]", "port 8080 already has a basic listener, httpListeners[0]"}}},
		{"listener/basic listeners on different ports ok", func(g *gw) { addListener(g, "web2", 8082) }, nil},
		{"listener/same host twice on a port", func(g *gw) { addListener(g, "api2", 8081, "www.example.com", "api.example.com") },
			[]fe{{"httpListeners[2].hostNames[1]", `"api.example.com" on port 8081 is already served by httpListeners[1]`}}},
		{"listener/same wildcard twice on a port", func(g *gw) { addListener(g, "api2", 8081, "*.api.example.com") },
			[]fe{{"httpListeners[2].hostNames[0]", `"*.api.example.com" on port 8081 is already served by httpListeners[1]`}}},
		{"listener/same host twice on a port, ignoring case", func(g *gw) { addListener(g, "api2", 8081, "API.example.com") },
			[]fe{{"httpListeners[2].hostNames[0]", `"api.example.com" on port 8081 is already served by httpListeners[1]`}}},
		{"listener/same host via legacy hostName", func(g *gw) {
			g.HttpListeners = append(g.HttpListeners, &fgv1.HttpListener{Name: "api2", Port: 8081, HostName: "api.example.com"})
		}, []fe{{"httpListeners[2].hostNames[0]", "is already served by httpListeners[1]"}}},
		{"listener/multi-site on a shared port with distinct hosts ok", func(g *gw) { addListener(g, "www", 8081, "www.example.com", "*.example.com") }, nil},
		{"listener/multi-site beside a basic listener on its port ok", func(g *gw) { addListener(g, "www", 8080, "www.example.com") }, nil},
		{"listener/same host on different ports ok", func(g *gw) { addListener(g, "api2", 8082, "api.example.com") }, nil},

		// Backend addresses: exactly one of ipAddress and fqdn, each well formed.
		{"pool/ipv4 ok", func(g *gw) { addr(g, "10.1.2.3", "") }, nil},
		{"pool/ipv6 ok", func(g *gw) { addr(g, "fd00::10", "") }, nil},
		{"pool/fqdn upper case ok", func(g *gw) { addr(g, "", "App.Internal.Example") }, nil},
		{"pool/fqdn trailing dot ok", func(g *gw) { addr(g, "", "app.internal.example.") }, nil},
		{"pool/empty pool ok", func(g *gw) { g.BackendAddressPools[0].BackendAddresses = nil }, nil},
		{"pool/both", func(g *gw) { addr(g, "10.1.2.3", "app.example.com") }, []fe{{addr0, "set ipAddress or fqdn, not both"}}},
		{"pool/neither", func(g *gw) { addr(g, "", "") }, []fe{{addr0, "one of ipAddress or fqdn is required"}}},
		{"pool/bad ip octet", func(g *gw) { addr(g, "300.1.2.3", "") }, []fe{{addr0 + ".ipAddress", `"300.1.2.3" is not an IP address`}}},
		{"pool/bad ip short", func(g *gw) { addr(g, "10.0.0", "") }, []fe{{addr0 + ".ipAddress", "is not an IP address"}}},
		{"pool/ip is a name", func(g *gw) { addr(g, "app.example.com", "") }, []fe{{addr0 + ".ipAddress", "is not an IP address"}}},
		{"pool/bad fqdn underscore", func(g *gw) { addr(g, "", "app_1.example.com") }, []fe{{addr0 + ".fqdn", `"app_1.example.com" is not a domain name`}}},
		{"pool/bad fqdn empty label", func(g *gw) { addr(g, "", "app..example.com") }, []fe{{addr0 + ".fqdn", "is not a domain name"}}},
		{"pool/bad fqdn wildcard", func(g *gw) { addr(g, "", "*.example.com") }, []fe{{addr0 + ".fqdn", "is not a domain name"}}},
		{"pool/bad fqdn too long", func(g *gw) { addr(g, "", longHost(254)) }, []fe{{addr0 + ".fqdn", "is not a domain name"}}},
		{"pool/second address", func(g *gw) { g.BackendAddressPools[0].BackendAddresses[1].Fqdn = "bad name" },
			[]fe{{"backendAddressPools[0].backendAddresses[1].fqdn", "is not a domain name"}}},

		// Backend settings.
		{"settings/port 0", func(g *gw) { settings(g).Port = 0 }, []fe{{"backendHttpSettingsCollection[0].port", "0 is out of range 1-65535"}}},
		{"settings/port 65536", func(g *gw) { settings(g).Port = 65536 }, []fe{{"backendHttpSettingsCollection[0].port", "65536 is out of range 1-65535"}}},
		{"settings/port 65535 ok", func(g *gw) { settings(g).Port = 65535 }, nil},
		{"settings/protocol omitted ok", func(g *gw) { settings(g).Protocol = "" }, nil},
		{"settings/protocol case-insensitive", func(g *gw) { settings(g).Protocol = "hTTp" }, nil},
		{"settings/protocol Ftp", func(g *gw) { settings(g).Protocol = "Ftp" },
			[]fe{{"backendHttpSettingsCollection[0].protocol", `"Ftp" is not one of Http, Https`}}},
		{"settings/trusted root unknown", func(g *gw) { settings(g).Protocol = "Https"; settings(g).TrustedRootCertificates = []string{"nope"} },
			[]fe{{"backendHttpSettingsCollection[0].trustedRootCertificates[0]", `"nope" does not name any of trustedRootCertificates`}}},
		{"settings/trusted root on Http", func(g *gw) {
			g.TrustedRootCertificates = []*fgv1.TrustedRootCertificate{{Name: "ca", Data: testCA}}
			settings(g).TrustedRootCertificates = []string{"ca"}
		}, []fe{{"backendHttpSettingsCollection[0].trustedRootCertificates", "apply only to protocol Https"}}},
		{"settings/hostName with pick", func(g *gw) { settings(g).HostName = "a.test"; settings(g).PickHostNameFromBackendAddress = true },
			[]fe{{"backendHttpSettingsCollection[0].hostName", "must be empty when pickHostNameFromBackendAddress"}}},
		{"settings/probe picks host from settings without one", func(g *gw) { probe(g).Host = ""; probe(g).PickHostNameFromBackendHttpSettings = true },
			[]fe{{"backendHttpSettingsCollection[0].probe", "set neither hostName nor pickHostNameFromBackendAddress"}}},
		{"trustedRootCertificates/not PEM", func(g *gw) { g.TrustedRootCertificates = []*fgv1.TrustedRootCertificate{{Name: "ca", Data: "junk"}} },
			[]fe{{"trustedRootCertificates[0].data", "holds no PEM CERTIFICATE block"}}},
		{"settings/protocol unknown", func(g *gw) { settings(g).Protocol = "grpc" },
			[]fe{{"backendHttpSettingsCollection[0].protocol", `"grpc" is not one of Http`}}},
		{"settings/requestTimeout 0", func(g *gw) { settings(g).RequestTimeout = i32(0) },
			[]fe{{"backendHttpSettingsCollection[0].requestTimeout", "0 is out of range 1-86400"}}},
		{"settings/requestTimeout 86401", func(g *gw) { settings(g).RequestTimeout = i32(86401) },
			[]fe{{"backendHttpSettingsCollection[0].requestTimeout", "86401 is out of range 1-86400"}}},
		{"settings/requestTimeout negative", func(g *gw) { settings(g).RequestTimeout = i32(-1) },
			[]fe{{"backendHttpSettingsCollection[0].requestTimeout", "-1 is out of range 1-86400"}}},
		{"settings/requestTimeout 1 ok", func(g *gw) { settings(g).RequestTimeout = i32(1) }, nil},
		{"settings/requestTimeout 86400 ok", func(g *gw) { settings(g).RequestTimeout = i32(86400) }, nil},
		{"settings/requestTimeout omitted ok", func(g *gw) { settings(g).RequestTimeout = nil }, nil},
		{"settings/probe omitted ok", func(g *gw) { settings(g).Probe = "" }, nil},
		{"settings/probe unknown", func(g *gw) { settings(g).Probe = "probe2" },
			[]fe{{"backendHttpSettingsCollection[0].probe", `"probe2" does not name any of probes`}}},
		{"settings/probe ref is case-sensitive", func(g *gw) { settings(g).Probe = "Probe1" },
			[]fe{{"backendHttpSettingsCollection[0].probe", `"Probe1" does not name any of probes`}}},

		// Probes.
		{"probe/defaults ok", func(g *gw) { g.Probes[0] = &fgv1.Probe{Name: "probe1"} }, nil},
		{"probe/protocol case-insensitive", func(g *gw) { probe(g).Protocol = "HTTP" }, nil},
		{"probe/Tcp probe on HTTP settings", func(g *gw) { probe(g).Protocol = "Tcp" },
			[]fe{{"backendHttpSettingsCollection[0].probe", `probe "probe1" is Tcp; HTTP settings take an Http or Https probe`}}},
		{"probe/protocol unknown", func(g *gw) { probe(g).Protocol = "udp" }, []fe{{"probes[0].protocol", `"udp" is not one of Http, Https, Tcp, Tls`}}},
		{"probe/pickHostName with host", func(g *gw) { probe(g).PickHostNameFromBackendHttpSettings = true; settings(g).HostName = "app.test" },
			[]fe{{"probes[0].host", "must be empty when pickHostNameFromBackendHttpSettings is true"}}},
		{"probe/pickHostName without host ok", func(g *gw) {
			probe(g).PickHostNameFromBackendHttpSettings = true
			probe(g).Host = ""
			settings(g).PickHostNameFromBackendAddress = true
		}, nil},
		{"settings/Https with trusted root ok", func(g *gw) {
			g.TrustedRootCertificates = []*fgv1.TrustedRootCertificate{{Name: "ca", Data: testCA}}
			settings(g).Protocol = "https"
			settings(g).TrustedRootCertificates = []string{"ca"}
		}, nil},
		{"probe/host name ok", func(g *gw) { probe(g).Host = "Health.Example.com" }, nil},
		{"probe/host ipv6 ok", func(g *gw) { probe(g).Host = "::1" }, nil},
		{"probe/host bad", func(g *gw) { probe(g).Host = "bad host" }, []fe{{"probes[0].host", `"bad host" is not a host name or IP address`}}},
		{"probe/host with scheme", func(g *gw) { probe(g).Host = "http://x" }, []fe{{"probes[0].host", "is not a host name or IP address"}}},
		{"probe/path omitted ok", func(g *gw) { probe(g).Path = "" }, nil},
		{"probe/path relative", func(g *gw) { probe(g).Path = "health" }, []fe{{"probes[0].path", `"health" must start with '/'`}}},
		{"probe/path with query ok", func(g *gw) { probe(g).Path = "/health?full=1" }, nil},
		{"probe/interval 0", func(g *gw) { probe(g).Interval = i32(0) }, []fe{{"probes[0].interval", "0 is out of range 1-86400"}}},
		{"probe/interval 86401", func(g *gw) { probe(g).Interval = i32(86401) }, []fe{{"probes[0].interval", "86401 is out of range 1-86400"}}},
		{"probe/interval bounds ok", func(g *gw) {
			probe(g).Interval = i32(1)
			g.Probes = append(g.Probes, &fgv1.Probe{Name: "p2", Interval: i32(86400)})
		}, nil},
		{"probe/timeout 0", func(g *gw) { probe(g).Timeout = i32(0) }, []fe{{"probes[0].timeout", "0 is out of range 1-86400"}}},
		{"probe/timeout 86401", func(g *gw) { probe(g).Timeout = i32(86401) }, []fe{{"probes[0].timeout", "86401 is out of range 1-86400"}}},
		{"probe/timeout bounds ok", func(g *gw) {
			probe(g).Timeout = i32(1)
			g.Probes = append(g.Probes, &fgv1.Probe{Name: "p2", Timeout: i32(86400)})
		}, nil},
		{"probe/unhealthyThreshold 0", func(g *gw) { probe(g).UnhealthyThreshold = i32(0) },
			[]fe{{"probes[0].unhealthyThreshold", "0 is out of range 1-20"}}},
		{"probe/unhealthyThreshold 21", func(g *gw) { probe(g).UnhealthyThreshold = i32(21) },
			[]fe{{"probes[0].unhealthyThreshold", "21 is out of range 1-20"}}},
		{"probe/unhealthyThreshold bounds ok", func(g *gw) {
			probe(g).UnhealthyThreshold = i32(1)
			g.Probes = append(g.Probes, &fgv1.Probe{Name: "p2", UnhealthyThreshold: i32(20)})
		}, nil},
		{"probe/port 0", func(g *gw) { probe(g).Port = i32(0) }, []fe{{"probes[0].port", "0 is out of range 1-65535"}}},
		{"probe/port 65536", func(g *gw) { probe(g).Port = i32(65536) }, []fe{{"probes[0].port", "65536 is out of range 1-65535"}}},
		{"probe/port ok", func(g *gw) { probe(g).Port = i32(8443) }, nil},
		{"probe/minServers -1", func(g *gw) { probe(g).MinServers = -1 }, []fe{{"probes[0].minServers", "-1 is out of range 0-100"}}},
		{"probe/minServers 101", func(g *gw) { probe(g).MinServers = 101 }, []fe{{"probes[0].minServers", "101 is out of range 0-100"}}},
		{"probe/minServers 100 ok", func(g *gw) { probe(g).MinServers = 100 }, nil},
		{"probe/statusCodes range and single ok", func(g *gw) { probe(g).Match.StatusCodes = []string{"200-399", "401"} }, nil},
		{"probe/statusCodes bounds ok", func(g *gw) { probe(g).Match.StatusCodes = []string{"100", "599", "100-599"} }, nil},
		{"probe/statusCodes omitted ok", func(g *gw) { probe(g).Match = nil }, nil},
		{"probe/statusCodes 99", func(g *gw) { probe(g).Match.StatusCodes = []string{"99"} },
			[]fe{{"probes[0].match.statusCodes[0]", `"99" is out of range 100-599`}}},
		{"probe/statusCodes 600", func(g *gw) { probe(g).Match.StatusCodes = []string{"200", "600"} },
			[]fe{{"probes[0].match.statusCodes[1]", `"600" is out of range 100-599`}}},
		{"probe/statusCodes reversed range", func(g *gw) { probe(g).Match.StatusCodes = []string{"300-200"} },
			[]fe{{"probes[0].match.statusCodes[0]", `"300-200" is out of range 100-599`}}},
		{"probe/statusCodes range end 600", func(g *gw) { probe(g).Match.StatusCodes = []string{"200-600"} },
			[]fe{{"probes[0].match.statusCodes[0]", "is out of range 100-599"}}},
		{"probe/statusCodes abc", func(g *gw) { probe(g).Match.StatusCodes = []string{"abc"} },
			[]fe{{"probes[0].match.statusCodes[0]", `"abc" is not a status code or range like "200-399"`}}},
		{"probe/statusCodes half range", func(g *gw) { probe(g).Match.StatusCodes = []string{"200-"} },
			[]fe{{"probes[0].match.statusCodes[0]", "is not a status code or range"}}},
		{"probe/statusCodes empty string", func(g *gw) { probe(g).Match.StatusCodes = []string{""} },
			[]fe{{"probes[0].match.statusCodes[0]", "is not a status code or range"}}},
		{"probe/body 4090 bytes ok", func(g *gw) { probe(g).Match.Body = strings.Repeat("x", 4090) }, nil},
		{"probe/body 4091 bytes", func(g *gw) { probe(g).Match.Body = strings.Repeat("x", 4091) },
			[]fe{{"probes[0].match.body", "4091 bytes is longer than 4090"}}},
		{"probe/body counted in bytes", func(g *gw) { probe(g).Match.Body = strings.Repeat("é", 2046) }, // 4092 bytes, 2046 runes
			[]fe{{"probes[0].match.body", "4092 bytes is longer than 4090"}}},

		// URL path maps.
		{"map/default pool required", func(g *gw) { g.UrlPathMaps[0].DefaultBackendAddressPool = "" },
			[]fe{{"urlPathMaps[0].defaultBackendAddressPool", "is required"}}},
		{"map/default pool unknown", func(g *gw) { g.UrlPathMaps[0].DefaultBackendAddressPool = "pool9" },
			[]fe{{"urlPathMaps[0].defaultBackendAddressPool", `"pool9" does not name any of backendAddressPools`}}},
		{"map/default settings required", func(g *gw) { g.UrlPathMaps[0].DefaultBackendHttpSettings = "" },
			[]fe{{"urlPathMaps[0].defaultBackendHttpSettings", "is required"}}},
		{"map/default settings unknown", func(g *gw) { g.UrlPathMaps[0].DefaultBackendHttpSettings = "settings9" },
			[]fe{{"urlPathMaps[0].defaultBackendHttpSettings", `"settings9" does not name any of backendHttpSettingsCollection`}}},
		{"map/no path rules ok", func(g *gw) { g.UrlPathMaps[0].PathRules = nil }, nil},
		{"map/paths required", func(g *gw) { pathRule(g).Paths = nil },
			[]fe{{"urlPathMaps[0].pathRules[0].paths", "at least one path is required"}}},
		{"map/path without slash", func(g *gw) { pathRule(g).Paths = []string{"images/*"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[0]", `"images/*" must start with '/'`}}},
		{"map/path empty", func(g *gw) { pathRule(g).Paths = []string{""} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[0]", "must start with '/'"}}},
		{"map/path star in the middle", func(g *gw) { pathRule(g).Paths = []string{"/images/*", "/a*/b"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[1]", `"/a*/b" may hold '*' only at the end`}}},
		{"map/path two stars at the end", func(g *gw) { pathRule(g).Paths = []string{"/a/**"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[0]", "may hold '*' only at the end"}}},
		{"map/path star at the end ok", func(g *gw) { pathRule(g).Paths = []string{"/images/*", "/*", "/exact", "/"} }, nil},
		{"map/path with query", func(g *gw) { pathRule(g).Paths = []string{"/a?b=1"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[0]", "must not hold a query or fragment"}}},
		{"map/path with fragment", func(g *gw) { pathRule(g).Paths = []string{"/a#b"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[0]", "must not hold a query or fragment"}}},
		{"map/duplicate path within a rule", func(g *gw) { pathRule(g).Paths = []string{"/images/*", "/images/*"} },
			[]fe{{"urlPathMaps[0].pathRules[0].paths[1]", `path "/images/*" appears more than once in the map`}}},
		{"map/duplicate path across rules", func(g *gw) {
			m := g.UrlPathMaps[0]
			m.PathRules = append(m.PathRules, &fgv1.PathRule{Name: "img2", Paths: []string{"/css/*", "/images/*"}, BackendAddressPool: "pool1", BackendHttpSettings: "settings1"})
		}, []fe{{"urlPathMaps[0].pathRules[1].paths[1]", `path "/images/*" appears more than once in the map`}}},
		{"map/same path in two maps ok", func(g *gw) {
			g.UrlPathMaps = append(g.UrlPathMaps, &fgv1.UrlPathMap{Name: "map2", DefaultBackendAddressPool: "pool1", DefaultBackendHttpSettings: "settings1",
				PathRules: []*fgv1.PathRule{{Name: "img", Paths: []string{"/images/*"}, BackendAddressPool: "pool1", BackendHttpSettings: "settings1"}}})
		}, nil},
		{"map/rule pool required", func(g *gw) { pathRule(g).BackendAddressPool = "" },
			[]fe{{"urlPathMaps[0].pathRules[0].backendAddressPool", "is required"}}},
		{"map/rule pool unknown", func(g *gw) { pathRule(g).BackendAddressPool = "pool9" },
			[]fe{{"urlPathMaps[0].pathRules[0].backendAddressPool", `"pool9" does not name any of backendAddressPools`}}},
		{"map/rule settings required", func(g *gw) { pathRule(g).BackendHttpSettings = "" },
			[]fe{{"urlPathMaps[0].pathRules[0].backendHttpSettings", "is required"}}},
		{"map/rule settings unknown", func(g *gw) { pathRule(g).BackendHttpSettings = "settings9" },
			[]fe{{"urlPathMaps[0].pathRules[0].backendHttpSettings", `"settings9" does not name any of backendHttpSettingsCollection`}}},

		// Request routing rules.
		{"rule/ruleType lower case accepted", func(g *gw) { basic(g).RuleType = "basic" }, nil},
		{"rule/ruleType upper case accepted", func(g *gw) { pathBased(g).RuleType = "PATHBASEDROUTING" }, nil},
		{"rule/ruleType unknown", func(g *gw) { basic(g).RuleType = "Redirect" },
			[]fe{{"requestRoutingRules[0].ruleType", `"Redirect" is not one of Basic, PathBasedRouting`}}},
		{"rule/ruleType required", func(g *gw) { basic(g).RuleType = "" },
			[]fe{{"requestRoutingRules[0].ruleType", "is not one of Basic, PathBasedRouting"}}},
		{"rule/priority required", func(g *gw) { basic(g).Priority = nil },
			[]fe{{"requestRoutingRules[0].priority", "is required (1-20000)"}}},
		{"rule/priority 0", func(g *gw) { basic(g).Priority = i32(0) },
			[]fe{{"requestRoutingRules[0].priority", "0 is out of range 1-20000"}}},
		{"rule/priority 20001", func(g *gw) { basic(g).Priority = i32(20001) },
			[]fe{{"requestRoutingRules[0].priority", "20001 is out of range 1-20000"}}},
		{"rule/priority bounds ok", func(g *gw) { basic(g).Priority = i32(1); pathBased(g).Priority = i32(20000) }, nil},
		{"rule/priority unique", func(g *gw) { pathBased(g).Priority = i32(100) },
			[]fe{{"requestRoutingRules[1].priority", "100 is already the priority of requestRoutingRules[0]"}}},
		{"rule/listener required", func(g *gw) { basic(g).HttpListener = "" },
			[]fe{{"requestRoutingRules[0].httpListener", "is required"}}},
		{"rule/listener unknown", func(g *gw) { basic(g).HttpListener = "web9" },
			[]fe{{"requestRoutingRules[0].httpListener", `"web9" does not name any of httpListeners`}}},
		{"rule/listener serves one rule", func(g *gw) { pathBased(g).HttpListener = "web" },
			[]fe{{"requestRoutingRules[1].httpListener", `"web" is already used by requestRoutingRules[0]; a listener serves one rule`}}},
		{"rule/listener without a rule ok", func(g *gw) { addListener(g, "idle", 9090) }, nil},
		{"rule/basic pool required", func(g *gw) { basic(g).BackendAddressPool = "" },
			[]fe{{"requestRoutingRules[0].backendAddressPool", "is required"}}},
		{"rule/basic pool unknown", func(g *gw) { basic(g).BackendAddressPool = "pool9" },
			[]fe{{"requestRoutingRules[0].backendAddressPool", `"pool9" does not name any of backendAddressPools`}}},
		{"rule/basic settings required", func(g *gw) { basic(g).BackendHttpSettings = "" },
			[]fe{{"requestRoutingRules[0].backendHttpSettings", "is required"}}},
		{"rule/basic settings unknown", func(g *gw) { basic(g).BackendHttpSettings = "settings9" },
			[]fe{{"requestRoutingRules[0].backendHttpSettings", `"settings9" does not name any of backendHttpSettingsCollection`}}},
		{"rule/basic with urlPathMap", func(g *gw) { basic(g).UrlPathMap = "map1" },
			[]fe{{"requestRoutingRules[0].urlPathMap", "must be empty for a Basic rule"}}},
		{"rule/path-based urlPathMap required", func(g *gw) { pathBased(g).UrlPathMap = "" },
			[]fe{{"requestRoutingRules[1].urlPathMap", "is required"}}},
		{"rule/path-based urlPathMap unknown", func(g *gw) { pathBased(g).UrlPathMap = "map9" },
			[]fe{{"requestRoutingRules[1].urlPathMap", `"map9" does not name any of urlPathMaps`}}},
		{"rule/path-based with pool", func(g *gw) { pathBased(g).BackendAddressPool = "pool1" },
			[]fe{{"requestRoutingRules[1]", "backendAddressPool and backendHttpSettings must be empty"}}},
		{"rule/path-based with settings", func(g *gw) { pathBased(g).BackendHttpSettings = "settings1" },
			[]fe{{"requestRoutingRules[1]", "a PathBasedRouting rule takes its backends from its urlPathMap"}}},
		{"rule/path-based via lower-case ruleType checks urlPathMap", func(g *gw) { pathBased(g).RuleType = "pathbasedrouting"; pathBased(g).UrlPathMap = "" },
			[]fe{{"requestRoutingRules[1].urlPathMap", "is required"}}},
	}

	seen := map[string]bool{}
	for _, tc := range tests {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			g := golden(t)
			tc.mutate(g)
			config.Normalize(g)
			checkErrors(t, fieldErrors(t, config.Validate(g)), tc.want)
		})
	}
}

// retargetPool renames every reference to a backend address pool.
func retargetPool(g *fgv1.Gateway, from, to string) {
	for _, m := range g.GetUrlPathMaps() {
		if m.DefaultBackendAddressPool == from {
			m.DefaultBackendAddressPool = to
		}
		for _, r := range m.GetPathRules() {
			if r.BackendAddressPool == from {
				r.BackendAddressPool = to
			}
		}
	}
	for _, r := range g.GetRequestRoutingRules() {
		if r.BackendAddressPool == from {
			r.BackendAddressPool = to
		}
	}
}

// longHost returns a valid-looking DNS name of exactly n characters (n >= 3).
func longHost(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		label := min(63, n-b.Len())
		b.WriteString(strings.Repeat("a", label))
	}
	s := b.String()
	if strings.HasSuffix(s, ".") || len(s) != n {
		panic("longHost: bad length")
	}
	return s
}

// TestValidateReportsEveryError breaks many independent rules at once and expects every one of them
// in a single ValidationError.
func TestValidateReportsEveryError(t *testing.T) {
	g := golden(t)
	g.Name = ""
	g.HttpListeners[0].Port = 70000
	g.HttpListeners[1].HostNames[0] = "bad_host"
	g.BackendAddressPools[0].BackendAddresses[0].IpAddress = "1.2.3"
	g.BackendHttpSettingsCollection[0].RequestTimeout = proto.Int32(86401)
	g.Probes[0].Path = "health"
	g.Probes[0].UnhealthyThreshold = proto.Int32(0)
	g.Probes[0].Match.StatusCodes = []string{"200-399", "abc"}
	g.UrlPathMaps[0].PathRules[0].Paths = []string{"/a*/b"}
	g.UrlPathMaps[0].DefaultBackendHttpSettings = ""
	g.RequestRoutingRules[0].Priority = proto.Int32(20001)
	g.RequestRoutingRules[1].UrlPathMap = "nope"
	want := []fe{
		{"name", "is required"},
		{"httpListeners[0].port", "70000 is out of range 1-65535"},
		{"httpListeners[1].hostNames[0]", "is not a host name"},
		{"backendAddressPools[0].backendAddresses[0].ipAddress", "is not an IP address"},
		{"backendHttpSettingsCollection[0].requestTimeout", "86401 is out of range 1-86400"},
		{"probes[0].path", "must start with '/'"},
		{"probes[0].unhealthyThreshold", "0 is out of range 1-20"},
		{"probes[0].match.statusCodes[1]", "is not a status code"},
		{"urlPathMaps[0].pathRules[0].paths[0]", "may hold '*' only at the end"},
		{"urlPathMaps[0].defaultBackendHttpSettings", "is required"},
		{"requestRoutingRules[0].priority", "20001 is out of range 1-20000"},
		{"requestRoutingRules[1].urlPathMap", `"nope" does not name any of urlPathMaps`},
	}
	config.Normalize(g)
	err := config.Validate(g)
	got := fieldErrors(t, err)
	if len(got) != len(want) {
		t.Errorf("got %d errors, want %d", len(got), len(want))
	}
	checkErrors(t, got, want)
	if msg := err.Error(); !strings.HasPrefix(msg, "invalid gateway: 12 error(s)\n") {
		t.Errorf("Error() = %q, want it to start with the count", msg)
	}
}

// TestValidateInvalidFile checks testdata/invalid.yaml, which breaks many rules, one object at a time.
func TestValidateInvalidFile(t *testing.T) {
	g := decodeFile(t, "testdata/invalid.yaml")
	config.Normalize(g)
	checkErrors(t, fieldErrors(t, config.Validate(g)), []fe{
		{"name", `"-bad" must start with a letter or digit`},
		{"httpListeners[0].sslCertificate", "is required"},
		{"httpListeners[0].port", "0 is out of range 1-65535"},
		{"httpListeners[0].hostNames[0]", `"bad_host" is not a host name`},
		{"httpListeners[2]", "port 80 already has a basic listener, httpListeners[1]"},
		{"backendAddressPools[0].backendAddresses[0]", "one of ipAddress or fqdn is required"},
		{"backendAddressPools[0].backendAddresses[1]", "set ipAddress or fqdn, not both"},
		{"backendHttpSettingsCollection[0].port", "70000 is out of range 1-65535"},
		{"backendHttpSettingsCollection[0].requestTimeout", "0 is out of range 1-86400"},
		{"backendHttpSettingsCollection[0].probe", `"nope" does not name any of probes`},
		{"probes[0].path", `"health" must start with '/'`},
		{"probes[0].interval", "0 is out of range 1-86400"},
		{"probes[0].unhealthyThreshold", "21 is out of range 1-20"},
		{"probes[0].match.statusCodes[0]", `"99" is out of range 100-599`},
		{"probes[0].match.statusCodes[1]", `"abc" is not a status code`},
		{"urlPathMaps[0].defaultBackendAddressPool", "is required"},
		{"urlPathMaps[0].defaultBackendHttpSettings", "is required"},
		{"urlPathMaps[0].pathRules[0].paths[0]", `"/a*/b" may hold '*' only at the end`},
		{"urlPathMaps[0].pathRules[0].paths[2]", `path "/x" appears more than once in the map`},
		{"urlPathMaps[0].pathRules[0].backendAddressPool", "is required"},
		{"urlPathMaps[0].pathRules[0].backendHttpSettings", "is required"},
		{"requestRoutingRules[0].ruleType", `"Redirect" is not one of Basic, PathBasedRouting`},
		{"requestRoutingRules[0].priority", "is required (1-20000)"},
		{"requestRoutingRules[0].httpListener", `"nope" does not name any of httpListeners`},
		{"requestRoutingRules[1].name", `"r1" is already the name of requestRoutingRules[0]`},
		{"requestRoutingRules[1].priority", "20001 is out of range 1-20000"},
		{"requestRoutingRules[1].urlPathMap", "is required"},
		{"requestRoutingRules[1]", "backendAddressPool and backendHttpSettings must be empty"},
	})
}

func TestValidationErrorFormat(t *testing.T) {
	ve := &config.ValidationError{Errors: []config.FieldError{
		{Field: "httpListeners[0].port", Description: "0 is out of range 1-65535"},
		{Field: "name", Description: "is required"},
	}}
	want := "invalid gateway: 2 error(s)\n  httpListeners[0].port: 0 is out of range 1-65535\n  name: is required"
	if got := ve.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := ve.Errors[1].Error(); got != "name: is required" {
		t.Errorf("FieldError.Error() = %q", got)
	}
}

func TestValidateOrderIsDeterministic(t *testing.T) {
	g := decodeFile(t, "testdata/invalid.yaml")
	config.Normalize(g)
	first := config.Validate(g).Error()
	for range 20 {
		if got := config.Validate(g).Error(); got != first {
			t.Fatalf("Validate output changed between runs:\n%s\n---\n%s", first, got)
		}
	}
}

func TestValidateDoesNotModify(t *testing.T) {
	g := decodeFile(t, "testdata/invalid.yaml")
	config.Normalize(g)
	before := proto.Clone(g)
	_ = config.Validate(g)
	if !proto.Equal(before, g) {
		t.Error("Validate modified its argument")
	}
}

func TestParseStatusRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int
		errSub string
	}{
		{"200", 200, 200, ""},
		{"200-399", 200, 399, ""},
		{"401", 401, 401, ""},
		{"100-599", 100, 599, ""},
		{"204-204", 204, 204, ""},
		{" 200 - 299 ", 200, 299, ""},
		{"99", 0, 0, "out of range 100-599"},
		{"600", 0, 0, "out of range 100-599"},
		{"300-200", 0, 0, "out of range 100-599"},
		{"99-200", 0, 0, "out of range 100-599"},
		{"abc", 0, 0, "is not a status code"},
		{"", 0, 0, "is not a status code"},
		{"200-", 0, 0, "is not a status code"},
		{"-200", 0, 0, "is not a status code"},
		{"200-300-400", 0, 0, "is not a status code"},
		{"2xx", 0, 0, "is not a status code"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			lo, hi, err := config.ParseStatusRange(tc.in)
			if tc.errSub == "" {
				if err != nil || lo != tc.lo || hi != tc.hi {
					t.Errorf("ParseStatusRange(%q) = %d, %d, %v; want %d, %d, nil", tc.in, lo, hi, err, tc.lo, tc.hi)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("ParseStatusRange(%q) error = %v, want one containing %q", tc.in, err, tc.errSub)
			}
		})
	}
}
