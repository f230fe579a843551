package server

import (
	"fmt"
	"sort"
	"strings"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// maxNames is how many worker ids a Partial or pending server's message names; the rest are
// counted ("and 990 more"), so that a message stays readable and small in a large fleet.
const maxNames = 10

// Aggregate computes the fleet's health of a gateway's servers from its workers' views (by worker
// id): pools, then the settings rules use them with, then servers, in configuration order, each
// with every worker's view. BackendHealth answers from the health cache's incrementally kept
// summaries instead; both render the same way (see render).
// A server is Healthy when every worker with a result sees it healthy, Unhealthy when every one sees
// it unhealthy, Partial when they disagree, and Unknown when no worker has a result.
func Aggregate(gw *fgv1.Gateway, views map[string]*fgv1.HealthReport, pool string) *fgv1.BackendHealthResponse {
	var resp *fgv1.BackendHealthResponse
	gatewayHealthOf(views).Read(func(r fleet.HealthReader) {
		resp = render(gw, r, pool, true)
	})
	return resp
}

// gatewayHealthOf loads views into a GatewayHealth.
func gatewayHealthOf(views map[string]*fgv1.HealthReport) *fleet.GatewayHealth {
	g := fleet.NewGatewayHealth()
	for id, rep := range views {
		g.Set(id, rep)
	}
	return g
}

// render builds a BackendHealth answer from a gateway's configuration and its health summaries:
// each server's fleet summary, and with dataplanes every worker's view of it as well (1,000
// workers x 1,000 servers are a million views, 33 MiB).
func render(gw *fgv1.Gateway, r fleet.HealthReader, pool string, dataplanes bool) *fgv1.BackendHealthResponse {
	workers := r.Workers()
	resp := &fgv1.BackendHealthResponse{Gateway: gw.GetName()}
	settingsHealth := func(name string, port int32, addrs []*fgv1.BackendAddress) *fgv1.BackendSettingsHealth {
		sh := &fgv1.BackendSettingsHealth{Name: name, Servers: make([]*fgv1.BackendServerHealth, 0, len(addrs))}
		for _, a := range addrs {
			addr := config.ServerAddress(a, port)
			p := r.Pair(name, addr)
			out := serverSummary(addr, p, workers)
			sh.Servers = append(sh.Servers, out)
			if p != nil && dataplanes {
				out.Dataplanes = dataplaneViews(p)
			}
		}
		return sh
	}
	for _, pu := range config.PoolUses(gw) {
		if pool != "" && pu.Pool.GetName() != pool {
			continue
		}
		ph := &fgv1.BackendPoolHealth{Name: pu.Pool.GetName()}
		for _, set := range pu.Settings {
			ph.Settings = append(ph.Settings, settingsHealth(set.GetName(), set.GetPort(), pu.Pool.GetBackendAddresses()))
		}
		for _, set := range pu.L4Settings {
			ph.Settings = append(ph.Settings, settingsHealth(set.GetName(), set.GetPort(), pu.Pool.GetBackendAddresses()))
		}
		resp.Pools = append(resp.Pools, ph)
	}
	return resp
}

// dataplaneViews is every worker's view of a pair, by worker id.
func dataplaneViews(p *fleet.PairHealth) []*fgv1.DataPlaneServerHealth {
	out := make([]*fgv1.DataPlaneServerHealth, 0, p.Reporting())
	for _, v := range p.Views() {
		out = append(out, &fgv1.DataPlaneServerHealth{
			Dataplane: v.Dataplane(), Health: v.Health(), Reason: v.Reason(), Message: v.Message(), LastProbe: v.LastProbe(),
		})
	}
	return out
}

// serverSummary is a server's fleet-wide health, from its pair's counts and newest probe; only a
// Partial or pending server looks at the workers' views (for the ids it names).
func serverSummary(addr string, p *fleet.PairHealth, workers int) *fgv1.BackendServerHealth {
	out := &fgv1.BackendServerHealth{Address: addr}
	if p == nil || p.Reporting() == 0 {
		out.Health = HealthUnknown
		if workers == 0 {
			out.HealthProbeLog = "no data-plane worker is connected with a fresh health report"
		} else {
			out.HealthProbeLog = fmt.Sprintf("none of the %d reporting workers probes this server", workers)
		}
		return out
	}
	healthy, unhealthy := p.Healthy(), p.Unhealthy()
	out.HealthyDataplanes, out.UnhealthyDataplanes, out.ReportingDataplanes = int32(healthy), int32(unhealthy), int32(p.Reporting())
	out.LastProbe = p.LastProbe()
	switch {
	case healthy == 0 && unhealthy == 0:
		out.Health = HealthUnknown
		out.HealthProbeLog = "probe pending on " + names(p.Views(), p.Reporting(), func(v *fleet.ServerView) bool { return true })
	case unhealthy == 0:
		out.Health = HealthHealthy
		out.HealthProbeLog = "Success. Received 200 status code"
		if m := p.Views()[0].Message(); m != "" {
			out.HealthProbeLog = m
		}
	case healthy == 0:
		bad := p.FirstUnhealthy()
		out.Health = HealthUnhealthy
		out.Reason, out.HealthProbeLog = bad.Reason(), bad.Message()
	default:
		bad := p.FirstUnhealthy()
		out.Health = HealthPartial
		out.Reason = bad.Reason()
		out.HealthProbeLog = fmt.Sprintf("healthy on %s; unhealthy on %s: %s",
			names(p.Views(), healthy, (*fleet.ServerView).IsHealthy), names(p.Views(), unhealthy, (*fleet.ServerView).IsUnhealthy), bad.Message())
	}
	return out
}

// names lists the ids of the n views that match, in id order: the first maxNames of them, then how
// many more there are.
func names(vs []*fleet.ServerView, n int, match func(*fleet.ServerView) bool) string {
	var b strings.Builder
	shown := 0
	for _, v := range vs {
		if shown == maxNames {
			break
		}
		if !match(v) {
			continue
		}
		if shown > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.Dataplane())
		shown++
	}
	if n > shown {
		fmt.Fprintf(&b, " and %d more", n-shown)
	}
	return b.String()
}

// History merges the transitions of a server ("host:port", or a host for every port) that every
// worker kept, oldest first, the latest maxHistory.
func History(views map[string]*fgv1.HealthReport, address string) []*fgv1.HealthTransition {
	var out []*fgv1.HealthTransition
	gatewayHealthOf(views).Read(func(r fleet.HealthReader) { out = history(r, address) })
	return out
}

func history(r fleet.HealthReader, address string) []*fgv1.HealthTransition {
	var out []*fgv1.HealthTransition
	r.PairsOf(address, func(p *fleet.PairHealth) {
		for _, v := range p.Views() {
			out = v.Transitions(out)
		}
	})
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
