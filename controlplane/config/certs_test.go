package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
)

// testCA is a PEM CA certificate made when the tests start.
var testCA = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Fleetgate test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}()

func TestParseCertificates(t *testing.T) {
	certs, err := config.ParseCertificates(testCA + testCA)
	if err != nil || len(certs) != 2 || certs[0].Subject.CommonName != "Fleetgate test CA" {
		t.Fatalf("ParseCertificates(two CAs) = %d certs, %v", len(certs), err)
	}
	for _, bad := range []string{"", "junk", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := config.ParseCertificates(bad); err == nil {
			t.Errorf("ParseCertificates(%q) succeeded", strings.TrimSpace(bad))
		}
	}
}

// testKeyPair is a PEM certificate and its private key, made when the tests start.
var testKeyPair = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "www.example.com"},
		DNSNames:     []string{"www.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}()

func TestParseKeyPairAndPublicPEM(t *testing.T) {
	if _, err := config.ParseKeyPair(testKeyPair); err != nil {
		t.Fatalf("ParseKeyPair: %v", err)
	}
	pub := config.PublicPEM(testKeyPair)
	if strings.Contains(pub, "PRIVATE KEY") || !strings.Contains(pub, "BEGIN CERTIFICATE") {
		t.Fatalf("PublicPEM kept the key or lost the certificate:\n%s", pub)
	}
	if _, err := config.ParseKeyPair(pub); err == nil {
		t.Fatal("ParseKeyPair accepted a certificate without its key")
	}
}
