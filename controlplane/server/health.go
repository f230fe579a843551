package server

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/config"
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

// BackendHealth aggregates every connected worker's fresh view into the fleet's.
func (s *configService) BackendHealth(ctx context.Context, req *fgv1.BackendHealthRequest) (*fgv1.BackendHealthResponse, error) {
	st, err := s.store.Get(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	views := s.health.Views(req.GetGateway())
	resp := Aggregate(st.Gateway, views, req.GetPool())
	markDraining(resp, Drains(views), req.GetPool())
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
	return &fgv1.BackendHealthHistoryResponse{Transitions: History(s.health.Views(req.GetGateway()), req.GetAddress())}, nil
}

type pairKey struct{ settings, address string }

type view struct {
	dataplane string
	server    *fgv1.ServerHealthReport
}

// Aggregate computes the fleet's health of a gateway's servers from its workers' views (by worker
// id): pools, then the settings rules use them with, then servers, in configuration order.
// A server is Healthy when every worker with a result sees it healthy, Unhealthy when every one sees
// it unhealthy, Partial when they disagree, and Unknown when no worker has a result.
func Aggregate(gw *fgv1.Gateway, views map[string]*fgv1.HealthReport, pool string) *fgv1.BackendHealthResponse {
	byPair := map[pairKey][]view{}
	ids := make([]string, 0, len(views))
	for id := range views {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, srv := range views[id].GetServers() {
			k := pairKey{srv.GetSettings(), srv.GetAddress()}
			byPair[k] = append(byPair[k], view{dataplane: id, server: srv})
		}
	}
	resp := &fgv1.BackendHealthResponse{Gateway: gw.GetName()}
	for _, pu := range config.PoolUses(gw) {
		if pool != "" && pu.Pool.GetName() != pool {
			continue
		}
		ph := &fgv1.BackendPoolHealth{Name: pu.Pool.GetName()}
		for _, set := range pu.Settings {
			sh := &fgv1.BackendSettingsHealth{Name: set.GetName()}
			for _, a := range pu.Pool.GetBackendAddresses() {
				addr := config.ServerAddress(a, set.GetPort())
				sh.Servers = append(sh.Servers, serverHealth(addr, byPair[pairKey{set.GetName(), addr}], len(views)))
			}
			ph.Settings = append(ph.Settings, sh)
		}
		for _, set := range pu.L4Settings {
			sh := &fgv1.BackendSettingsHealth{Name: set.GetName()}
			for _, a := range pu.Pool.GetBackendAddresses() {
				addr := config.ServerAddress(a, set.GetPort())
				sh.Servers = append(sh.Servers, serverHealth(addr, byPair[pairKey{set.GetName(), addr}], len(views)))
			}
			ph.Settings = append(ph.Settings, sh)
		}
		resp.Pools = append(resp.Pools, ph)
	}
	return resp
}

func serverHealth(addr string, vs []view, workers int) *fgv1.BackendServerHealth {
	out := &fgv1.BackendServerHealth{Address: addr}
	var healthy, unhealthy, pending []string
	var firstBad *fgv1.ServerHealthReport
	for _, v := range vs {
		out.Dataplanes = append(out.Dataplanes, &fgv1.DataPlaneServerHealth{
			Dataplane: v.dataplane,
			Health:    v.server.GetHealth(),
			Reason:    v.server.GetReason(),
			Message:   v.server.GetMessage(),
			LastProbe: v.server.GetLastProbe(),
		})
		switch v.server.GetHealth() {
		case HealthHealthy:
			healthy = append(healthy, v.dataplane)
		case HealthUnhealthy:
			unhealthy = append(unhealthy, v.dataplane)
			if firstBad == nil {
				firstBad = v.server
			}
		default:
			pending = append(pending, v.dataplane)
		}
	}
	out.HealthyDataplanes = int32(len(healthy))
	switch {
	case len(vs) == 0 && workers == 0:
		out.Health = HealthUnknown
		out.HealthProbeLog = "no data-plane worker is connected with a fresh health report"
	case len(vs) == 0:
		out.Health = HealthUnknown
		out.HealthProbeLog = fmt.Sprintf("none of the %d reporting workers probes this server", workers)
	case len(healthy) == 0 && len(unhealthy) == 0:
		out.Health = HealthUnknown
		out.HealthProbeLog = fmt.Sprintf("probe pending on %s", strings.Join(pending, ", "))
	case len(unhealthy) == 0:
		out.Health = HealthHealthy
		out.HealthProbeLog = "Success. Received 200 status code"
		if m := vs[0].server.GetMessage(); m != "" {
			out.HealthProbeLog = m
		}
	case len(healthy) == 0:
		out.Health = HealthUnhealthy
		out.Reason, out.HealthProbeLog = firstBad.GetReason(), firstBad.GetMessage()
	default:
		out.Health = HealthPartial
		out.Reason = firstBad.GetReason()
		out.HealthProbeLog = fmt.Sprintf("healthy on %s; unhealthy on %s: %s",
			strings.Join(healthy, ", "), strings.Join(unhealthy, ", "), firstBad.GetMessage())
	}
	return out
}

// History merges the transitions of a server ("host:port", or a host for every port) that every
// worker kept, oldest first, the latest maxHistory.
func History(views map[string]*fgv1.HealthReport, address string) []*fgv1.HealthTransition {
	var out []*fgv1.HealthTransition
	for _, rep := range views {
		for _, srv := range rep.GetServers() {
			if srv.GetAddress() != address {
				if h, _, err := net.SplitHostPort(srv.GetAddress()); err != nil || h != address {
					continue
				}
			}
			out = append(out, srv.GetTransitions()...)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].GetAt().AsTime(), out[j].GetAt().AsTime()
		if a.Equal(b) {
			return out[i].GetDataplane() < out[j].GetDataplane()
		}
		return a.Before(b)
	})
	if len(out) > maxHistory {
		out = out[len(out)-maxHistory:]
	}
	return out
}
