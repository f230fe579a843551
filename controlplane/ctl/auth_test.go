package ctl

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
)

// gatewayctl's credentials against a control plane with tokens: certificates from --pki-dir or one
// by one, tokens from --token or $GATEWAYCTL_TOKEN, and what the operator reads when they fall short.
func TestCredentials(t *testing.T) {
	const readerTok, adminTok = "gatewayctl-reader-0123456789", "gatewayctl-admin-0123456789"
	cp := cptest.StartWith(t, cptest.Etcd(t), "cp-ctl-auth", cptest.Options{Tokens: server.Tokens{
		readerTok: {Name: "r", Via: "token", Roles: []string{pki.RoleReader}},
		adminTok:  {Name: "a", Via: "token", Roles: []string{pki.RoleAdmin}},
	}})
	caFile := filepath.Join(cp.PKIDir, "ca.crt")
	name := fmt.Sprintf("creds-%d", names.Add(1))
	doc := writeDoc(t, fmt.Sprintf(validDoc, name))
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	srv := []string{"--server", cp.Addr}
	args := func(a ...string) []string { return append(append([]string{}, srv...), a...) }

	if r := runExactly(t, "", nil, args("--pki-dir", cp.PKIDir, "list")...); r.code != ExitOK {
		t.Errorf("--pki-dir: %s", r)
	}
	if r := runExactly(t, "", env(EnvPKIDir, cp.PKIDir), args("list")...); r.code != ExitOK {
		t.Errorf("$%s: %s", EnvPKIDir, r)
	}
	if r := runExactly(t, "", nil, args("--ca-file", caFile, "--cert-file", filepath.Join(cp.PKIDir, "admin.crt"), "--key-file", filepath.Join(cp.PKIDir, "admin.key"), "apply", "-f", doc)...); r.code != ExitOK {
		t.Fatalf("--cert-file admin.crt apply: %s", r)
	}
	if r := runExactly(t, "", nil, args("--ca-file", caFile, "--token", readerTok, "get", name)...); r.code != ExitOK {
		t.Errorf("reader token get: %s", r)
	}
	r := runExactly(t, "", nil, args("--ca-file", caFile, "--token", readerTok, "delete", name)...)
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "error: permission denied: ") || !strings.Contains(r.stderr, "needs role admin") {
		t.Errorf("reader token delete: %s", r)
	}
	if r := runExactly(t, "", env(EnvToken, adminTok), args("--ca-file", caFile, "delete", name)...); r.code != ExitOK {
		t.Errorf("$%s admin delete: %s", EnvToken, r)
	}
	// The flag wins over the environment.
	if r := runExactly(t, "", env(EnvToken, adminTok), args("--ca-file", caFile, "--token", readerTok, "apply", "-f", doc)...); r.code != ExitError {
		t.Errorf("--token over $%s: %s", EnvToken, r)
	}

	r = runExactly(t, "", nil, args("--ca-file", caFile, "list")...)
	if r.code != ExitError || !strings.Contains(r.stderr, "not authenticated") || !strings.Contains(r.stderr, "--pki-dir") {
		t.Errorf("no credentials: %s", r)
	}
	r = runExactly(t, "", nil, args("--ca-file", caFile, "--token", "wrong-token-0123456789", "list")...)
	if r.code != ExitError || !strings.Contains(r.stderr, "invalid bearer token") {
		t.Errorf("wrong token: %s", r)
	}
	// Without the control plane's CA: a TLS error, with a hint.
	r = runExactly(t, "", nil, args("--token", readerTok, "list")...)
	if r.code != ExitError || !strings.Contains(r.stderr, "certificate") || !strings.Contains(r.stderr, "--ca-file") {
		t.Errorf("unknown CA: %s", r)
	}
	// Plaintext to a TLS control plane fails.
	if r := runExactly(t, "", nil, args("--insecure", "--timeout", "2s", "list")...); r.code != ExitError {
		t.Errorf("--insecure against TLS: %s", r)
	}
	r = runExactly(t, "", nil, args("--pki-dir", t.TempDir(), "list")...)
	if r.code != ExitError || !strings.Contains(r.stderr, "TLS") || !strings.Contains(r.stderr, "ca.crt") {
		t.Errorf("--pki-dir without files: %s", r)
	}

	for _, bad := range [][]string{
		{"--insecure", "--token", readerTok, "list"},
		{"--insecure", "--pki-dir", cp.PKIDir, "list"},
		{"--insecure", "--ca-file", caFile, "list"},
		{"--cert-file", "a.crt", "list"},
		{"--key-file", "a.key", "list"},
	} {
		if r := runExactly(t, "", nil, args(bad...)...); r.code != ExitUsage {
			t.Errorf("gatewayctl %s: %s", strings.Join(bad, " "), r)
		}
	}
	// $GATEWAYCTL_PKI_DIR or $GATEWAYCTL_TOKEN do not stop --insecure, and are not sent with it.
	insecureCP := cptest.StartWith(t, cptest.Etcd(t), "cp-ctl-insecure", cptest.Options{Insecure: true})
	if r := runExactly(t, "", env(EnvToken, adminTok, EnvPKIDir, cp.PKIDir), "--server", insecureCP.Addr, "--insecure", "list"); r.code != ExitOK {
		t.Errorf("--insecure with the environment set: %s", r)
	}
	// --help never shows the token.
	if r := runExactly(t, "", env(EnvToken, adminTok), "--help"); r.code != ExitOK || strings.Contains(r.stdout, adminTok) || !strings.Contains(r.stdout, "--token") {
		t.Errorf("--help: %s", r)
	}
}
