package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const gatewayYAML = `
name: appgw1
httpListeners:
  - {name: web, protocol: Http, port: %[1]d}
  - {name: api, protocol: Http, port: %[2]d, hostNames: [api.example.com]}
backendAddressPools:
  - name: pool1
    backendAddresses: [{ipAddress: 127.0.0.10}, {ipAddress: 127.0.0.11}]
  - name: images
    backendAddresses: [{ipAddress: 127.0.0.11}]
backendHttpSettingsCollection:
  - {name: settings1, port: %[3]d, protocol: http, requestTimeout: 20}
urlPathMaps:
  - name: map1
    defaultBackendAddressPool: pool1
    defaultBackendHttpSettings: settings1
    pathRules:
      - {name: images, paths: ["/images/*"], backendAddressPool: images, backendHttpSettings: settings1}
requestRoutingRules:
  - {name: r1, ruleType: basic, priority: 100, httpListener: web, backendAddressPool: pool1, backendHttpSettings: settings1}
  - {name: r2, ruleType: PathBasedRouting, priority: 200, httpListener: api, urlPathMap: map1}
`

// The walking skeleton: control plane on embedded etcd, two workers, two backends, gatewayctl; all
// of it over TLS from the PKI the control plane makes in its data dir on first start.
func TestFleetEndToEnd(t *testing.T) {
	cpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cpMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	dataDir := t.TempDir()
	pkiDir := filepath.Join(dataDir, "pki")
	start(t, "controlplane", "controlplane", "--listen", cpAddr, "--data-dir", dataDir, "--metrics-address", cpMetrics,
		"--etcd-client-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--etcd-peer-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")))
	useCreds(t, cpAddr, "--pki-dir", pkiDir)
	// The auto PKI exists once the control plane answers.
	eventually(t, 30*time.Second, func() bool { _, _, code := ctl(t, cpAddr, "list"); return code == 0 }, "control plane did not come up")
	bport := freePort(t, "127.0.0.10")
	backend(t, fmt.Sprintf("127.0.0.10:%d", bport), "A")
	backend(t, fmt.Sprintf("127.0.0.11:%d", bport), "B")
	web, api := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.2")
	admins := map[string]string{}
	for i, bind := range []string{"127.0.0.2", "127.0.0.3"} {
		admins[bind] = fmt.Sprintf("%s:%d", bind, freePort(t, bind))
		start(t, fmt.Sprintf("dp-%d", i+1), "dataplane", "--controlplane", cpAddr, "--gateway", "appgw1",
			"--id", fmt.Sprintf("dp-%d", i+1), "--bind-address", bind, "--state-dir", t.TempDir(),
			"--admin-address", admins[bind], "--access-log", "--pki-dir", pkiDir)
	}

	for _, a := range admins {
		eventually(t, 15*time.Second, func() bool { _, code := get("http://"+a+"/healthz", ""); return code == 200 }, "worker admin %s not live", a)
		if body, code := get("http://"+a+"/readyz", ""); code != 503 {
			t.Fatalf("/readyz before any config = %d %q, want 503", code, body)
		}
	}

	// Bad input: every error reported, exit 1, nothing stored.
	bad := writeFile(t, "bad.yaml", strings.NewReplacer("port: "+fmt.Sprint(bport), "port: 0", "priority: 200", "priority: 100").
		Replace(fmt.Sprintf(gatewayYAML, web, api, bport)))
	_, stderr, code := ctl(t, cpAddr, "apply", "-f", bad)
	if code != 1 || !strings.Contains(stderr, "backendHttpSettingsCollection[0].port: 0 is out of range 1-65535") ||
		!strings.Contains(stderr, "requestRoutingRules[1].priority") {
		t.Fatalf("apply of a bad config: exit %d, stderr:\n%s", code, stderr)
	}
	if _, _, code := ctl(t, cpAddr, "get", "appgw1"); code != 1 {
		t.Fatalf("get after a rejected apply: exit %d, want 1 (nothing stored)", code)
	}

	good := writeFile(t, "appgw1.yaml", fmt.Sprintf(gatewayYAML, web, api, bport))
	out, stderr, code := ctl(t, cpAddr, "apply", "-f", good)
	if code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("apply: exit %d\n%s%s", code, out, stderr)
	}

	for _, bind := range []string{"127.0.0.2", "127.0.0.3"} {
		url := fmt.Sprintf("http://%s:%d/hello", bind, web)
		eventually(t, 15*time.Second, func() bool { _, code := get(url, ""); return code == 200 }, "worker %s does not serve", bind)
		seen := map[string]bool{}
		for range 4 {
			body, code := get(url, "")
			if code != 200 {
				t.Fatalf("GET %s = %d %q", url, code, body)
			}
			seen[body] = true
		}
		if !seen["A /hello"] || !seen["B /hello"] {
			t.Fatalf("round-robin through %s reached %v, want both backends", bind, seen)
		}
		apiURL := fmt.Sprintf("http://%s:%d", bind, api)
		if body, code := get(apiURL+"/images/cat.png", "api.example.com"); code != 200 || body != "B /images/cat.png" {
			t.Fatalf("path rule through %s: %d %q", bind, code, body)
		}
		if _, code := get(apiURL+"/", "unknown.example.com"); code != 404 {
			t.Fatalf("unknown host through %s: %d, want 404", bind, code)
		}
	}

	eventually(t, 10*time.Second, func() bool {
		out, _, code := ctl(t, cpAddr, "dataplanes", "appgw1")
		return code == 0 && strings.Count(out, "InSync") == 2
	}, "dataplanes does not show both workers in sync")
	out, _, _ = ctl(t, cpAddr, "dataplanes", "appgw1")
	t.Logf("gatewayctl dataplanes:\n%s", out)
	for _, a := range admins {
		if body, code := get("http://"+a+"/readyz", ""); code != 200 {
			t.Fatalf("/readyz after apply = %d %q", code, body)
		}
		body, _ := get("http://"+a+"/metrics", "")
		if !strings.Contains(body, `fleetgate_requests_total{code="2xx",listener="web",pool="pool1",rule="r1"`) ||
			!strings.Contains(body, "fleetgate_config_version") {
			t.Fatalf("worker metrics lack request or version series:\n%s", tail(body, 30))
		}
	}
	if body, _ := get("http://"+cpMetrics+"/metrics", ""); !strings.Contains(body, `fleetgate_controlplane_connected_dataplanes{gateway="appgw1"} 2`) ||
		!strings.Contains(body, "grpc_server_handled_total") || !strings.Contains(body, `fleetgate_controlplane_etcd_request_seconds_count{method="Txn"}`) {
		t.Fatalf("control-plane metrics:\n%s", tail(body, 30))
	}
	if !strings.Contains(out, "dp-1") || !strings.Contains(out, "dp-2") {
		t.Fatalf("dataplanes output lacks a worker:\n%s", out)
	}
	out, _, code = ctl(t, cpAddr, "get", "appgw1", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "ruleType: Basic") || !strings.Contains(out, "requestTimeout: 20") {
		t.Fatalf("get -o yaml (enums canonical, defaults filled): exit %d\n%s", code, out)
	}
}

