package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// methodRoles is the access policy: the role each method needs. An admin holds the reader role
// too. A method of ours not listed here needs admin; openPrefixes need nobody.
var methodRoles = map[string]string{
	fgv1.ConfigService_GetGateway_FullMethodName:           pki.RoleReader,
	fgv1.ConfigService_ListGateways_FullMethodName:         pki.RoleReader,
	fgv1.ConfigService_ListDataPlanes_FullMethodName:       pki.RoleReader,
	fgv1.ConfigService_BackendHealth_FullMethodName:        pki.RoleReader,
	fgv1.ConfigService_BackendHealthHistory_FullMethodName: pki.RoleReader,
	fgv1.ConfigService_DrainStatus_FullMethodName:          pki.RoleReader,
	fgv1.ConfigService_ApplyGateway_FullMethodName:         pki.RoleAdmin,
	fgv1.ConfigService_DeleteGateway_FullMethodName:        pki.RoleAdmin,
	fgv1.ConfigService_ProbeBackend_FullMethodName:         pki.RoleAdmin,
	fgv1.ConfigService_DrainServer_FullMethodName:          pki.RoleAdmin,
	fgv1.ConfigService_UndrainServer_FullMethodName:        pki.RoleAdmin,
	fgv1.DataPlaneService_Connect_FullMethodName:           pki.RoleDataPlane,
}

// openPrefixes are services anyone reaching the port (over TLS) may call: health checking, and
// server reflection, which tells only the API's schema (public, in proto/).
var openPrefixes = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// RequiredRole is the role a method needs ("" when it is open to anyone).
func RequiredRole(fullMethod string) string {
	for _, p := range openPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return ""
		}
	}
	if r, ok := methodRoles[fullMethod]; ok {
		return r
	}
	return pki.RoleAdmin
}

// Tokens are bearer tokens and the identities they stand for, by token.
type Tokens map[string]pki.Identity

// ReadTokenFile reads bearer tokens: one "TOKEN ROLE [NAME]" a line, ROLE reader or admin, NAME
// (default token-LINE) shown in logs. Blank lines and lines starting with # are skipped. A token must
// be at least 16 characters and appear once.
func ReadTokenFile(path string) (Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTokens(b, path)
}

// ParseTokens reads the contents of a token file; source names it in errors.
func ParseTokens(b []byte, source string) (Tokens, error) {
	tokens := Tokens{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) < 2 || len(f) > 3 {
			return nil, fmt.Errorf("%s:%d: want TOKEN ROLE [NAME]", source, line)
		}
		tok, role, name := f[0], f[1], fmt.Sprintf("token-%d", line)
		if len(f) == 3 {
			name = f[2]
		}
		if role != pki.RoleReader && role != pki.RoleAdmin {
			return nil, fmt.Errorf("%s:%d: role %q: want reader or admin", source, line, role)
		}
		if len(tok) < 16 {
			return nil, fmt.Errorf("%s:%d: the token is shorter than 16 characters", source, line)
		}
		if _, dup := tokens[tok]; dup {
			return nil, fmt.Errorf("%s:%d: the token is already on another line", source, line)
		}
		tokens[tok] = pki.Identity{Name: name, Via: "token", Roles: []string{role}}
	}
	return tokens, sc.Err()
}

// authenticator authenticates every call (a bearer token, else the verified client certificate)
// and authorizes it by methodRoles; on Connect streams it holds a worker to the ids its
// certificate may claim.
type authenticator struct {
	tokens map[[sha256.Size]byte]pki.Identity
	// strictIDs refuses data-plane certificates that may claim any id.
	strictIDs bool
	log       *slog.Logger
}

func newAuthenticator(tokens Tokens, strictIDs bool, log *slog.Logger) *authenticator {
	a := &authenticator{tokens: map[[sha256.Size]byte]pki.Identity{}, strictIDs: strictIDs, log: log}
	for tok, id := range tokens {
		// Looked up by hash: the lookup's timing tells nothing about a token.
		a.tokens[sha256.Sum256([]byte(tok))] = id
	}
	return a
}

