package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("Test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCA(t *testing.T) {
	ca := newCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA %v, MaxPathLen %d", c.IsCA, c.MaxPathLen)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA cannot sign certificates")
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if d := time.Until(c.NotAfter); d < CAValidity-time.Hour || d > CAValidity {
		t.Errorf("CA valid for %s", d)
	}
	if !strings.HasPrefix(c.Subject.CommonName, "Test CA ") {
		t.Errorf("CA name %q", c.Subject.CommonName)
	}
	if other := newCA(t); other.Cert.Subject.CommonName == c.Subject.CommonName {
		t.Error("two CAs share a name")
	}
	// PEM round trip.
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCA(ca.CertPEM(), keyPEM)
	if err != nil || !back.Cert.Equal(c) {
		t.Fatalf("ParseCA: %v", err)
	}
	otherKey, _ := newCA(t).KeyPEM()
	if _, err := ParseCA(ca.CertPEM(), otherKey); err == nil {
		t.Error("ParseCA accepted a key that does not match")
	}
}

func TestIssueServer(t *testing.T) {
	ca := newCA(t)
	is, err := ca.Issue(Request{CommonName: "cp", Hosts: []string{"127.0.0.1", "localhost", "::1", "cp.example.com", "[fd00::1]", "10.0.0.1", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := is.Cert
	if err := ca.Verify(c, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
	if ca.Verify(c, x509.ExtKeyUsageClientAuth) == nil {
		t.Error("a server certificate verifies for client auth")
	}
	for _, h := range []string{"127.0.0.1", "localhost", "::1", "cp.example.com", "fd00::1", "10.0.0.1"} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("SAN %s: %v", h, err)
		}
	}
	if len(c.IPAddresses) != 4 || len(c.DNSNames) != 2 {
		t.Errorf("SANs repeated or lost: IPs %v, DNS %v", c.IPAddresses, c.DNSNames)
	}
	if c.VerifyHostname("evil.example.com") == nil || c.VerifyHostname("10.0.0.2") == nil {
		t.Error("names outside the SANs verify")
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if id := IdentityOf(c); len(id.Roles) != 0 {
		t.Errorf("server certificate holds roles %v", id.Roles)
	}
	// The pair loads.
	if _, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM); err != nil {
		t.Fatal(err)
	}
}

func TestIssueClientRoles(t *testing.T) {
	ca := newCA(t)
	for _, tc := range []struct {
		req       Request
		roles     []string
		may, mayN []string // ids it may and may not claim
		reader    bool
	}{
		{Request{CommonName: "alice", Roles: []string{RoleAdmin}}, []string{"admin"}, nil, []string{"alice", "dp-1"}, true},
		{Request{CommonName: "bob", Roles: []string{RoleReader}}, []string{"reader"}, nil, []string{"bob"}, true},
		{Request{CommonName: "dp-1", Roles: []string{RoleDataPlane}}, []string{"dataplane"}, []string{"dp-1"}, []string{"dp-2", "*", ""}, false},
		{Request{CommonName: "dataplane", Roles: []string{RoleDataPlane}, AnyDataPlane: true}, []string{"dataplane"}, []string{"dp-1", "dp-2", "dataplane"}, []string{""}, false},
		{Request{CommonName: "both", Roles: []string{RoleAdmin, RoleDataPlane, RoleAdmin}}, []string{"admin", "dataplane"}, []string{"both"}, []string{"dp-1"}, true},
	} {
		is, err := ca.Issue(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.Verify(is.Cert, x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("%s: client certificate does not verify: %v", tc.req.CommonName, err)
		}
		if ca.Verify(is.Cert, x509.ExtKeyUsageServerAuth) == nil {
			t.Errorf("%s: a client certificate verifies as a server's", tc.req.CommonName)
		}
		id := IdentityOf(is.Cert)
		if id.Name != tc.req.CommonName || id.Via != "certificate" || !slices.Equal(id.Roles, tc.roles) {
			t.Errorf("%s: identity %+v, want roles %v", tc.req.CommonName, id, tc.roles)
		}
		if id.Has(RoleReader) != tc.reader {
			t.Errorf("%s: Has(reader) = %v", tc.req.CommonName, !tc.reader)
		}
		for _, dp := range tc.may {
			if !id.MayClaim(dp) {
				t.Errorf("%s may not claim %q", tc.req.CommonName, dp)
			}
		}
		for _, dp := range tc.mayN {
			if id.MayClaim(dp) {
				t.Errorf("%s may claim %q", tc.req.CommonName, dp)
			}
		}
		// OU and URI both carry each role.
		if !slices.Equal(is.Cert.Subject.OrganizationalUnit, tc.roles) || len(is.Cert.URIs) != len(tc.roles) {
			t.Errorf("%s: OU %v, URIs %v", tc.req.CommonName, is.Cert.Subject.OrganizationalUnit, is.Cert.URIs)
		}
	}
	if got := IdentityOf(mustIssue(t, ca, Request{CommonName: "dp-1", Roles: []string{RoleDataPlane}}).Cert).String(); got != `certificate "dp-1" (roles dataplane)` {
		t.Errorf("String() = %s", got)
	}

	for _, bad := range []Request{
		{CommonName: "x", Roles: []string{"root"}},
		{CommonName: "", Roles: []string{RoleAdmin}},
		{CommonName: "a/b", Roles: []string{RoleAdmin}},
		{CommonName: "a b", Roles: []string{RoleAdmin}},
		{CommonName: "*", Roles: []string{RoleDataPlane}},
		{CommonName: "nothing"},
		{CommonName: "x", Roles: []string{RoleAdmin}, Validity: -time.Hour},
	} {
		if _, err := ca.Issue(bad); err == nil {
			t.Errorf("Issue(%+v) succeeded", bad)
		}
	}
}

func mustIssue(t *testing.T, ca *CA, req Request) *Issued {
	t.Helper()
	is, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// Roles are read from either place: a certificate made elsewhere with only OUs, or only URIs.
func TestIdentityFromForeignCertificates(t *testing.T) {
	ca := newCA(t)
	is := mustIssue(t, ca, Request{CommonName: "dp-7", Roles: []string{RoleDataPlane, RoleReader}})
	onlyOU := *is.Cert
	onlyOU.URIs = nil
	if id := IdentityOf(&onlyOU); !slices.Equal(id.Roles, []string{"dataplane", "reader"}) || !slices.Equal(id.DataPlaneIDs, []string{"dp-7"}) {
		t.Errorf("OU only: %+v", id)
	}
	onlyURI := *is.Cert
	onlyURI.Subject.OrganizationalUnit = []string{"engineering"}
	onlyURI.Subject.CommonName = "something-else"
	if id := IdentityOf(&onlyURI); !slices.Equal(id.Roles, []string{"dataplane", "reader"}) || !id.MayClaim("dp-7") || id.MayClaim("something-else") {
		t.Errorf("URI only: %+v", id)
	}
	none := *is.Cert
	none.URIs, none.Subject.OrganizationalUnit = nil, []string{"Admin", "staff"}
	if id := IdentityOf(&none); len(id.Roles) != 0 || id.Has(RoleReader) || id.MayClaim("dp-7") {
		t.Errorf("no role: %+v", id)
	}
}

// A certificate from another CA does not verify; expiry is capped at the CA's.
func TestVerifyChain(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	is := mustIssue(t, other, Request{CommonName: "admin", Roles: []string{RoleAdmin}})
	if ca.Verify(is.Cert, x509.ExtKeyUsageClientAuth) == nil {
		t.Fatal("a certificate of another CA verifies")
	}
	short, err := NewCA("Short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustIssue(t, short, Request{CommonName: "x", Roles: []string{RoleReader}})
	if leaf.Cert.NotAfter.After(short.Cert.NotAfter) {
		t.Errorf("leaf outlives its CA: %s > %s", leaf.Cert.NotAfter, short.Cert.NotAfter)
	}
}

func TestEnsure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	did, err := Ensure(dir, []string{"cp.example.com", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(did) != 4 {
		t.Errorf("first Ensure did %v", did)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key", "dataplane.crt", "dataplane.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	ca, err := LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseCertificate(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srv := cert("server")
	for _, h := range []string{"127.0.0.1", "localhost", "::1", "cp.example.com", "10.1.2.3"} {
		if err := srv.VerifyHostname(h); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if err := ca.Verify(srv, x509.ExtKeyUsageServerAuth); err != nil {
		t.Error(err)
	}
	if id := IdentityOf(cert("admin")); !id.Has(RoleAdmin) || ca.Verify(cert("admin"), x509.ExtKeyUsageClientAuth) != nil {
		t.Errorf("admin.crt: %+v", id)
	}
	if id := IdentityOf(cert("dataplane")); !id.AnyID() || !id.MayClaim("dp-9") || id.Has(RoleReader) {
		t.Errorf("dataplane.crt: %+v", id)
	}

	// Again: nothing to do.
	if did, err := Ensure(dir, []string{"cp.example.com"}); err != nil || len(did) != 0 {
		t.Fatalf("second Ensure: %v %v", did, err)
	}
	// A new host: only the server certificate is issued anew, and it keeps the old names.
	serial := srv.SerialNumber
	did, err = Ensure(dir, []string{"new.example.com"})
	if err != nil || len(did) != 1 || !strings.Contains(did[0], "server.crt") || !strings.Contains(did[0], "new.example.com") {
		t.Fatalf("Ensure with a new host: %v %v", did, err)
	}
	srv = cert("server")
	if srv.SerialNumber.Cmp(serial) == 0 {
		t.Fatal("server certificate not replaced")
	}
	for _, h := range []string{"new.example.com", "cp.example.com", "10.1.2.3", "127.0.0.1"} {
		if err := srv.VerifyHostname(h); err != nil {
			t.Errorf("renewed server certificate: %v", err)
		}
	}
	// A missing certificate is issued again; a directory without ca.key can only be checked.
	os.Remove(filepath.Join(dir, "admin.key"))
	if did, err := Ensure(dir, nil); err != nil || len(did) != 1 {
		t.Fatalf("Ensure after admin.key was removed: %v %v", did, err)
	}
	os.Remove(filepath.Join(dir, "ca.key"))
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatalf("complete PKI without ca.key: %v", err)
	}
	if _, err := Ensure(dir, []string{"other.example.com"}); err == nil || !strings.Contains(err.Error(), "ca.key") {
		t.Fatalf("new host without ca.key: %v", err)
	}
	// A read-only directory (a mounted secret) is checked only.
	if os.Geteuid() != 0 { // root writes anyway
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		if _, err := Ensure(dir, nil); err != nil {
			t.Fatalf("read-only complete PKI: %v", err)
		}
		if _, err := Ensure(dir, []string{"other.example.com"}); err == nil {
			t.Fatal("read-only PKI lacking a host passed")
		}
	}
}

// Replicas sharing a directory make one CA between them.
func TestEnsureConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := Ensure(dir, nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ServerTLS(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt")); err != nil {
		t.Fatal(err)
	}
}

func TestIssueToDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "dataplane-dp-1.crt"), filepath.Join(dir, "dataplane-dp-1.key")
	if _, err := Issue(dir, dir, "dataplane-dp-1", Request{CommonName: "dp-1", Roles: []string{RoleDataPlane}}); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if id := IdentityOf(pair.Leaf); !id.MayClaim("dp-1") || id.MayClaim("dp-2") {
		t.Errorf("per-worker certificate: %+v", id)
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	if _, err := Issue(t.TempDir(), dir, "x", Request{CommonName: "x", Roles: []string{RoleAdmin}}); err == nil {
		t.Error("Issue without a CA succeeded")
	}
}

// A TLS handshake between the PKI's server and client configurations, over loopback.
func TestTLSHandshake(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	srvCfg, err := ServerTLS(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	peers := make(chan []*x509.Certificate, 1)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() == nil {
				peers <- tc.ConnectionState().PeerCertificates
				_, _ = tc.Write([]byte("x"))
			}
			tc.Close()
		}
	}()
	dial := func(f ClientFiles) ([]*x509.Certificate, error) {
		cfg, err := ClientTLS(f)
		if err != nil {
			return nil, err
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return nil, err
		}
		return <-peers, nil
	}
	got, err := dial(FilesFromDir(dir, AdminName))
	if err != nil || len(got) != 1 || !IdentityOf(got[0]).Has(RoleAdmin) {
		t.Fatalf("admin handshake: %v %v", got, err)
	}
	// No client certificate: the handshake passes (a token may follow).
	if got, err := dial(ClientFiles{CAFile: filepath.Join(dir, "ca.crt")}); err != nil || len(got) != 0 {
		t.Fatalf("handshake without a client certificate: %v %v", got, err)
	}
	// Without the CA the server is not trusted.
	if _, err := dial(ClientFiles{}); err == nil {
		t.Fatal("handshake succeeded without trusting the CA")
	}
	// A client certificate of another CA is refused.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := Ensure(other, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(ClientFiles{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(other, "admin.crt"), KeyFile: filepath.Join(other, "admin.key")}); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	if _, err := ClientTLS(ClientFiles{CertFile: "x.crt"}); err == nil {
		t.Error("a certificate without its key was accepted")
	}
}

// A renewed certificate on disk is served without a restart.
func TestKeyPairFilesReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := Ensure(dir, nil); err != nil {
		t.Fatal(err)
	}
	kp, err := NewKeyPairFiles(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.Get()
	if _, err := Issue(dir, dir, "admin", Request{CommonName: "admin", Roles: []string{RoleAdmin}}); err != nil {
		t.Fatal(err)
	}
	kp.mu.Lock()
	kp.checked = time.Time{}
	kp.mu.Unlock()
	second, _ := kp.Get()
	if first.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) == 0 {
		t.Fatal("renewed certificate not picked up")
	}
	// A broken file keeps the last good pair.
	if err := os.WriteFile(filepath.Join(dir, "admin.crt"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	kp.mu.Lock()
	kp.checked = time.Time{}
	kp.mu.Unlock()
	if third, _ := kp.Get(); third != second {
		t.Fatal("a broken certificate file replaced the good pair")
	}
}
