package ctl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// apply reads certFile and keyFile next to the document and sends their contents; get shows the
// public chain and never the key.
func TestApplyReadsCertificateFiles(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "www.test"}, DNSNames: []string{"www.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	name := uniqueName(t, "certfiles")
	doc := fmt.Sprintf(`
name: %s
sslCertificates: [{name: site, certFile: tls.crt, keyFile: tls.key}]
httpListeners: [{name: web, protocol: Https, port: 8443, sslCertificate: site}]
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.10}]}]
backendHttpSettingsCollection: [{name: s1, port: 9001}]
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, name)
	file := filepath.Join(dir, "gw.yaml")
	os.WriteFile(file, []byte(doc), 0o600)
	mustRun(t, "apply", "-f", file)
	r := mustRun(t, "get", name, "-o", "yaml")
	if strings.Contains(r.stdout, "PRIVATE KEY") || !strings.Contains(r.stdout, "publicCertData") || strings.Contains(r.stdout, "certFile") {
		t.Fatalf("get -o yaml:\n%s", r.stdout)
	}
	os.Remove(filepath.Join(dir, "tls.key"))
	if r := run(t, "apply", "-f", file); r.code != ExitError || !strings.Contains(r.stderr, "tls.key") {
		t.Fatalf("apply with a missing key file: %v", r)
	}
}
