package server

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/fleet"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Health values of BackendHealth, as Azure spells them.
const (
	HealthHealthy   = "Healthy"
	HealthUnhealthy = "Unhealthy"
	HealthPartial   = "Partial"
	HealthUnknown   = "Unknown"
	HealthDraining  = "Draining"
)

// maxHistory is how many transitions BackendHealthHistory returns.
const maxHistory = 50

// HealthDetailHeader is the request metadata key by which a BackendHealth caller chooses whether
// the answer lists every worker's view of every server (BackendServerHealth.dataplanes):
// HealthDetailDataplanes lists them, HealthDetailSummary gives the fleet summary per server only.
// Without it, the views are listed while the answer holds at most 10,000 of them (a small fleet
// sees no change), and the summary is given beyond. The answer's header metadata carries the same
// key with what it holds. BackendHealthRequest has no field for this yet.
const HealthDetailHeader = "fleetgate-health-detail"

// Values of HealthDetailHeader.
const (
	HealthDetailDataplanes = "dataplanes"
	HealthDetailSummary    = "summary"
)

// BackendHealth answers from the health cache's per-server summaries, kept up to date as each
// worker's view changes, and the gateway's configuration.
func (s *configService) BackendHealth(ctx context.Context, req *fgv1.BackendHealthRequest) (*fgv1.BackendHealthResponse, error) {
	mode := detailAuto
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(HealthDetailHeader); len(v) > 0 {
			switch strings.ToLower(v[len(v)-1]) {
			case HealthDetailDataplanes:
				mode = detailAlways
			case HealthDetailSummary:
				mode = detailNever
			default:
				return nil, status.Errorf(codes.InvalidArgument, "%s: %q is neither %q nor %q", HealthDetailHeader, v[len(v)-1], HealthDetailDataplanes, HealthDetailSummary)
			}
		}
	}
	st, err := s.store.Get(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	var (
		resp   *fgv1.BackendHealthResponse
		detail bool
		drains map[string][]*fgv1.DrainReport
	)
	s.health.Gateway(req.GetGateway()).Read(func(r fleet.HealthReader) {
		resp, detail = render(st.Gateway, r, req.GetPool(), mode)
		drains = r.Drains()
	})
	markDraining(resp, drainsOf(drains), req.GetPool())
	resp.Revision = st.Revision
	if req.GetPool() != "" && len(resp.Pools) == 0 {
		return nil, status.Errorf(codes.NotFound, "pool %q: not in gateway %q", req.GetPool(), req.GetGateway())
	}
	held := HealthDetailSummary
	if detail {
		held = HealthDetailDataplanes
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(HealthDetailHeader, held))
	return resp, nil
}

// BackendHealthHistory merges the transitions every worker saw for a server.
func (s *configService) BackendHealthHistory(ctx context.Context, req *fgv1.BackendHealthHistoryRequest) (*fgv1.BackendHealthHistoryResponse, error) {
	if req.GetAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "address: is required (host:port or host)")
	}
	var out []*fgv1.HealthTransition
	s.health.Gateway(req.GetGateway()).Read(func(r fleet.HealthReader) { out = history(r, req.GetAddress()) })
	return &fgv1.BackendHealthHistoryResponse{Transitions: out}, nil
}
