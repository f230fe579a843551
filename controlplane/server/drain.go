package server

import (
	"context"
	"net"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// DrainServer records an operator's drain in etcd; workers get it with the next snapshot.
func (s *configService) DrainServer(ctx context.Context, req *fgv1.DrainServerRequest) (*fgv1.DrainServerResponse, error) {
	if t := req.GetTimeoutSeconds(); t < 0 || t > config.MaxDrainTimeout {
		return nil, status.Errorf(codes.InvalidArgument, "timeoutSeconds: %d is out of range 1-%d (0: the settings' drain timeout)", t, config.MaxDrainTimeout)
	}
	d := &fgv1.AdminDrain{Pool: req.GetPool(), Address: hostOnly(req.GetAddress()), TimeoutSeconds: req.GetTimeoutSeconds(), StartedAt: timestamppb.Now()}
	rev, err := s.store.SetDrain(ctx, req.GetGateway(), d, false)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	s.log.Info("server drain started", "gateway", req.GetGateway(), "pool", d.Pool, "address", d.Address, "revision", rev)
	return &fgv1.DrainServerResponse{Revision: rev}, nil
}

// UndrainServer removes an operator's drain.
func (s *configService) UndrainServer(ctx context.Context, req *fgv1.UndrainServerRequest) (*fgv1.UndrainServerResponse, error) {
	d := &fgv1.AdminDrain{Pool: req.GetPool(), Address: hostOnly(req.GetAddress())}
	rev, err := s.store.SetDrain(ctx, req.GetGateway(), d, true)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	s.log.Info("server drain ended", "gateway", req.GetGateway(), "pool", d.Pool, "address", d.Address, "revision", rev)
	return &fgv1.UndrainServerResponse{Revision: rev}, nil
}

// DrainStatus sums every worker's drain reports.
func (s *configService) DrainStatus(ctx context.Context, req *fgv1.DrainStatusRequest) (*fgv1.DrainStatusResponse, error) {
	if _, err := s.store.Get(ctx, req.GetGateway()); err != nil {
		return nil, toStatus(s.log, err)
	}
	var drains map[string][]*fgv1.DrainReport
	s.health.Gateway(req.GetGateway()).Read(func(r fleet.HealthReader) { drains = r.Drains() })
	return &fgv1.DrainStatusResponse{Servers: drainsOf(drains)}, nil
}

type drainKey struct{ pool, settings, address string }

// Drains sums the workers' drain reports per (pool, settings, server).
func Drains(views map[string]*fgv1.HealthReport) []*fgv1.DrainingServer {
	drains := make(map[string][]*fgv1.DrainReport, len(views))
	for id, rep := range views {
		drains[id] = rep.GetDrains()
	}
	return drainsOf(drains)
}

// drainsOf sums drain reports (by worker id) per (pool, settings, server).
func drainsOf(byWorker map[string][]*fgv1.DrainReport) []*fgv1.DrainingServer {
	byKey := map[drainKey]*fgv1.DrainingServer{}
	for _, reports := range byWorker {
		for _, d := range reports {
			k := drainKey{d.GetPool(), d.GetSettings(), d.GetAddress()}
			ds := byKey[k]
			if ds == nil {
				ds = &fgv1.DrainingServer{Pool: k.pool, Settings: k.settings, Address: k.address, Done: true}
				byKey[k] = ds
			}
			ds.Dataplanes++
			ds.ActiveConnections += d.GetActiveConnections()
			ds.InflightRequests += d.GetInflightRequests()
			ds.CutConnections += d.GetCutConnections()
			ds.Done = ds.Done && d.GetDone()
			ds.Admin = ds.Admin || d.GetAdmin()
			if ds.StartedAt == nil || d.GetStartedAt().AsTime().Before(ds.StartedAt.AsTime()) {
				ds.StartedAt = d.GetStartedAt()
			}
			if ds.Deadline == nil || d.GetDeadline().AsTime().After(ds.Deadline.AsTime()) {
				ds.Deadline = d.GetDeadline()
			}
		}
	}
	out := make([]*fgv1.DrainingServer, 0, len(byKey))
	for _, ds := range byKey {
		out = append(out, ds)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Settings != b.Settings {
			return a.Settings < b.Settings
		}
		return a.Address < b.Address
	})
	return out
}

// markDraining shows, in a BackendHealth answer, the servers being drained: Draining with the
// fleet-wide remaining connections and the deadline. Servers drained after leaving their pool are
// added to it.
func markDraining(resp *fgv1.BackendHealthResponse, drains []*fgv1.DrainingServer, pool string) {
	for _, d := range drains {
		if d.GetDone() || (pool != "" && d.GetPool() != pool) {
			continue
		}
		var settings *fgv1.BackendSettingsHealth
		for _, p := range resp.GetPools() {
			if p.GetName() != d.GetPool() {
				continue
			}
			for _, s := range p.GetSettings() {
				if s.GetName() == d.GetSettings() {
					settings = s
				}
			}
			if settings == nil {
				settings = &fgv1.BackendSettingsHealth{Name: d.GetSettings()}
				p.Settings = append(p.Settings, settings)
			}
		}
		if settings == nil {
			ph := &fgv1.BackendPoolHealth{Name: d.GetPool()}
			settings = &fgv1.BackendSettingsHealth{Name: d.GetSettings()}
			ph.Settings = append(ph.Settings, settings)
			resp.Pools = append(resp.Pools, ph)
		}
		var srv *fgv1.BackendServerHealth
		for _, s := range settings.GetServers() {
			if s.GetAddress() == d.GetAddress() {
				srv = s
			}
		}
		if srv == nil {
			srv = &fgv1.BackendServerHealth{Address: d.GetAddress()}
			settings.Servers = append(settings.Servers, srv)
		}
		srv.Health = HealthDraining
		srv.DrainingConnections = d.GetActiveConnections()
		srv.DrainDeadline = d.GetDeadline()
		srv.HealthProbeLog = "draining: no new requests; existing connections end by the deadline"
	}
}

// hostOnly strips a port from an address.
func hostOnly(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
