package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func keyPairPEM(t *testing.T) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "www.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

func keyLine(id string) string {
	raw := make([]byte, 32)
	rand.Read(raw)
	return id + " " + base64.StdEncoding.EncodeToString(raw) + "\n"
}

// Listener private keys are sealed in etcd (the raw value holds no key), open again on read, keep an
// identical re-apply from writing, survive key rotation, and fail clearly without their key.
func TestPrivateKeysSealedAtRest(t *testing.T) {
	cli := startEtcd(t)
	ctx := context.Background()
	k1 := keyLine("k1")
	ring1, err := store.ParseKeyring([]byte(k1))
	if err != nil {
		t.Fatal(err)
	}
	s := store.New(cli, store.WithKeyring(ring1))
	data := keyPairPEM(t)
	gw := &fgv1.Gateway{Name: "a", SslCertificates: []*fgv1.SslCertificate{{Name: "site", Data: data}}}
	rev, _, err := s.Apply(ctx, gw, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cli.Get(ctx, store.GatewayKey("a"))
	if err != nil {
		t.Fatal(err)
	}
	if v := string(raw.Kvs[0].Value); strings.Contains(v, "PRIVATE KEY") || !strings.Contains(v, "k1") {
		t.Fatal("the stored value holds the private key in the clear, or no key id")
	}
	got, err := s.Get(ctx, "a")
	if err != nil || got.Gateway.GetSslCertificates()[0].GetData() != data {
		t.Fatalf("Get did not open the sealed key: %v", err)
	}
	if again, changed, err := s.Apply(ctx, gw, nil); err != nil || changed || again != rev {
		t.Fatalf("identical re-apply: rev %d changed %v err %v; want no write", again, changed, err)
	}

	// Rotation: a new key first, the old one kept, reads old values; applies seal with the new one.
	ring2, err := store.ParseKeyring([]byte("# rotated\n" + keyLine("k2") + k1))
	if err != nil {
		t.Fatal(err)
	}
	s2 := store.New(cli, store.WithKeyring(ring2))
	if got, err := s2.Get(ctx, "a"); err != nil || got.Gateway.GetSslCertificates()[0].GetData() != data {
		t.Fatalf("rotated keyring cannot read the old value: %v", err)
	}
	gw.HttpListeners = []*fgv1.HttpListener{{Name: "l", Port: 443}}
	if _, _, err := s2.Apply(ctx, gw, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ = cli.Get(ctx, store.GatewayKey("a"))
	if !strings.Contains(string(raw.Kvs[0].Value), "k2") {
		t.Fatal("an apply after rotation did not seal with the new key")
	}

	// Without the key: a clear error, not a garbled certificate.
	ring3, _ := store.ParseKeyring([]byte(keyLine("k3")))
	if _, err := store.New(cli, store.WithKeyring(ring3)).Get(ctx, "a"); !errors.Is(err, store.ErrNoKey) {
		t.Fatalf("Get with a keyring lacking k2: %v, want ErrNoKey", err)
	}
	if _, err := store.New(cli).Get(ctx, "a"); !errors.Is(err, store.ErrNoKey) {
		t.Fatalf("Get with no keyring: %v, want ErrNoKey", err)
	}
}

func TestKeyringFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "encryption.key")
	k, err := store.LoadOrCreateKeyring(path)
	if err != nil || k == nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := store.LoadOrCreateKeyring(path); err != nil {
		t.Fatalf("load the created file: %v", err)
	}
	for _, bad := range []string{"", "k1\n", "k1 c2hvcnQ=\n", keyLine("k1") + keyLine("k1")} {
		if _, err := store.ParseKeyring([]byte(bad)); err == nil {
			t.Errorf("ParseKeyring(%q) succeeded", bad)
		}
	}
}