type identityKey struct{}

// IdentityFrom is the authenticated caller of a call (none on open methods and with Insecure).
func IdentityFrom(ctx context.Context) (pki.Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(pki.Identity)
	return id, ok
}

// authorize is the auth interceptor's AuthFunc.
func (a *authenticator) authorize(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	role := RequiredRole(method)
	if role == "" {
		return ctx, nil
	}
	id, err := a.identify(ctx)
	if err != nil {
		a.deny(ctx, "anonymous", method, err)
		return nil, err
	}
	switch {
	case !id.Has(role):
		err = status.Errorf(codes.PermissionDenied, "%s may not call %s: it needs role %s", id, method, role)
	case role == pki.RoleDataPlane && a.strictIDs && id.AnyID():
		err = status.Errorf(codes.PermissionDenied, "%s may claim any worker id, and this control plane requires per-worker certificates (--strict-dataplane-ids)", id)
	}
	if err != nil {
		a.deny(ctx, id.String(), method, err)
		return nil, err
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// identify returns the caller: the bearer token's identity when the call carries one (an unknown
// token is refused even with a certificate), else the verified client certificate's.
func (a *authenticator) identify(ctx context.Context) (pki.Identity, error) {
	if len(metadata.ValueFromIncomingContext(ctx, "authorization")) > 0 {
		tok, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return pki.Identity{}, err
		}
		if len(a.tokens) == 0 {
			return pki.Identity{}, status.Error(codes.Unauthenticated, "bearer tokens are not enabled on this control plane (--token-file)")
		}
		id, ok := a.tokens[sha256.Sum256([]byte(tok))]
		if !ok {
			return pki.Identity{}, status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return id, nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			return pki.IdentityOf(ti.State.VerifiedChains[0][0]), nil
		}
	}
	return pki.Identity{}, status.Error(codes.Unauthenticated, "no client certificate or bearer token")
}

// deny logs a refused call: who, what, from where and why.
func (a *authenticator) deny(ctx context.Context, who, method string, err error) {
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	st := status.Convert(err)
	a.log.Warn("access denied", "who", who, "method", method, "peer", from, "code", st.Code().String(), "reason", st.Message())
}

// guardHello is a stream interceptor (after authorize): on a Connect stream it refuses a hello
// whose dataplane id the caller's certificate may not claim, so a worker reports health and
// answers snapshots only under its own identity.
func (a *authenticator) guardHello(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != fgv1.DataPlaneService_Connect_FullMethodName {
		return handler(srv, ss)
	}
	id, ok := IdentityFrom(ss.Context())
	if !ok {
		return status.Error(codes.Unauthenticated, "no identity") // authorize runs first: not reached
	}
	return handler(srv, &helloGuard{ServerStream: ss, id: id, a: a})
}

type helloGuard struct {
	grpc.ServerStream
	id      pki.Identity
	a       *authenticator
	checked atomic.Bool
}

func (g *helloGuard) RecvMsg(m any) error {
	if err := g.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if g.checked.Swap(true) {
		return nil
	}
	req, ok := m.(*fgv1.ConnectRequest)
	if !ok || req.GetHello() == nil || req.GetHello().GetDataplaneId() == "" {
		return nil // the service itself rejects a stream that does not start with a hello
	}
	dpID := req.GetHello().GetDataplaneId()
	if !g.id.MayClaim(dpID) {
		err := status.Errorf(codes.PermissionDenied, "%s may not connect as worker %q (it may be %s)", g.id, dpID, strings.Join(g.id.DataPlaneIDs, ", "))
		g.a.deny(g.Context(), g.id.String(), fgv1.DataPlaneService_Connect_FullMethodName+" as "+dpID, err)
		return err
	}
	g.a.log.Debug("dataplane authenticated", "dataplane", dpID, "identity", g.id.String())
	return nil
}

// identityFields adds the caller to the log line of every call.
func identityFields(ctx context.Context) logging.Fields {
	if id, ok := IdentityFrom(ctx); ok {
		return logging.Fields{"identity", id.String()}
	}
	return nil
}
