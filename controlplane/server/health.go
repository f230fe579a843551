package server

import (
	"context"

	"google.golang.org/grpc/codes"
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

// BackendHealth answers from the health cache's per-server summaries, kept up to date as each
// worker's view changes, and the gateway's configuration: each server's fleet summary (verdict,
// reason, worker counts, newest probe), and every worker's view of it only when the request sets
// dataplanes.
func (s *configService) BackendHealth(ctx context.Context, req *fgv1.BackendHealthRequest) (*fgv1.BackendHealthResponse, error) {
	st, err := s.store.Get(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	var (
		resp   *fgv1.BackendHealthResponse
		drains map[string][]*fgv1.DrainReport
	)
	s.health.Gateway(req.GetGateway()).Read(func(r fleet.HealthReader) {
		resp = render(st.Gateway, r, req.GetPool(), req.GetDataplanes())
		drains = r.Drains()
	})
	markDraining(resp, drainsOf(drains), req.GetPool())
	resp.Revision = st.Revision
	if req.GetPool() != "" && len(resp.Pools) == 0 {
		return nil, status.Errorf(codes.NotFound, "pool %q: not in gateway %q", req.GetPool(), req.GetGateway())
	}
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
