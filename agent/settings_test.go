package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// selfSignedPEM makes a certificate for name and returns it with its key as PEM, and the certificate
// alone for a client to trust.
func selfSignedPEM(t *testing.T, name string) (string, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), cert
}

// Through real workers fed by a real control plane: an Https listener presents the certificate its
// SNI names; an affinity cookie issued by one worker is honoured by another (the key comes from the
// control plane); get never shows the private key.
func TestHTTPSListenerAndAffinityAcrossWorkers(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	conn := cptest.Dial(t, cp.Addr)
	a := startSwitchable(t, "127.0.0.51:0", "A")
	_, port, _ := net.SplitHostPort(a.addr)
	startSwitchable(t, "127.0.0.52:"+port, "B")
	pemA, certA := selfSignedPEM(t, "a.test")
	pemB, certB := selfSignedPEM(t, "b.test")
	listen := freePort(t)
	w1 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	w2 := startWorker(t, cp.Addr, "dp-2", "127.0.0.3", "")
	rev := cptest.Apply(t, conn, fmt.Sprintf(`
name: appgw1
sslCertificates: [{name: a, data: %q}, {name: b, data: %q}]
httpListeners:
  - {name: la, protocol: Https, port: %[3]d, hostNames: [a.test], sslCertificate: a}
  - {name: lb, protocol: Https, port: %[3]d, hostNames: [b.test], sslCertificate: b}
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.51}, {ipAddress: 127.0.0.52}]}]
backendHttpSettingsCollection: [{name: s1, port: %[4]s, cookieBasedAffinity: Enabled}]
requestRoutingRules:
  - {name: ra, ruleType: Basic, priority: 1, httpListener: la, backendAddressPool: pool1, backendHttpSettings: s1}
  - {name: rb, ruleType: Basic, priority: 2, httpListener: lb, backendAddressPool: pool1, backendHttpSettings: s1}
`, pemA, pemB, listen, port))
	for _, w := range []*runningWorker{w1, w2} {
		cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "%s did not apply %d", w.id, rev)
	}
	roots := x509.NewCertPool()
	roots.AddCert(certA)
	roots.AddCert(certB)
	do := func(bind, host string, cookie string) (*http.Response, string) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://%s:%d/", bind, listen), nil)
		req.Host = host
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s via %s: %v", host, bind, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, host := range []string{"a.test", "b.test"} {
		resp, _ := do("127.0.0.2", host, "")
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != host {
			t.Fatalf("SNI %s: certificate of %s", host, cn)
		}
	}
	resp, first := do("127.0.0.2", "a.test", "")
	set := resp.Header.Values("Set-Cookie")
	if len(set) != 2 {
		t.Fatalf("first answer set cookies %q", set)
	}
	cookie := strings.SplitN(set[0], ";", 2)[0]
	for range 6 {
		if _, body := do("127.0.0.3", "a.test", cookie); body != first {
			t.Fatalf("worker dp-2 sent the cookie %q to %q, want %q as dp-1 chose", cookie, body, first)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := fgv1.NewConfigServiceClient(conn).GetGateway(ctx, &fgv1.GetGatewayRequest{Name: "appgw1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range got.GetGateway().GetSslCertificates() {
		if c.GetData() != "" || strings.Contains(c.GetPublicCertData(), "PRIVATE KEY") || !strings.Contains(c.GetPublicCertData(), "CERTIFICATE") {
			t.Fatalf("get shows certificate %q as data=%d bytes public=%q", c.GetName(), len(c.GetData()), c.GetPublicCertData())
		}
	}
	// What get shows can be applied back: the stored keys are kept.
	again, err := fgv1.NewConfigServiceClient(conn).ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: got.GetGateway()})
	if err != nil {
		t.Fatalf("applying get's output back: %v", err)
	}
	if again.GetChanged() {
		t.Fatal("applying get's output back changed the stored gateway")
	}
}
