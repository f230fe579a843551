package probe

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strconv"
	"strings"
	"time"
)

// http11 pins ALPN to HTTP/1.1: the probe speaks nothing else.
var http11 = []string{"http/1.1"}

// serverAuth is the key usage the chain must allow.
var serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}

// verifier classifies the backend's certificate inside the TLS handshake
// (tls.Config.VerifyConnection with InsecureSkipVerify, so that crypto/tls
// does not verify first and the outcome can be told apart exactly).
//
// Checks, in this order; the first failure decides the reason:
//
//  1. validity dates of the certificates the backend sent (leaf first):
//     backend-certificate-invalid-date. Azure reports an expired or not yet
//     valid certificate even when its issuer is unknown too, so dates come
//     before the chain.
//  2. the chain to a root (x509.Verify without a DNS name): with
//     CustomRoots, against the configured roots only, failing as
//     trusted-root-certificate-mismatch (also when the backend omits an
//     intermediate); otherwise against the system roots, failing as
//     backend-server-certificate-invalid-ca. A trusted root outside its
//     dates is invalid-date again; any other chain error (key usage, name
//     constraints, bad signature) is certificate-verification-failed.
//  3. the host name (SNI / probe host) against the leaf's SANs, or its CN
//     when it has no SAN (what Azure calls the common name check):
//     backend-certificate-invalid-common-name.
//
// A backend that sends no certificate is certificate-verification-failed.
type verifier struct {
	roots  *x509.CertPool // nil: system roots
	custom bool           // roots are the configured trusted roots only
	name   string         // name to verify
	// Azure's switches: skipChain turns off the date and chain checks (validateCertChainAndExpiration
	// false), skipName the name check (validateSNI false).
	skipChain, skipName bool

	reason  string // "" when verification passed (or never ran)
	message string
	detail  string // chain summary for the tls Stage
}

// errRejected aborts the handshake; the classification is in the verifier.
var errRejected = errors.New("backend certificate rejected")

func (v *verifier) verifyConnection(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	v.detail = describeTLS(&cs, v.name)
	if len(certs) == 0 {
		return v.reject(ReasonVerificationFailed, "the backend presented no certificate")
	}
	leaf := certs[0]
	now := time.Now()

	if !v.skipChain {
		if err := v.verifyChain(certs, now); err != nil {
			return err
		}
	}

	// 3. Name.
	if !v.skipName && !nameMatches(leaf, v.name) {
		return v.reject(ReasonInvalidCommonName,
			"the backend certificate's names ("+certNames(leaf)+") do not match the probe host name "+strconv.Quote(v.name))
	}
	return nil
}

// verifyChain checks the dates (1) and the chain (2).
func (v *verifier) verifyChain(certs []*x509.Certificate, now time.Time) error {
	leaf := certs[0]
	// 1. Dates, of every certificate the backend sent (leaf first).
	for _, c := range certs {
		if msg := dateProblem(c, now); msg != "" {
			return v.reject(ReasonInvalidDate, msg)
		}
	}

	// 2. Chain.
	opts := x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: now,
		KeyUsages:   serverAuth,
	}
	if v.custom && opts.Roots == nil {
		opts.Roots = x509.NewCertPool() // configured, but empty: trust nothing
	}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return v.chainError(err, certs, now)
	}
	return nil
}

func (v *verifier) reject(reason, msg string) error {
	v.reason, v.message = reason, msg
	return errRejected
}

