package health_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/probe"
)

// A real server failing its probes goes Unhealthy on exactly the threshold-th failure, and Healthy
// again after one success.
func TestManagerThresholdAgainstRealServer(t *testing.T) {
	var failing atomic.Int64
	failing.Store(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() == 1 {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	gw, err := config.Decode([]byte(`
name: gw
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: ` + host + `}]}]
backendHttpSettingsCollection: [{name: s, port: ` + port + `, probe: pr}]
probes: [{name: pr, path: /, interval: 1, timeout: 1, unhealthyThreshold: 3}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	targets, err := health.Targets(gw)
	if err != nil || len(targets) != 1 {
		t.Fatalf("Targets = %v, %v", targets, err)
	}
	// Count probes as the manager sees them, so the check does not race the server's counter.
	var seen atomic.Int64
	m := health.NewManager(health.ProberFunc(func(ctx context.Context, s probe.Spec) probe.Result {
		r := probe.Run(ctx, s)
		seen.Add(1)
		return r
	}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer m.Close()
	m.Update(1, targets)
	key := health.Key{Settings: "s", Address: net.JoinHostPort(host, port)}
	tr := m.Tracker(key)
	waitFor(t, func() bool { return tr.State().Status == health.Unhealthy })
	st := tr.State()
	if st.Failures != 3 || st.Reason != probe.ReasonStatusMismatch || st.Message != "Expected:200-399 Received:500" {
		t.Fatalf("Unhealthy state = %+v", st)
	}
	if ts := st.Transitions; len(ts) != 1 || ts[0].From != health.Unknown || ts[0].To != health.Unhealthy {
		t.Fatalf("transitions = %+v, want one Unknown->Unhealthy", ts)
	}
	failing.Store(0)
	before := seen.Load()
	waitFor(t, func() bool { return tr.State().Status == health.Healthy })
	if n := seen.Load() - before; n != 1 {
		t.Fatalf("Healthy after %d probes, want after one success", n)
	}
	if !tr.Usable() {
		t.Fatal("healthy server not usable")
	}
	rep := m.Report()
	if len(rep.GetServers()) != 1 || rep.GetServers()[0].GetHealth() != health.Healthy || rep.GetServers()[0].GetIntervalSeconds() != 1 {
		t.Fatalf("Report = %v", rep)
	}
	m.Update(2, nil)
	if m.Tracker(key) != nil {
		t.Fatal("tracker kept after its target went away")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
