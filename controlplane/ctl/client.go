package ctl

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// dial opens the connection to the control plane. Every command connects through here: transport
// security and credentials belong in this one place.
// maxResponseBytes bounds an answer gatewayctl accepts.
const maxResponseBytes = 256 << 20

func dial(f *globalFlags) (*grpc.ClientConn, error) {
	return grpc.NewClient(f.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("gatewayctl"),
		// BackendHealth of a large fleet (1,000 workers x 1,000 servers) is tens of MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxResponseBytes)),
	)
}

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
	case codes.Unavailable:
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
