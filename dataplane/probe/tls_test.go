package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunHTTPS(t *testing.T) {
	p := getPKI(t)
	roots := pool(p.root)
	tests := []struct {
		name   string
		chain  []*testCert // what the server sends, leaf first
		spec   func(*Spec)
		reason string // "" healthy
		facts  []string
	}{
		{name: "custom root, full chain", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true }},
		{name: "custom root, intermediate configured as root", chain: []*testCert{p.leaf},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots = pool(p.inter), true }},
		{name: "host header with port", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "backend.test:8443" }},
		{name: "ServerName overrides host header", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) {
				s.RootCAs, s.CustomRoots, s.HostHeader, s.ServerName = roots, true, "ignored.test", "backend.test"
			}},
		{name: "wildcard name", chain: []*testCert{p.wildcard, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "api.example.test" }},
		{name: "IP SAN, no host header", chain: []*testCert{p.ipLeaf, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "" }},
		{name: "legacy CN-only certificate", chain: []*testCert{p.cnOnly, p.inter},
			spec: func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true }},
		{name: "RootCAs without CustomRoots", chain: []*testCert{p.leaf, p.inter},
			spec: func(s *Spec) { s.RootCAs = roots }},

		{name: "self-signed, system roots", chain: []*testCert{p.selfSigned},
			reason: ReasonInvalidCA, facts: []string{`CN="backend.test"`, "self-signed", "well-known"}},
		{name: "unknown CA, system roots", chain: []*testCert{p.otherLeaf, p.otherRoot},
			reason: ReasonInvalidCA, facts: []string{`issuer CN="Unconfigured Root"`}},
		{name: "self-signed, custom roots", chain: []*testCert{p.selfSigned},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonTrustedRootMismatch, facts: []string{"self-signed", "configured trusted root"}},
		{name: "other CA, custom roots", chain: []*testCert{p.otherLeaf},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonTrustedRootMismatch, facts: []string{`issuer CN="Unconfigured Root"`, "configured trusted root"}},
		{name: "missing intermediate, custom root", chain: []*testCert{p.leaf},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonTrustedRootMismatch, facts: []string{`issuer CN="` + interCN + `"`, "only its leaf", "intermediate is missing"}},
		{name: "CustomRoots with no roots", chain: []*testCert{p.leaf, p.inter},
			spec:   func(s *Spec) { s.CustomRoots = true },
			reason: ReasonTrustedRootMismatch},
		{name: "wrong name", chain: []*testCert{p.wrongName, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidCommonName, facts: []string{`CN="other.test"`, "other.test www.other.test", `"backend.test"`}},
		{name: "wrong name for IP host", chain: []*testCert{p.leaf, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "" },
			reason: ReasonInvalidCommonName, facts: []string{`"127.0.0.1"`}},
		{name: "wildcard does not match apex", chain: []*testCert{p.wildcard, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "example.test" },
			reason: ReasonInvalidCommonName, facts: []string{`"example.test"`}},
		{name: "legacy CN-only, other name", chain: []*testCert{p.cnOnly, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "other.test" },
			reason: ReasonInvalidCommonName, facts: []string{`CN="backend.test" SAN=[]`}},
		{name: "expired", chain: []*testCert{p.expired, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidDate, facts: []string{"has expired", "valid from " + fmtTime(p.expired.cert.NotBefore) + " to " + fmtTime(p.expired.cert.NotAfter)}},
		{name: "not yet valid", chain: []*testCert{p.notYetValid, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidDate, facts: []string{"is not yet valid", "valid from " + fmtTime(p.notYetValid.cert.NotBefore)}},
		{name: "expired intermediate", chain: []*testCert{p.byExpiredInter, p.expiredInter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidDate, facts: []string{`CN="Expired Intermediate" has expired`}},
		{name: "expired trusted root", chain: []*testCert{p.byExpiredRoot},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = pool(p.expiredRoot), true },
			reason: ReasonInvalidDate, facts: []string{"trusted root", "expired"}},
		{name: "client-auth-only certificate", chain: []*testCert{p.clientOnly, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonVerificationFailed, facts: []string{"could not be verified", "key usage"}},

		// Several problems: date, then CA / trusted root, then name.
		{name: "expired and unknown CA: date first", chain: []*testCert{p.expiredOther},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonInvalidDate, facts: []string{"has expired"}},
		{name: "expired and unknown CA on system roots: date first", chain: []*testCert{p.expiredOther},
			reason: ReasonInvalidDate},
		{name: "expired and wrong name: date first", chain: []*testCert{p.expired, p.inter},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots, s.HostHeader = roots, true, "other.test" },
			reason: ReasonInvalidDate},
		{name: "unknown CA and wrong name: CA first", chain: []*testCert{p.otherWrongName},
			spec:   func(s *Spec) { s.RootCAs, s.CustomRoots = roots, true },
			reason: ReasonTrustedRootMismatch},
		{name: "unknown CA and wrong name, system roots: CA first", chain: []*testCert{p.otherWrongName},
			reason: ReasonInvalidCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startTLS(t, nil, tt.chain...)
			s := specFor(t, srv)
			if tt.spec != nil {
				tt.spec(&s)
			}
			r := Run(context.Background(), s)
			if tt.reason == "" {
				wantHealthy(t, r)
				if got := stageNames(r); got != "tcp,tls,http,body" {
					t.Errorf("stages = %s", got)
				}
				return
			}
			wantUnhealthy(t, r, tt.reason, tt.facts...)
			if got := stageNames(r); got != "tcp,tls" {
				t.Errorf("stages = %s, want tcp,tls", got)
			}
			if r.Status != 0 {
				t.Errorf("Status = %d", r.Status)
			}
		})
	}
}

