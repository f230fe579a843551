package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const authDoc = `
name: auth
httpListeners: [{name: l, port: 8080}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: 9001}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`

const (
	readerToken = "reader-token-0123456789abcdef"
	adminToken  = "admin-token-0123456789abcdef"
)

// syncBuffer collects a replica's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// authReplica is one control plane over TLS on embedded etcd, with tokens, whose log the test reads.
func authReplica(t *testing.T, opts cptest.Options) (*cptest.Replica, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Tokens == nil {
		opts.Tokens = server.Tokens{
			readerToken: {Name: "ci-reader", Via: "token", Roles: []string{pki.RoleReader}},
			adminToken:  {Name: "ci-admin", Via: "token", Roles: []string{pki.RoleAdmin}},
		}
	}
	return cptest.StartWith(t, cptest.Etcd(t), "cp-auth", opts), logs
}

func cert(t *testing.T, name string, roles ...string) *tls.Certificate {
	t.Helper()
	c := cptest.Certificate(t, pki.Request{CommonName: name, Roles: roles})
	return &c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func gateway(t *testing.T) *fgv1.Gateway {
	t.Helper()
	gw, err := config.Decode([]byte(authDoc))
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

// The two roles: a reader lists and gets but may not change anything; an admin may.
func TestRolesOverTLS(t *testing.T) {
	cp, logs := authReplica(t, cptest.Options{})
	reader := fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, cert(t, "rita", pki.RoleReader)))
	admin := fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, cert(t, "adam", pki.RoleAdmin)))

	if _, err := reader.ListGateways(ctx(t), &fgv1.ListGatewaysRequest{}); err != nil {
		t.Fatalf("reader list: %v", err)
	}
	_, err := reader.ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)})
	wantCode(t, "reader apply", err, codes.PermissionDenied)
	if !strings.Contains(status.Convert(err).Message(), "needs role admin") {
		t.Errorf("denial message: %v", err)
	}
	// Every admin method is refused to a reader before it runs; every read answers.
	for name, call := range map[string]func() error{
		"DeleteGateway": func() error {
			_, err := reader.DeleteGateway(ctx(t), &fgv1.DeleteGatewayRequest{Name: "auth"})
			return err
		},
		"ProbeBackend": func() error {
			_, err := reader.ProbeBackend(ctx(t), &fgv1.ProbeBackendRequest{Gateway: "auth"})
			return err
		},
		"DrainServer": func() error {
			_, err := reader.DrainServer(ctx(t), &fgv1.DrainServerRequest{Gateway: "auth"})
			return err
		},
		"UndrainServer": func() error {
			_, err := reader.UndrainServer(ctx(t), &fgv1.UndrainServerRequest{Gateway: "auth"})
			return err
		},
	} {
		wantCode(t, "reader "+name, call(), codes.PermissionDenied)
	}

	if _, err := admin.ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)}); err != nil {
		t.Fatalf("admin apply: %v", err)
	}
	for name, call := range map[string]func() error{
		"GetGateway": func() error { _, err := reader.GetGateway(ctx(t), &fgv1.GetGatewayRequest{Name: "auth"}); return err },
		"ListDataPlanes": func() error {
			_, err := reader.ListDataPlanes(ctx(t), &fgv1.ListDataPlanesRequest{Gateway: "auth"})
			return err
		},
		"BackendHealth": func() error {
			_, err := reader.BackendHealth(ctx(t), &fgv1.BackendHealthRequest{Gateway: "auth"})
			return err
		},
		"BackendHealthHistory": func() error {
			_, err := reader.BackendHealthHistory(ctx(t), &fgv1.BackendHealthHistoryRequest{Gateway: "auth", Address: "127.0.0.1:9001"})
			return err
		},
		"DrainStatus": func() error {
			_, err := reader.DrainStatus(ctx(t), &fgv1.DrainStatusRequest{Gateway: "auth"})
			return err
		},
	} {
		if err := call(); err != nil {
			t.Errorf("reader %s: %v", name, err)
		}
	}
	// An admin reads too, and deletes.
	if _, err := admin.GetGateway(ctx(t), &fgv1.GetGatewayRequest{Name: "auth"}); err != nil {
		t.Fatalf("admin get: %v", err)
	}
	if _, err := admin.DeleteGateway(ctx(t), &fgv1.DeleteGatewayRequest{Name: "auth"}); err != nil {
		t.Fatalf("admin delete: %v", err)
	}
	// A certificate of this CA without a role gets nothing.
	norole := fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, cert(t, "nobody", pki.RoleDataPlane)))
	_, err = norole.ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "data-plane certificate lists gateways", err, codes.PermissionDenied)

	// Denials are logged with who and what; allowed calls carry the caller.
	log := logs.String()
	for _, want := range []string{
		`msg="access denied" who="certificate \"rita\" (roles reader)" method=/fleetgate.v1.ConfigService/ApplyGateway`,
		`code=PermissionDenied`,
		`identity="certificate \"adam\" (roles admin)"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

func TestTokens(t *testing.T) {
	cp, logs := authReplica(t, cptest.Options{})
	withToken := func(tok string) fgv1.ConfigServiceClient {
		return fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, nil, grpc.WithPerRPCCredentials(bearer(tok))))
	}
	if _, err := withToken(readerToken).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{}); err != nil {
		t.Fatalf("reader token list: %v", err)
	}
	_, err := withToken(readerToken).ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)})
	wantCode(t, "reader token apply", err, codes.PermissionDenied)
	if _, err := withToken(adminToken).ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)}); err != nil {
		t.Fatalf("admin token apply: %v", err)
	}
	_, err = withToken("not-a-token-0123456789").ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "unknown token", err, codes.Unauthenticated)
	// A token decides even beside an admin certificate: a bad one is refused.
	both := fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, cert(t, "adam", pki.RoleAdmin), grpc.WithPerRPCCredentials(bearer("wrong-token-0123456789"))))
	_, err = both.ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "bad token with an admin certificate", err, codes.Unauthenticated)
	// A token cannot open a worker's stream.
	stream, err := fgv1.NewDataPlaneServiceClient(cptest.DialAs(t, cp.Addr, nil, grpc.WithPerRPCCredentials(bearer(adminToken)))).Connect(ctx(t))
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "admin token connects as a worker", err, codes.PermissionDenied)
	if log := logs.String(); !strings.Contains(log, `who="token \"ci-reader\" (roles reader)"`) || strings.Contains(log, readerToken) {
		t.Errorf("token denial log (must name the token, never show it):\n%s", log)
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// No certificate and no token: Unauthenticated. Health and reflection stay open.
func TestAnonymous(t *testing.T) {
	cp, logs := authReplica(t, cptest.Options{})
	conn := cptest.DialAs(t, cp.Addr, nil)
	_, err := fgv1.NewConfigServiceClient(conn).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "anonymous list", err, codes.Unauthenticated)
	stream, err := fgv1.NewDataPlaneServiceClient(conn).Connect(ctx(t))
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "anonymous connect", err, codes.Unauthenticated)
	if !strings.Contains(logs.String(), `msg="access denied" who=anonymous`) {
		t.Errorf("anonymous denial not logged:\n%s", logs.String())
	}

	resp, err := healthpb.NewHealthClient(conn).Check(ctx(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without credentials: %v %v", resp, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.Recv()
	if err != nil || !strings.Contains(r.String(), "fleetgate.v1.ConfigService") {
		t.Fatalf("reflection without credentials: %v %v", r, err)
	}

	// Plaintext is refused on the TLS port.
	_, err = fgv1.NewConfigServiceClient(cptest.DialInsecure(t, cp.Addr)).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "plaintext to the TLS port", err, codes.Unavailable)
}

// A client certificate from a CA the control plane does not trust is refused at the handshake.
func TestUntrustedClientCA(t *testing.T) {
	cp, logs := authReplica(t, cptest.Options{})
	other, err := pki.NewCA("Other CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := other.Issue(pki.Request{CommonName: "admin", Roles: []string{pki.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, &c)).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "certificate of another CA", err, codes.Unavailable)
	// Refused at the handshake ("tls: unknown certificate authority"), so no call reached the
	// authorization layer.
	if log := logs.String(); strings.Contains(log, "access denied") {
		t.Errorf("the call got past the handshake:\n%s", log)
	}

	// And the control plane's certificate is not trusted without its CA.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: other.Pool(), Certificates: []tls.Certificate{*cert(t, "adam", pki.RoleAdmin)}}
	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = fgv1.NewConfigServiceClient(conn).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "server certificate of an untrusted CA", err, codes.Unavailable)
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("handshake error does not mention the certificate: %v", err)
	}
}

// hello opens a Connect stream as dataplaneID with cert and returns the first answer's error (nil
// when the control plane accepted the worker: it sends the current snapshot or nothing).
func hello(t *testing.T, addr string, cert *tls.Certificate, dataplaneID string) error {
	t.Helper()
	c, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := fgv1.NewDataPlaneServiceClient(cptest.DialAs(t, addr, cert)).Connect(c)
	if err != nil {
		return err
	}
	h := &fgv1.Hello{DataplaneId: dataplaneID, Gateway: "auth", Address: "127.0.0.1"}
	if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: h}}); err != nil {
		if err == io.EOF {
			// The server ended the stream already; its status comes with Recv.
			_, err = stream.Recv()
		}
		return err
	}
	got := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		return err
	case <-time.After(2 * time.Second):
		return nil // no snapshot to send and no refusal: connected
	}
}

// A worker reports only under the id its certificate names; the shared certificate may claim any,
// except in strict mode; operators' identities are not workers.
func TestWorkerIdentity(t *testing.T) {
	cp, logs := authReplica(t, cptest.Options{})
	admin := fgv1.NewConfigServiceClient(cptest.DialAs(t, cp.Addr, cert(t, "adam", pki.RoleAdmin)))
	if _, err := admin.ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)}); err != nil {
		t.Fatal(err)
	}
	dp1 := cert(t, "dp-1", pki.RoleDataPlane)
	if err := hello(t, cp.Addr, dp1, "dp-1"); err != nil {
		t.Fatalf("dp-1 as dp-1: %v", err)
	}
	err := hello(t, cp.Addr, dp1, "dp-2")
	wantCode(t, "dp-1's certificate saying hello as dp-2", err, codes.PermissionDenied)
	if !strings.Contains(status.Convert(err).Message(), `may not connect as worker "dp-2"`) {
		t.Errorf("message: %v", err)
	}
	if log := logs.String(); !strings.Contains(log, `who="certificate \"dp-1\" (roles dataplane)" method="/fleetgate.v1.DataPlaneService/Connect as dp-2"`) {
		t.Errorf("impersonation not logged:\n%s", log)
	}
	shared := cptest.Certificate(t, pki.Request{CommonName: pki.DataPlaneName, Roles: []string{pki.RoleDataPlane}, AnyDataPlane: true})
	if err := hello(t, cp.Addr, &shared, "dp-7"); err != nil {
		t.Fatalf("shared certificate as dp-7: %v", err)
	}
	wantCode(t, "admin connects as a worker", hello(t, cp.Addr, cert(t, "adam", pki.RoleAdmin), "adam"), codes.PermissionDenied)
	wantCode(t, "reader connects as a worker", hello(t, cp.Addr, cert(t, "rita", pki.RoleReader), "rita"), codes.PermissionDenied)
	// Only the honest workers were ever registered.
	resp, err := admin.ListDataPlanes(ctx(t), &fgv1.ListDataPlanesRequest{Gateway: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	for _, dp := range resp.GetDataplanes() {
		if dp.GetId() != "dp-1" && dp.GetId() != "dp-7" {
			t.Errorf("registered worker %q", dp.GetId())
		}
	}

	strict, _ := authReplica(t, cptest.Options{StrictDataPlaneIDs: true})
	wantCode(t, "strict: shared certificate", hello(t, strict.Addr, &shared, "dp-7"), codes.PermissionDenied)
	if err := hello(t, strict.Addr, dp1, "dp-1"); err != nil {
		t.Fatalf("strict: dp-1 as dp-1: %v", err)
	}
}

// --insecure: plaintext, and nobody is asked who they are.
func TestInsecure(t *testing.T) {
	cp := cptest.StartWith(t, cptest.Etcd(t), "cp-insecure", cptest.Options{Insecure: true})
	if _, err := fgv1.NewConfigServiceClient(cptest.DialInsecure(t, cp.Addr)).ApplyGateway(ctx(t), &fgv1.ApplyGatewayRequest{Gateway: gateway(t)}); err != nil {
		t.Fatal(err)
	}
	if got := cptest.GatewayctlFlags(cp.Addr); len(got) != 1 || got[0] != "--insecure" {
		t.Errorf("GatewayctlFlags = %v", got)
	}
	for _, cfg := range []server.Config{
		{EtcdEndpoints: []string{"http://127.0.0.1:1"}},
		{EtcdEndpoints: []string{"http://127.0.0.1:1"}, Insecure: true, TLS: &tls.Config{}},
		{EtcdEndpoints: []string{"http://127.0.0.1:1"}, Insecure: true, Tokens: server.Tokens{adminToken: {}}},
	} {
		if _, err := server.New(t.Context(), cfg); err == nil {
			t.Errorf("server.New(%+v) succeeded", cfg)
		}
	}
}

// ServeHealth: grpc.health.v1 in plaintext for probes, nothing else.
func TestPlaintextHealth(t *testing.T) {
	etcd := cptest.Etcd(t)
	srv, err := server.New(t.Context(), server.Config{EtcdEndpoints: []string{etcd}, TLS: cptest.ServerTLS(t), Log: cptest.Logger(t), LeaseTTL: 2})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(lis); done <- struct{}{} }()
	go func() { _ = srv.ServeHealth(hlis); done <- struct{}{} }()
	defer func() { srv.Stop(); <-done; <-done }()
	conn, err := grpc.NewClient(hlis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cptest.Eventually(t, 10*time.Second, func() bool {
		r, err := healthpb.NewHealthClient(conn).Check(ctx(t), &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, "plaintext health does not say SERVING")
	_, err = fgv1.NewConfigServiceClient(conn).ListGateways(ctx(t), &fgv1.ListGatewaysRequest{})
	wantCode(t, "ConfigService on the health port", err, codes.Unimplemented)
}

func TestTokenFile(t *testing.T) {
	toks, err := server.ParseTokens([]byte(`
# operators
`+readerToken+` reader ci-reader
  `+adminToken+`   admin
`), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	if id := toks[readerToken]; id.Name != "ci-reader" || !id.Has(pki.RoleReader) || id.Has(pki.RoleAdmin) || id.Via != "token" {
		t.Errorf("reader token: %+v", id)
	}
	if id := toks[adminToken]; id.Name != "token-4" || !id.Has(pki.RoleAdmin) {
		t.Errorf("admin token: %+v", id)
	}
	for _, bad := range []string{
		readerToken,                // no role
		readerToken + " dataplane", // not a token role
		"short admin",              // too short
		readerToken + " reader a\n" + readerToken + " admin b", // repeated
		readerToken + " reader a b",                            // too many fields
	} {
		if _, err := server.ParseTokens([]byte(bad), "tokens"); err == nil {
			t.Errorf("ParseTokens(%q) succeeded", bad)
		}
	}
}
