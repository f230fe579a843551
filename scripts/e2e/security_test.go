package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The security of the real binaries: a PKI made by hand with a per-worker certificate, bearer
// tokens, roles, and a worker that tries to report under another worker's id.
func TestSecurity(t *testing.T) {
	pkiDir := certsInit(t)
	out, err := exec.Command(filepath.Join(binDir, "controlplane"), "certs", "issue", "--dir", pkiDir, "--dataplane", "dp-1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dataplane-dp-1.crt") {
		t.Fatalf("certs issue: %v\n%s", err, out)
	}
	const readerTok, adminTok = "e2e-reader-token-0123456789", "e2e-admin-token-0123456789"
	tokens := writeFile(t, "tokens", fmt.Sprintf("# e2e\n%s reader ci\n%s admin ops\n", readerTok, adminTok))

	cpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1"))
	cp := start(t, "controlplane", "controlplane", "--listen", cpAddr, "--data-dir", t.TempDir(), "--pki-dir", pkiDir,
		"--token-file", tokens,
		"--etcd-client-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")),
		"--etcd-peer-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t, "127.0.0.1")))
	caFile := filepath.Join(pkiDir, "ca.crt")
	reader := []string{"--ca-file", caFile, "--token", readerTok}
	eventually(t, 30*time.Second, func() bool { return ctl(t, cpAddr, append(reader, "list")...).code == 0 }, "control plane did not come up")

	bport := freePort(t, "127.0.0.12")
	newBackend(t, "C", fmt.Sprintf("127.0.0.12:%d", bport), modeEcho)
	web := freePort(t, "127.0.0.5")
	doc := writeFile(t, "gw.yaml", fmt.Sprintf(`
name: appgw1
httpListeners: [{name: web, port: %d}]
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.12}]}]
backendHttpSettingsCollection: [{name: s1, port: %d}]
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, web, bport))

	// A reader may not apply; an admin token may.
	if r := ctl(t, cpAddr, append(reader, "apply", "-f", doc)...); r.code != 1 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("apply with the reader token: exit %d\n%s", r.code, r.stderr)
	}
	if r := ctl(t, cpAddr, "--ca-file", caFile, "list"); r.code != 1 || !strings.Contains(r.stderr, "not authenticated") {
		t.Fatalf("list without credentials: exit %d\n%s", r.code, r.stderr)
	}
	if r := ctl(t, cpAddr, "--insecure", "--timeout", "2s", "list"); r.code != 1 {
		t.Fatalf("plaintext list: exit %d", r.code)
	}
	if r := ctl(t, cpAddr, "--ca-file", caFile, "--token", adminTok, "apply", "-f", doc); r.code != 0 {
		t.Fatalf("apply with the admin token: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The worker with dp-1's own certificate serves; the same certificate cannot report as dp-2.
	workerTLS := []string{"--ca-file", caFile, "--cert-file", filepath.Join(pkiDir, "dataplane-dp-1.crt"), "--key-file", filepath.Join(pkiDir, "dataplane-dp-1.key")}
	start(t, "dp-1", "dataplane", append([]string{"--controlplane", cpAddr, "--gateway", "appgw1", "--id", "dp-1",
		"--bind-address", "127.0.0.5"}, workerTLS...)...)
	impostor := start(t, "dp-2", "dataplane", append([]string{"--controlplane", cpAddr, "--gateway", "appgw1", "--id", "dp-2",
		"--bind-address", "127.0.0.6"}, workerTLS...)...)
	url := fmt.Sprintf("http://127.0.0.5:%d/x", web)
	eventually(t, 15*time.Second, func() bool { body, code := get(url); return code == 200 && echoed(body) == "C /x" }, "dp-1 does not serve")
	eventually(t, 15*time.Second, func() bool {
		b := impostor.logText()
		return strings.Contains(b, "PermissionDenied") && strings.Contains(b, `may not connect as worker \"dp-2\"`)
	}, "dp-2 with dp-1's certificate was not refused")
	if fleet := ctl(t, cpAddr, append(reader, "dataplanes", "appgw1")...).stdout; !strings.Contains(fleet, "dp-1") || strings.Contains(fleet, "dp-2") {
		t.Fatalf("dataplanes:\n%s", fleet)
	}
	if b := cp.logText(); !strings.Contains(b, "access denied") || !strings.Contains(b, `Connect as dp-2`) {
		t.Fatalf("the control plane did not log the refusal:\n%s", tail(b, 30))
	}

	// A worker without a certificate does not start.
	cmd := exec.Command(filepath.Join(binDir, "dataplane"), "--controlplane", cpAddr, "--gateway", "appgw1")
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "client certificate is required") {
		t.Fatalf("dataplane without TLS flags: %v\n%s", err, out)
	}
}
