package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const aggDoc = `
name: gw
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 10.0.0.1}, {ipAddress: 10.0.0.2}, {ipAddress: 10.0.0.3}, {ipAddress: 10.0.0.4}]}]
backendHttpSettingsCollection: [{name: s, port: 80}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`

func report(servers ...*fgv1.ServerHealthReport) *fgv1.HealthReport {
	return &fgv1.HealthReport{Servers: servers}
}

func srv(addr, health, reason string) *fgv1.ServerHealthReport {
	return &fgv1.ServerHealthReport{Settings: "s", Address: addr, Health: health, Reason: reason, Message: reason + " message"}
}

func TestAggregate(t *testing.T) {
	gw, err := config.Decode([]byte(aggDoc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	views := map[string]*fgv1.HealthReport{
		"dp-1": report(srv("10.0.0.1:80", "Healthy", ""), srv("10.0.0.2:80", "Unhealthy", "tcp-connect-error"),
			srv("10.0.0.3:80", "Healthy", ""), srv("10.0.0.4:80", "Unknown", "")),
		"dp-2": report(srv("10.0.0.1:80", "Healthy", ""), srv("10.0.0.2:80", "Unhealthy", "tcp-connect-error"),
			srv("10.0.0.3:80", "Unhealthy", "http-status-code-mismatch"), srv("10.0.0.4:80", "Unknown", "")),
	}
	resp := server.Aggregate(gw, views, "")
	servers := resp.GetPools()[0].GetSettings()[0].GetServers()
	want := []struct{ health, reason, log string }{
		{"Healthy", "", ""},
		{"Unhealthy", "tcp-connect-error", "tcp-connect-error message"},
		{"Partial", "http-status-code-mismatch", "healthy on dp-1; unhealthy on dp-2"},
		{"Unknown", "", "probe pending on dp-1, dp-2"},
	}
	for i, w := range want {
		s := servers[i]
		if s.GetHealth() != w.health || s.GetReason() != w.reason || !strings.Contains(s.GetHealthProbeLog(), w.log) {
			t.Errorf("%s: %s %q %q, want %s %q containing %q", s.GetAddress(), s.GetHealth(), s.GetReason(), s.GetHealthProbeLog(), w.health, w.reason, w.log)
		}
		if len(s.GetDataplanes()) != 2 {
			t.Errorf("%s: %d worker views, want 2", s.GetAddress(), len(s.GetDataplanes()))
		}
	}
	if s := servers[2]; s.GetHealthyDataplanes() != 1 || s.GetUnhealthyDataplanes() != 1 || s.GetReportingDataplanes() != 2 {
		t.Errorf("Partial server: %d healthy, %d unhealthy of %d workers, want 1, 1 of 2", s.GetHealthyDataplanes(), s.GetUnhealthyDataplanes(), s.GetReportingDataplanes())
	}
	if s := servers[3]; s.GetHealthyDataplanes() != 0 || s.GetUnhealthyDataplanes() != 0 || s.GetReportingDataplanes() != 2 || s.GetLastProbe() != nil {
		t.Errorf("pending server: %d healthy, %d unhealthy of %d workers, last probe %v; want 0, 0 of 2, none", s.GetHealthyDataplanes(),
			s.GetUnhealthyDataplanes(), s.GetReportingDataplanes(), s.GetLastProbe())
	}
	// No worker views at all: Unknown, saying why.
	none := server.Aggregate(gw, nil, "").GetPools()[0].GetSettings()[0].GetServers()[0]
	if none.GetHealth() != "Unknown" || !strings.Contains(none.GetHealthProbeLog(), "no data-plane worker") {
		t.Errorf("no views: %s %q", none.GetHealth(), none.GetHealthProbeLog())
	}
	if got := server.Aggregate(gw, views, "other"); len(got.GetPools()) != 0 {
		t.Errorf("pool filter: %d pools for an unknown pool", len(got.GetPools()))
	}
}

func TestHistoryMergesWorkers(t *testing.T) {
	at := func(s int) *timestamppb.Timestamp { return timestamppb.New(time.Unix(int64(s), 0)) }
	tr := func(s int, dp, to string) *fgv1.HealthTransition {
		return &fgv1.HealthTransition{At: at(s), Dataplane: dp, To: to}
	}
	views := map[string]*fgv1.HealthReport{
		"dp-1": report(&fgv1.ServerHealthReport{Settings: "s", Address: "10.0.0.1:80", Transitions: []*fgv1.HealthTransition{tr(1, "dp-1", "Healthy"), tr(5, "dp-1", "Unhealthy")}}),
		"dp-2": report(&fgv1.ServerHealthReport{Settings: "s", Address: "10.0.0.1:80", Transitions: []*fgv1.HealthTransition{tr(3, "dp-2", "Healthy")}},
			&fgv1.ServerHealthReport{Settings: "s", Address: "10.0.0.2:80", Transitions: []*fgv1.HealthTransition{tr(2, "dp-2", "Healthy")}}),
	}
	got := server.History(views, "10.0.0.1:80")
	if len(got) != 3 || got[0].GetAt().GetSeconds() != 1 || got[1].GetDataplane() != "dp-2" || got[2].GetTo() != "Unhealthy" {
		t.Fatalf("History = %v", got)
	}
	if got := server.History(views, "10.0.0.1"); len(got) != 3 {
		t.Fatalf("History by host = %d transitions, want 3", len(got))
	}
	var many []*fgv1.HealthTransition
	for i := range 80 {
		many = append(many, tr(i, "dp-1", "Healthy"))
	}
	views["dp-1"].Servers[0].Transitions = many
	if got := server.History(views, "10.0.0.1:80"); len(got) != 50 || got[49].GetAt().GetSeconds() != 79 {
		t.Fatalf("History keeps %d, newest %d; want the latest 50", len(got), got[len(got)-1].GetAt().GetSeconds())
	}
}