// TestRunHTTPSStageDetail: the tls stage describes the chain the backend sent.
func TestRunHTTPSStageDetail(t *testing.T) {
	p := getPKI(t)
	for _, tt := range []struct {
		name    string
		chain   []*testCert
		healthy bool
	}{
		{"healthy", []*testCert{p.leaf, p.inter}, true},
		{"rejected", []*testCert{p.wrongName, p.inter}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLS(t, nil, tt.chain...)
			s := specFor(t, srv)
			s.RootCAs, s.CustomRoots = pool(p.root), true
			r := Run(context.Background(), s)
			if r.Healthy != tt.healthy {
				t.Fatalf("healthy = %v (%s: %s)", r.Healthy, r.Reason, r.Message)
			}
			st, ok := findStage(r, StageTLS)
			if !ok {
				t.Fatalf("no tls stage in %s", stageNames(r))
			}
			leaf, inter := tt.chain[0].cert, tt.chain[1].cert
			for _, want := range []string{
				"TLS 1.3", `name "backend.test"`,
				`cert[0] subject CN="` + leaf.Subject.CommonName + `" SAN=[` + strings.Join(leaf.DNSNames, " ") + `] issuer CN="` + interCN + `"`,
				"notBefore=" + fmtTime(leaf.NotBefore), "notAfter=" + fmtTime(leaf.NotAfter),
				`cert[1] subject CN="` + interCN + `" SAN=[] issuer CN="` + rootCN + `"`,
				"notAfter=" + fmtTime(inter.NotAfter),
			} {
				if !strings.Contains(st.Detail, want) {
					t.Errorf("tls detail %q lacks %q", st.Detail, want)
				}
			}
			if tt.healthy != (st.Err == "") {
				t.Errorf("tls stage Err %q", st.Err)
			}
		})
	}
}

// TestRunHTTPSProtocolErrors: TLS failures that are not about the certificate.
func TestRunHTTPSProtocolErrors(t *testing.T) {
	t.Run("plain HTTP server", func(t *testing.T) {
		srv := startHTTP(t, okHandler("ok"))
		s := specFor(t, srv)
		s.Protocol = "https"
		r := Run(context.Background(), s)
		wantUnhealthy(t, r, ReasonVerificationFailed, "TLS handshake with "+srv.Listener.Addr().String(), "does not look like a TLS handshake")
	})
	t.Run("status after TLS", func(t *testing.T) {
		p := getPKI(t)
		srv := startTLS(t, http.NotFoundHandler(), p.leaf, p.inter)
		s := specFor(t, srv)
		s.RootCAs, s.CustomRoots = pool(p.root), true
		r := Run(context.Background(), s)
		wantUnhealthy(t, r, ReasonStatusMismatch, "Expected:200-399 Received:404")
	})
	t.Run("body after TLS", func(t *testing.T) {
		p := getPKI(t)
		srv := startTLS(t, okHandler("degraded"), p.leaf, p.inter)
		s := specFor(t, srv)
		s.RootCAs, s.CustomRoots, s.Match.Body = pool(p.root), true, "healthy"
		r := Run(context.Background(), s)
		wantUnhealthy(t, r, ReasonBodyMismatch, `"healthy"`)
	})
}

// TestVerifierNoCertificate covers a handshake without a server certificate,
// which crypto/tls servers cannot produce.
func TestVerifierNoCertificate(t *testing.T) {
	v := verifier{name: "backend.test"}
	if err := v.verifyConnection(tls.ConnectionState{}); err == nil || v.reason != ReasonVerificationFailed || !strings.Contains(v.message, "no certificate") {
		t.Fatalf("err %v, reason %q, message %q", err, v.reason, v.message)
	}
}

func TestDateProblem(t *testing.T) {
	c := &x509.Certificate{NotBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	c.Subject.CommonName = "x"
	for _, tt := range []struct {
		now  time.Time
		want string
	}{
		{time.Date(2029, 12, 31, 23, 59, 59, 0, time.UTC), `certificate CN="x" is not yet valid: valid from 2030-01-01T00:00:00Z to 2031-01-01T00:00:00Z, now 2029-12-31T23:59:59Z`},
		{time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), ""},
		{time.Date(2031, 1, 1, 0, 0, 1, 0, time.UTC), `certificate CN="x" has expired: valid from 2030-01-01T00:00:00Z to 2031-01-01T00:00:00Z, now 2031-01-01T00:00:01Z`},
	} {
		if got := dateProblem(c, tt.now); got != tt.want {
			t.Errorf("dateProblem(%v) = %q, want %q", tt.now, got, tt.want)
		}
	}
}
