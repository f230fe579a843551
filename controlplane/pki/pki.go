// Package pki is Fleetgate's small certificate authority: it makes the CA, the control plane's server
// certificate and the client certificates that identify operators (roles admin and reader) and
// data-plane workers (role dataplane), reads identities back out of verified certificates, and
// builds the TLS configurations of the control plane and its clients. Standard library crypto
// only: ECDSA P-256 keys, X.509 certificates, PEM files.
//
// A client certificate carries its roles twice, as organizational units (OU=admin) and as SAN
// URIs fleetgate://ROLE/NAME; either is enough. A data-plane certificate names the worker id it may
// claim: fleetgate://dataplane/ID (else its CN). The shared data-plane certificate of the auto PKI
// says fleetgate://dataplane/* and may claim any id; per-worker certificates are the strict mode.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Roles a client certificate or a token may hold.
const (
	// RoleAdmin may call every method of the ConfigService.
	RoleAdmin = "admin"
	// RoleReader may call the ConfigService's read-only methods.
	RoleReader = "reader"
	// RoleDataPlane may open a DataPlaneService Connect stream, as the worker id(s) it names.
	RoleDataPlane = "dataplane"
)

// Roles is every role, in order.
var Roles = []string{RoleAdmin, RoleReader, RoleDataPlane}

// AnyDataPlane, as the id in a data-plane certificate's URI (fleetgate://dataplane/*), lets the
// certificate claim any worker id.
const AnyDataPlane = "*"

// URIScheme is the scheme of the SAN URIs that carry roles: fleetgate://ROLE/NAME.
const URIScheme = "fleetgate"

// Validity periods and the renewal margin of certificates the auto PKI keeps.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 365 * 24 * time.Hour
	// RenewBefore: Ensure issues a certificate anew when it expires within this margin.
	RenewBefore = 30 * 24 * time.Hour
	// clockSkew back-dates NotBefore, so that a slightly slow clock elsewhere accepts a new certificate.
	clockSkew = 5 * time.Minute
)

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a self-signed CA valid for validity (0: CAValidity). Its common name is name followed
// by a random suffix, so that two CAs are told apart.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity == 0 {
		validity = CAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s %s", name, hex.EncodeToString(serial.Bytes()[:4])), Organization: []string{"Fleetgate"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("the CA key does not match the CA certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA from its certificate and key files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return ca, nil
}

// CertPEM is the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert.Raw) }

// KeyPEM is the CA key, PEM-encoded (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.Key) }

// Pool is a certificate pool holding just this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Request describes a certificate to issue.
type Request struct {
	// CommonName names the holder: a worker id, an operator, the control plane.
	CommonName string
	// Roles of a client certificate, each written as an OU and as a SAN URI fleetgate://ROLE/NAME
	// (NAME: the common name; for RoleDataPlane the worker id, or * with AnyDataPlane).
	Roles []string
	// AnyDataPlane: with RoleDataPlane, the certificate may claim any worker id.
	AnyDataPlane bool
	// Hosts are the DNS names and IP addresses of a server certificate.
	Hosts []string
	// Validity (0: LeafValidity), capped at the CA's own expiry.
	Validity time.Duration
}

// Issued is a certificate and its key, PEM-encoded, and the parsed certificate.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// Issue signs a new certificate with a new key. A request with Hosts makes a server certificate,
// one with Roles a client certificate (both: both).
func (ca *CA) Issue(req Request) (*Issued, error) {
	if err := checkName(req.CommonName); err != nil {
		return nil, err
	}
	if len(req.Hosts) == 0 && len(req.Roles) == 0 {
		return nil, errors.New("a certificate needs hosts (server) or roles (client)")
	}
	if req.Validity == 0 {
		req.Validity = LeafValidity
	}
	if req.Validity < 0 {
		return nil, fmt.Errorf("validity %s is not positive", req.Validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName, Organization: []string{"Fleetgate"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		SubjectKeyId:          skid,
	}
	for _, h := range req.Hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(strings.Trim(h, "[]")); {
		case h == "":
		case ip != nil:
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		case !slices.Contains(tmpl.DNSNames, h):
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(req.Hosts) > 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if len(req.Roles) > 0 {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		for _, role := range req.Roles {
			if !slices.Contains(Roles, role) {
				return nil, fmt.Errorf("unknown role %q: want one of %s", role, strings.Join(Roles, ", "))
			}
			if slices.Contains(tmpl.Subject.OrganizationalUnit, role) {
				continue
			}
			tmpl.Subject.OrganizationalUnit = append(tmpl.Subject.OrganizationalUnit, role)
			name := req.CommonName
			if role == RoleDataPlane && req.AnyDataPlane {
				name = AnyDataPlane
			}
			tmpl.URIs = append(tmpl.URIs, roleURI(role, name))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// roleURI is fleetgate://ROLE/NAME.
func roleURI(role, name string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: role, Path: "/" + name}
}

// checkName accepts a holder's name: 1-128 printable characters without / or spaces, and not "*".
func checkName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("name %q: must be 1-128 characters", name)
	}
	if name == AnyDataPlane {
		return fmt.Errorf("name %q is reserved", name)
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == 0x7f || r == '\\' {
			return fmt.Errorf("name %q: must not contain spaces, control characters, / or \\", name)
		}
	}
	return nil
}

// Verify checks that cert chains to ca for usage (x509.ExtKeyUsageClientAuth or ServerAuth).
func (ca *CA) Verify(cert *x509.Certificate, usage x509.ExtKeyUsage) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// ParseCertificate reads the first certificate of a PEM block sequence.
func ParseCertificate(pemBytes []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKey reads a PEM private key (PKCS #8, SEC 1 EC or PKCS #1 RSA).
func ParseKey(pemBytes []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var k any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return s.Add(s, big.NewInt(1<<32)), nil // at least 5 bytes, so the CA name suffix has 4
}

// keyID is the SHA-1 of the public key's DER, the usual subject key identifier.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(der)
	return sum[:], nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