// The control plane against an external etcd (the Debian etcd binary), with two replicas side by
// side: a config applied through one reaches a worker connected to the other, and either lists the
// whole fleet.
func TestTwoReplicasOnExternalEtcd(t *testing.T) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd binary not installed (apt-get install etcd-server)")
	}
	client := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	peer := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	startExternal(t, "etcd", etcdBin, "--name", "e2e", "--data-dir", t.TempDir(),
		"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "e2e=http://"+peer, "--log-level", "warn")

	// One PKI made by hand, shared by both replicas.
	pkiDir := certsInit(t)
	keyFile := filepath.Join(pkiDir, "encryption.key") // made by certs init, shared by both replicas
	cpA := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cpB := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	start(t, "cp-a", "controlplane", "--listen", cpA, "--etcd-endpoints", "http://"+client, "--replica", "cp-a", "--pki-dir", pkiDir, "--data-dir", t.TempDir(), "--encryption-key-file", keyFile)
	start(t, "cp-b", "controlplane", "--listen", cpB, "--etcd-endpoints", "http://"+client, "--replica", "cp-b", "--pki-dir", pkiDir, "--data-dir", t.TempDir(), "--encryption-key-file", keyFile)
	useCreds(t, cpA, "--pki-dir", pkiDir)
	useCreds(t, cpB, "--pki-dir", pkiDir)
	bport := freePort(t, "127.0.0.10")
	backend(t, fmt.Sprintf("127.0.0.10:%d", bport), "A")
	backend(t, fmt.Sprintf("127.0.0.11:%d", bport), "B")
	web, api := freePort(t, "127.0.0.4"), freePort(t, "127.0.0.4")
	start(t, "dp-b", "dataplane", "--controlplane", cpB, "--gateway", "appgw1", "--id", "dp-b", "--bind-address", "127.0.0.4", "--pki-dir", pkiDir)

	eventually(t, 30*time.Second, func() bool { _, _, code := ctl(t, cpA, "list"); return code == 0 }, "replica A did not come up")
	good := writeFile(t, "appgw1.yaml", fmt.Sprintf(gatewayYAML, web, api, bport))
	if out, stderr, code := ctl(t, cpA, "apply", "-f", good); code != 0 {
		t.Fatalf("apply via replica A: exit %d\n%s%s", code, out, stderr)
	}
	url := fmt.Sprintf("http://127.0.0.4:%d/x", web)
	eventually(t, 15*time.Second, func() bool { _, code := get(url, ""); return code == 200 }, "worker on replica B does not serve the config applied via A")
	eventually(t, 10*time.Second, func() bool {
		out, _, _ := ctl(t, cpA, "dataplanes", "appgw1")
		return strings.Contains(out, "dp-b") && strings.Contains(out, "cp-b") && strings.Contains(out, "InSync")
	}, "replica A does not list the worker connected to replica B")
}

// startExternal starts a program that is not one of ours (etcd).
func startExternal(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	saved := binDir
	binDir = ""
	defer func() { binDir = saved }()
	return start(t, name, path, args...)
}
