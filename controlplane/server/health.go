package server

import (
	"context"

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

// BackendHealth answers with the gateway's pools, settings and servers as configured.
func (s *configService) BackendHealth(ctx context.Context, req *fgv1.BackendHealthRequest) (*fgv1.BackendHealthResponse, error) {
	st, err := s.store.Get(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	resp := &fgv1.BackendHealthResponse{Gateway: req.GetGateway(), Revision: st.Revision}
	found := false
	for _, pu := range PoolUses(st.Gateway) {
		if req.GetPool() != "" && pu.Pool.GetName() != req.GetPool() {
			continue
		}
		found = true
		ph := &fgv1.BackendPoolHealth{Name: pu.Pool.GetName()}
		for _, set := range pu.Settings {
			sh := &fgv1.BackendSettingsHealth{Name: set.GetName()}
			for _, a := range pu.Pool.GetBackendAddresses() {
				sh.Servers = append(sh.Servers, &fgv1.BackendServerHealth{
					Address:        config.ServerAddress(a, set.GetPort()),
					Health:         HealthUnknown,
					HealthProbeLog: "no health reports from any data-plane worker",
				})
			}
			ph.Settings = append(ph.Settings, sh)
		}
		resp.Pools = append(resp.Pools, ph)
	}
	if req.GetPool() != "" && !found {
		return nil, status.Errorf(codes.NotFound, "pool %q: not in gateway %q", req.GetPool(), req.GetGateway())
	}
	return resp, nil
}

// PoolUse is a pool with the backend settings that rules use it with, in configuration order.
type PoolUse struct {
	Pool     *fgv1.BackendAddressPool
	Settings []*fgv1.BackendHttpSettings
}

// PoolUses lists every pool with the settings its rules pair it with.
func PoolUses(gw *fgv1.Gateway) []PoolUse {
	settings := map[string]*fgv1.BackendHttpSettings{}
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		settings[s.GetName()] = s
	}
	pairs := map[string][]string{}
	add := func(pool, set string) {
		for _, s := range pairs[pool] {
			if s == set {
				return
			}
		}
		pairs[pool] = append(pairs[pool], set)
	}
	maps := map[string]*fgv1.UrlPathMap{}
	for _, m := range gw.GetUrlPathMaps() {
		maps[m.GetName()] = m
	}
	for _, r := range gw.GetRequestRoutingRules() {
		if r.GetUrlPathMap() == "" {
			add(r.GetBackendAddressPool(), r.GetBackendHttpSettings())
			continue
		}
		m := maps[r.GetUrlPathMap()]
		add(m.GetDefaultBackendAddressPool(), m.GetDefaultBackendHttpSettings())
		for _, pr := range m.GetPathRules() {
			add(pr.GetBackendAddressPool(), pr.GetBackendHttpSettings())
		}
	}
	var out []PoolUse
	for _, p := range gw.GetBackendAddressPools() {
		pu := PoolUse{Pool: p}
		for _, s := range pairs[p.GetName()] {
			if set := settings[s]; set != nil {
				pu.Settings = append(pu.Settings, set)
			}
		}
		out = append(out, pu)
	}
	return out
}
