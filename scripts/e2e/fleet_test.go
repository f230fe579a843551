package e2e

import (
	"fmt"
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
	waitServing(t, cpAddr, 30*time.Second)
	bport := freePort(t, "127.0.0.10")
	newBackend(t, "A", fmt.Sprintf("127.0.0.10:%d", bport), modeEcho)
	newBackend(t, "B", fmt.Sprintf("127.0.0.11:%d", bport), modeEcho)
	web, api := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.2")
	admins := map[string]string{}
	for i, bind := range []string{"127.0.0.2", "127.0.0.3"} {
		admins[bind] = fmt.Sprintf("%s:%d", bind, freePort(t, bind))
		start(t, fmt.Sprintf("dp-%d", i+1), "dataplane", "--controlplane", cpAddr, "--gateway", "appgw1",
			"--id", fmt.Sprintf("dp-%d", i+1), "--bind-address", bind, "--state-dir", t.TempDir(),
			"--admin-address", admins[bind], "--access-log", "--pki-dir", pkiDir)
	}

	for _, a := range admins {
		eventually(t, 15*time.Second, func() bool { _, code := get("http://" + a + "/healthz"); return code == 200 }, "worker admin %s not live", a)
		if body, code := get("http://" + a + "/readyz"); code != 503 {
			t.Fatalf("/readyz before any config = %d %q, want 503", code, body)
		}
	}

	// Bad input: every error reported, exit 1, nothing stored.
	bad := writeFile(t, "bad.yaml", strings.NewReplacer("port: "+fmt.Sprint(bport), "port: 0", "priority: 200", "priority: 100").
		Replace(fmt.Sprintf(gatewayYAML, web, api, bport)))
	r := ctl(t, cpAddr, "apply", "-f", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "backendHttpSettingsCollection[0].port: 0 is out of range 1-65535") ||
		!strings.Contains(r.stderr, "requestRoutingRules[1].priority") {
		t.Fatalf("apply of a bad config: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := ctl(t, cpAddr, "get", "appgw1"); r.code != 1 {
		t.Fatalf("get after a rejected apply: exit %d, want 1 (nothing stored)", r.code)
	}

	good := writeFile(t, "appgw1.yaml", fmt.Sprintf(gatewayYAML, web, api, bport))
	if r := ctl(t, cpAddr, "apply", "-f", good); r.code != 0 || !strings.Contains(r.stdout, "applied") {
		t.Fatalf("apply: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	for _, bind := range []string{"127.0.0.2", "127.0.0.3"} {
		url := fmt.Sprintf("http://%s:%d/hello", bind, web)
		eventually(t, 15*time.Second, func() bool { _, code := get(url); return code == 200 }, "worker %s does not serve", bind)
		seen := map[string]bool{}
		for range 4 {
			body, code := get(url)
			if code != 200 {
				t.Fatalf("GET %s = %d %q", url, code, body)
			}
			seen[echoed(body)] = true
		}
		if !seen["A /hello"] || !seen["B /hello"] {
			t.Fatalf("round-robin through %s reached %v, want both backends", bind, seen)
		}
		apiURL := fmt.Sprintf("http://%s:%d", bind, api)
		if body, code := getHost(apiURL+"/images/cat.png", "api.example.com"); code != 200 || echoed(body) != "B /images/cat.png" {
			t.Fatalf("path rule through %s: %d %q", bind, code, body)
		}
		if _, code := getHost(apiURL+"/", "unknown.example.com"); code != 404 {
			t.Fatalf("unknown host through %s: %d, want 404", bind, code)
		}
	}

	eventually(t, 10*time.Second, func() bool {
		r := ctl(t, cpAddr, "dataplanes", "appgw1")
		return r.code == 0 && strings.Count(r.stdout, "InSync") == 2
	}, "dataplanes does not show both workers in sync")
	out := ctl(t, cpAddr, "dataplanes", "appgw1").stdout
	t.Logf("gatewayctl dataplanes:\n%s", out)
	for _, a := range admins {
		if body, code := get("http://" + a + "/readyz"); code != 200 {
			t.Fatalf("/readyz after apply = %d %q", code, body)
		}
		body, _ := get("http://" + a + "/metrics")
		if !strings.Contains(body, `fleetgate_requests_total{code="2xx",listener="web",pool="pool1",rule="r1"`) ||
			!strings.Contains(body, "fleetgate_config_version") {
			t.Fatalf("worker metrics lack request or version series:\n%s", tail(body, 30))
		}
	}
	if body, _ := get("http://" + cpMetrics + "/metrics"); !strings.Contains(body, `fleetgate_controlplane_connected_dataplanes{gateway="appgw1"} 2`) ||
		!strings.Contains(body, "grpc_server_handled_total") || !strings.Contains(body, `fleetgate_controlplane_etcd_request_seconds_count{method="Txn"}`) {
		t.Fatalf("control-plane metrics:\n%s", tail(body, 30))
	}
	if !strings.Contains(out, "dp-1") || !strings.Contains(out, "dp-2") {
		t.Fatalf("dataplanes output lacks a worker:\n%s", out)
	}
	if r := ctl(t, cpAddr, "get", "appgw1", "-o", "yaml"); r.code != 0 || !strings.Contains(r.stdout, "ruleType: Basic") || !strings.Contains(r.stdout, "requestTimeout: 20") {
		t.Fatalf("get -o yaml (enums canonical, defaults filled): exit %d\n%s", r.code, r.stdout)
	}
}

// The control plane against an external etcd (the Debian etcd binary), with two replicas side by
// side: a config applied through one reaches a worker connected to the other, and either lists the
// whole fleet.
func TestTwoReplicasOnExternalEtcd(t *testing.T) {
	client := startEtcdCluster(t, etcdBinary(t), []string{"127.0.0.1"})[0].client

	// One PKI made by hand, shared by both replicas.
	pkiDir := certsInit(t)
	keyFile := filepath.Join(pkiDir, "encryption.key") // made by certs init, shared by both replicas
	cpA := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cpB := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	start(t, "cp-a", "controlplane", "--listen", cpA, "--etcd-endpoints", client, "--replica", "cp-a", "--pki-dir", pkiDir, "--data-dir", t.TempDir(), "--encryption-key-file", keyFile)
	start(t, "cp-b", "controlplane", "--listen", cpB, "--etcd-endpoints", client, "--replica", "cp-b", "--pki-dir", pkiDir, "--data-dir", t.TempDir(), "--encryption-key-file", keyFile)
	useCreds(t, cpA, "--pki-dir", pkiDir)
	useCreds(t, cpB, "--pki-dir", pkiDir)
	bport := freePort(t, "127.0.0.10")
	newBackend(t, "A", fmt.Sprintf("127.0.0.10:%d", bport), modeEcho)
	newBackend(t, "B", fmt.Sprintf("127.0.0.11:%d", bport), modeEcho)
	web, api := freePort(t, "127.0.0.4"), freePort(t, "127.0.0.4")
	start(t, "dp-b", "dataplane", "--controlplane", cpB, "--gateway", "appgw1", "--id", "dp-b", "--bind-address", "127.0.0.4", "--pki-dir", pkiDir)

	waitServing(t, cpA, 30*time.Second)
	good := writeFile(t, "appgw1.yaml", fmt.Sprintf(gatewayYAML, web, api, bport))
	if r := ctl(t, cpA, "apply", "-f", good); r.code != 0 {
		t.Fatalf("apply via replica A: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	url := fmt.Sprintf("http://127.0.0.4:%d/x", web)
	eventually(t, 15*time.Second, func() bool { _, code := get(url); return code == 200 }, "worker on replica B does not serve the config applied via A")
	eventually(t, 10*time.Second, func() bool {
		out := ctl(t, cpA, "dataplanes", "appgw1").stdout
		return strings.Contains(out, "dp-b") && strings.Contains(out, "cp-b") && strings.Contains(out, "InSync")
	}, "replica A does not list the worker connected to replica B")
}
