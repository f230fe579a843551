package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// ParseCertificates parses every CERTIFICATE block of a PEM text; at least one is required.
func ParseCertificates(data string) ([]*x509.Certificate, error) {
	rest := []byte(data)
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("holds no PEM CERTIFICATE block")
	}
	return certs, nil
}

// RootPool builds the CA pool of Https backend settings from the trusted root certificates they
// name: nil (meaning the system roots) when they name none. It also returns a fingerprint of the
// roots, which changes when they do.
func RootPool(gw *fgv1.Gateway, set *fgv1.BackendHttpSettings) (*x509.CertPool, string, error) {
	if len(set.GetTrustedRootCertificates()) == 0 {
		return nil, "", nil
	}
	data := map[string]string{}
	for _, r := range gw.GetTrustedRootCertificates() {
		data[r.GetName()] = r.GetData()
	}
	pool := x509.NewCertPool()
	h := sha256.New()
	for _, name := range set.GetTrustedRootCertificates() {
		certs, err := ParseCertificates(data[name])
		if err != nil {
			return nil, "", fmt.Errorf("trusted root certificate %q: %w", name, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
			h.Write(c.Raw)
		}
	}
	return pool, hex.EncodeToString(h.Sum(nil)), nil
}

// ParseKeyPair parses a listener certificate: a PEM certificate chain and its PEM private key, in
// one text.
func ParseKeyPair(data string) (tls.Certificate, error) {
	if data == "" {
		return tls.Certificate{}, errors.New("is required: a PEM certificate chain and private key")
	}
	c, err := tls.X509KeyPair([]byte(data), []byte(data))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("not a PEM certificate chain with its private key: %v", err)
	}
	return c, nil
}

// PublicPEM returns the CERTIFICATE blocks of a PEM text, without any private key.
func PublicPEM(data string) string {
	var out []byte
	rest := []byte(data)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return string(out)
		}
		if block.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(block)...)
		}
	}
}