func (v *verifier) chainError(err error, certs []*x509.Certificate, now time.Time) error {
	leaf := certs[0]
	var unknown x509.UnknownAuthorityError
	var sysRoots x509.SystemRootsError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown) || errors.As(err, &sysRoots):
		what := "the backend certificate (subject " + dnString(leaf.Subject.CommonName) + ", issuer " + dnString(leaf.Issuer.CommonName)
		if bytes.Equal(leaf.RawSubject, leaf.RawIssuer) {
			what += ", self-signed"
		}
		what += ")"
		if v.custom {
			msg := what + " does not chain to any configured trusted root certificate: " + err.Error()
			if len(certs) == 1 && !bytes.Equal(leaf.RawSubject, leaf.RawIssuer) {
				msg += "; the backend sent only its leaf certificate: if an intermediate is missing, configure the backend to send the full chain"
			}
			return v.reject(ReasonTrustedRootMismatch, msg)
		}
		return v.reject(ReasonInvalidCA, what+" is not signed by a well-known certificate authority: "+err.Error())
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		// The presented certificates passed step 1: this is the root
		// (from RootCAs or the system) that anchors the chain.
		if invalid.Cert != nil {
			if msg := dateProblem(invalid.Cert, now); msg != "" {
				return v.reject(ReasonInvalidDate, "trusted root "+msg)
			}
		}
		return v.reject(ReasonInvalidDate, err.Error())
	}
	return v.reject(ReasonVerificationFailed, "the backend certificate could not be verified: "+err.Error())
}

// dateProblem describes why now is outside c's validity, or returns "".
func dateProblem(c *x509.Certificate, now time.Time) string {
	var state string
	switch {
	case now.Before(c.NotBefore):
		state = " is not yet valid"
	case now.After(c.NotAfter):
		state = " has expired"
	default:
		return ""
	}
	return "certificate " + dnString(c.Subject.CommonName) + state +
		": valid from " + fmtTime(c.NotBefore) + " to " + fmtTime(c.NotAfter) + ", now " + fmtTime(now)
}

// nameMatches checks the probe host name against the certificate: its SANs
// (x509 rules, wildcards, IP SANs), or, for a legacy certificate without any
// DNS or IP SAN, its subject CN.
func nameMatches(leaf *x509.Certificate, name string) bool {
	if leaf.VerifyHostname(name) == nil {
		return true
	}
	if len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0 || leaf.Subject.CommonName == "" {
		return false
	}
	legacy := *leaf
	legacy.DNSNames = []string{leaf.Subject.CommonName}
	return legacy.VerifyHostname(name) == nil
}

func certNames(c *x509.Certificate) string {
	var b strings.Builder
	b.WriteString("CN=")
	b.WriteString(strconv.Quote(c.Subject.CommonName))
	b.WriteString(" SAN=[")
	writeSANs(&b, c)
	b.WriteString("]")
	return b.String()
}

func writeSANs(b *strings.Builder, c *x509.Certificate) {
	n := 0
	sep := func() {
		if n > 0 {
			b.WriteByte(' ')
		}
		n++
	}
	for _, d := range c.DNSNames {
		sep()
		b.WriteString(d)
	}
	for _, ip := range c.IPAddresses {
		sep()
		b.WriteString(ip.String())
	}
	for _, u := range c.URIs {
		sep()
		b.WriteString(u.String())
	}
}

// describeTLS summarises the handshake and each presented certificate for
// the tls Stage: version, cipher suite, SNI, then per certificate its
// subject CN, SANs, issuer CN and validity.
func describeTLS(cs *tls.ConnectionState, name string) string {
	var b strings.Builder
	b.Grow(128 + 192*len(cs.PeerCertificates))
	b.WriteString(tls.VersionName(cs.Version))
	b.WriteString(", ")
	b.WriteString(tls.CipherSuiteName(cs.CipherSuite))
	b.WriteString(", name ")
	b.WriteString(strconv.Quote(name))
	for i, c := range cs.PeerCertificates {
		b.WriteString("; cert[")
		b.WriteString(strconv.Itoa(i))
		b.WriteString("] subject CN=")
		b.WriteString(strconv.Quote(c.Subject.CommonName))
		b.WriteString(" SAN=[")
		writeSANs(&b, c)
		b.WriteString("] issuer CN=")
		b.WriteString(strconv.Quote(c.Issuer.CommonName))
		b.WriteString(" notBefore=")
		b.WriteString(fmtTime(c.NotBefore))
		b.WriteString(" notAfter=")
		b.WriteString(fmtTime(c.NotAfter))
	}
	return b.String()
}

func dnString(cn string) string { return "CN=" + strconv.Quote(cn) }

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
