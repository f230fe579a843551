package ctl

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// maxResponseBytes bounds an answer gatewayctl accepts.
const maxResponseBytes = 256 << 20

// dial opens the connection to the control plane. Every command connects through here: transport
// security and credentials belong in this one place. The connection is TLS, verified against
// --ca-file (or --pki-dir's ca.crt, else the system's CAs), presenting --cert-file/--key-file (or
// --pki-dir's admin.crt/.key) if given, and sending --token on every call if given; --insecure is
// plaintext with no credentials.
func dial(f *globalFlags) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithUserAgent("gatewayctl"),
		// BackendHealth with every worker's view (--dataplanes) of a large fleet is tens of MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes)),
	}
	if f.insecure {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		return grpc.NewClient(f.server, opts...)
	}
	files := pki.ClientFiles{CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.keyFile, ServerName: f.serverName}
	if f.pkiDir != "" {
		d := pki.FilesFromDir(f.pkiDir, pki.AdminName)
		if files.CAFile == "" {
			files.CAFile = d.CAFile
		}
		if files.CertFile == "" && files.KeyFile == "" {
			files.CertFile, files.KeyFile = d.CertFile, d.KeyFile
		}
	}
	cfg, err := pki.ClientTLS(files)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if f.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(f.token)))
	}
	return grpc.NewClient(f.server, opts...)
}

// bearerToken sends "authorization: Bearer TOKEN" on every call, over TLS only.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

// call connects to the control plane and runs fn under the --timeout deadline. A failure comes back
// ready to print (an *exitError).
func (a *app) call(ctx context.Context, fn func(context.Context, fgv1.ConfigServiceClient) error) error {
	conn, err := dial(&a.flags)
	if err != nil {
		return failf("--server %q: %v", a.flags.server, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, a.flags.timeout)
	defer cancel()
	if err := fn(ctx, fgv1.NewConfigServiceClient(conn)); err != nil {
		return a.rpcError(err)
	}
	return nil
}

// rpcError renders a failed call for the operator: the status message rather than the raw rpc
// error, every field violation of an invalid configuration, and where the control plane was sought
// when it could not be reached.
func (a *app) rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return failf("%v", err)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		var violations []*errdetails.BadRequest_FieldViolation
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				violations = append(violations, br.GetFieldViolations()...)
			}
		}
		if len(violations) > 0 {
			var b strings.Builder
			fmt.Fprintf(&b, "error: invalid gateway (%d %s)", len(violations), plural(len(violations), "error", "errors"))
			for _, v := range violations {
				fmt.Fprintf(&b, "\n  %s: %s", v.GetField(), v.GetDescription())
			}
			return &exitError{code: ExitError, msg: b.String()}
		}
	case codes.Unauthenticated:
		return failf("not authenticated by the control plane at %s: %s (give gatewayctl a client certificate, --pki-dir or --cert-file and --key-file, or a token, --token or $%s)", a.flags.server, st.Message(), EnvToken)
	case codes.PermissionDenied:
		return failf("permission denied: %s", st.Message())
	case codes.Unavailable:
		if msg := st.Message(); strings.Contains(msg, "certificate") || strings.Contains(msg, "tls:") || strings.Contains(msg, "handshake") {
			return failf("control plane at %s unavailable: %s (TLS: does --ca-file or --pki-dir hold the control plane's CA, and does it accept the client certificate? a control plane run with --insecure needs --insecure)", a.flags.server, msg)
		}
		return failf("control plane at %s unavailable: %s", a.flags.server, st.Message())
	case codes.DeadlineExceeded:
		return failf("no answer from the control plane at %s within %s (--timeout): %s", a.flags.server, a.flags.timeout, st.Message())
	}
	return failf("%s", st.Message())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
