package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// A Partial or pending server names at most ten workers, then counts the others.
func TestAggregateNamesAtMostTen(t *testing.T) {
	gw, err := config.Decode([]byte(aggDoc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	views := map[string]*fgv1.HealthReport{}
	for i := range 13 {
		h := "Healthy"
		if i == 12 {
			h = "Unhealthy"
		}
		views[fmt.Sprintf("dp-%02d", i)] = report(srv("10.0.0.1:80", h, "tcp-connect-error"), srv("10.0.0.2:80", "Unknown", ""))
	}
	servers := server.Aggregate(gw, views, "").GetPools()[0].GetSettings()[0].GetServers()
	if got, want := servers[0].GetHealthProbeLog(), "healthy on dp-00, dp-01, dp-02, dp-03, dp-04, dp-05, dp-06, dp-07, dp-08, dp-09 and 2 more; unhealthy on dp-12: tcp-connect-error message"; got != want {
		t.Errorf("Partial log = %q, want %q", got, want)
	}
	if got := servers[1].GetHealthProbeLog(); !strings.HasSuffix(got, "dp-09 and 3 more") {
		t.Errorf("pending log = %q", got)
	}
	if servers[0].GetHealthyDataplanes() != 12 || len(servers[0].GetDataplanes()) != 13 {
		t.Errorf("Partial server: %d healthy, %d views", servers[0].GetHealthyDataplanes(), len(servers[0].GetDataplanes()))
	}
}

const summaryDoc = `
name: appgw1
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 10.0.0.1}, {ipAddress: 10.0.0.2}]}]
backendHttpSettingsCollection: [{name: s, port: 80}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`

// simWorker is a worker's stream, driven by the test.
type simWorker struct {
	stream fgv1.DataPlaneService_ConnectClient
	cancel context.CancelFunc
}

func connectWorker(t *testing.T, conn *grpc.ClientConn, id string) *simWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := fgv1.NewDataPlaneServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: &fgv1.Hello{DataplaneId: id, Gateway: "appgw1", Address: "127.0.0.1:8080"}}}); err != nil {
		t.Fatal(err)
	}
	go func() { // snapshots are read and dropped
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	return &simWorker{stream: stream, cancel: cancel}
}

func (w *simWorker) report(t *testing.T, servers ...*fgv1.ServerHealthReport) {
	t.Helper()
	for _, s := range servers {
		s.IntervalSeconds = 1 // a stale view is dropped after 3 s without a report
	}
	if err := w.stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: &fgv1.HealthReport{Servers: servers}}}); err != nil {
		t.Fatal(err)
	}
}

// heartbeat sends heartbeats every 200 ms until the returned function is called (and returns after
// the last send), so that the view stays fresh however slowly the test runs.
func (w *simWorker) heartbeat() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if w.stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: &fgv1.HealthReport{Heartbeat: true}}}) != nil {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

// BackendHealth over real gRPC from a control plane on embedded etcd: the summary follows each
// worker's transitions, a worker that disconnects and one whose reports stop; the default answer
// is the summary (counts and newest probe, no views), and dataplanes adds every worker's view.
func TestBackendHealthSummaryFollowsWorkers(t *testing.T) {
	cp := cptest.StartWith(t, cptest.Etcd(t), "cp-summary", cptest.Options{Insecure: true})
	conn := cptest.DialInsecure(t, cp.Addr)
	cptest.Apply(t, conn, summaryDoc)
	client := fgv1.NewConfigServiceClient(conn)
	call := func(dataplanes bool) (map[string]*fgv1.BackendServerHealth, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.BackendHealth(ctx, &fgv1.BackendHealthRequest{Gateway: "appgw1", Dataplanes: dataplanes})
		if err != nil {
			return nil, err
		}
		out := map[string]*fgv1.BackendServerHealth{}
		for _, s := range resp.GetPools()[0].GetSettings()[0].GetServers() {
			out[s.GetAddress()] = s
		}
		return out, nil
	}
	waitFor := func(what string, cond func(h map[string]*fgv1.BackendServerHealth) bool) {
		t.Helper()
		var last map[string]*fgv1.BackendServerHealth
		cptest.Eventually(t, 15*time.Second, func() bool {
			h, err := call(false)
			if err != nil {
				t.Fatal(err)
			}
			last = h
			return cond(h)
		}, "%s; last: %v", what, func() any { return last })
	}
	probed := func(s *fgv1.ServerHealthReport, at time.Time) *fgv1.ServerHealthReport {
		s.LastProbe = timestamppb.New(at)
		return s
	}

	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	w1, w2 := connectWorker(t, conn, "dp-1"), connectWorker(t, conn, "dp-2")
	w1.report(t, probed(srv("10.0.0.1:80", "Healthy", ""), t0), probed(srv("10.0.0.2:80", "Healthy", ""), t0.Add(time.Second)))
	w2.report(t, probed(srv("10.0.0.1:80", "Healthy", ""), t0.Add(2*time.Second)), srv("10.0.0.2:80", "Unknown", ""))
	waitFor("both healthy on 10.0.0.1", func(h map[string]*fgv1.BackendServerHealth) bool {
		return h["10.0.0.1:80"].GetHealth() == "Healthy" && h["10.0.0.1:80"].GetHealthyDataplanes() == 2 &&
			h["10.0.0.2:80"].GetReportingDataplanes() == 2
	})
	// The default is the summary: no views, but the counts and the newest probe among the workers
	// (dp-2 has not probed 10.0.0.2 yet).
	sum, err := call(false)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]struct {
		healthy, unhealthy, reporting int32
		newest                        time.Time
	}{
		"10.0.0.1:80": {2, 0, 2, t0.Add(2 * time.Second)},
		"10.0.0.2:80": {1, 0, 2, t0.Add(time.Second)},
	} {
		s := sum[addr]
		if len(s.GetDataplanes()) != 0 || s.GetHealthyDataplanes() != want.healthy || s.GetUnhealthyDataplanes() != want.unhealthy ||
			s.GetReportingDataplanes() != want.reporting || !s.GetLastProbe().AsTime().Equal(want.newest) {
			t.Errorf("summary of %s: %d views, healthy %d unhealthy %d of %d, last probe %v; want no views, %d %d of %d, %s", addr,
				len(s.GetDataplanes()), s.GetHealthyDataplanes(), s.GetUnhealthyDataplanes(), s.GetReportingDataplanes(), s.GetLastProbe(),
				want.healthy, want.unhealthy, want.reporting, want.newest)
		}
	}
	// dataplanes: the same summary, and every worker's view with its own probe time.
	full, err := call(true)
	if err != nil {
		t.Fatal(err)
	}
	for addr, s := range full {
		summary := proto.Clone(s).(*fgv1.BackendServerHealth)
		summary.Dataplanes = nil
		if !proto.Equal(summary, sum[addr]) {
			t.Errorf("%s with dataplanes: %v; summary %v", addr, summary, sum[addr])
		}
		if len(s.GetDataplanes()) != 2 || s.GetDataplanes()[0].GetDataplane() != "dp-1" || s.GetDataplanes()[1].GetDataplane() != "dp-2" {
			t.Errorf("%s with dataplanes: views %v, want dp-1's and dp-2's", addr, s.GetDataplanes())
		}
	}
	if v := full["10.0.0.1:80"].GetDataplanes(); len(v) == 2 && (!v[0].GetLastProbe().AsTime().Equal(t0) || v[1].GetHealth() != "Healthy") {
		t.Errorf("views of 10.0.0.1: %v", v)
	}
	if v := full["10.0.0.2:80"].GetDataplanes(); len(v) == 2 && (v[1].GetHealth() != "Unknown" || v[1].GetLastProbe() != nil) {
		t.Errorf("dp-2's pending view of 10.0.0.2: %v", v[1])
	}

	// Transitions.
	w2.report(t, srv("10.0.0.1:80", "Unhealthy", "tcp-connect-error"), srv("10.0.0.2:80", "Unknown", ""))
	waitFor("10.0.0.1 Partial", func(h map[string]*fgv1.BackendServerHealth) bool {
		s := h["10.0.0.1:80"]
		return s.GetHealth() == "Partial" && s.GetReason() == "tcp-connect-error" && s.GetHealthProbeLog() == "healthy on dp-1; unhealthy on dp-2: tcp-connect-error message"
	})
	w1.report(t, srv("10.0.0.1:80", "Unhealthy", "http-status-code-mismatch"), srv("10.0.0.2:80", "Healthy", ""))
	waitFor("10.0.0.1 Unhealthy", func(h map[string]*fgv1.BackendServerHealth) bool {
		s := h["10.0.0.1:80"]
		return s.GetHealth() == "Unhealthy" && s.GetReason() == "http-status-code-mismatch" && s.GetHealthyDataplanes() == 0 &&
			s.GetUnhealthyDataplanes() == 2 && s.GetReportingDataplanes() == 2 && s.GetLastProbe() == nil
	})
	// dp-1 disconnects: dp-2's views are all that is left.
	stopBeat := w2.heartbeat()
	w1.cancel()
	waitFor("dp-1 gone", func(h map[string]*fgv1.BackendServerHealth) bool {
		return h["10.0.0.1:80"].GetHealth() == "Unhealthy" && h["10.0.0.1:80"].GetReason() == "tcp-connect-error" &&
			h["10.0.0.1:80"].GetReportingDataplanes() == 1 &&
			h["10.0.0.2:80"].GetHealth() == "Unknown" && h["10.0.0.2:80"].GetHealthProbeLog() == "probe pending on dp-2"
	})
	// dp-2 stays connected but stops reporting: its view goes stale and is dropped.
	stopBeat()
	waitFor("dp-2's view stale", func(h map[string]*fgv1.BackendServerHealth) bool {
		return h["10.0.0.1:80"].GetHealth() == "Unknown" && strings.Contains(h["10.0.0.1:80"].GetHealthProbeLog(), "no data-plane worker") &&
			h["10.0.0.1:80"].GetReportingDataplanes() == 0
	})
	// It reports again: back.
	w2.report(t, srv("10.0.0.1:80", "Healthy", ""), srv("10.0.0.2:80", "Healthy", ""))
	waitFor("dp-2 back", func(h map[string]*fgv1.BackendServerHealth) bool {
		return h["10.0.0.1:80"].GetHealth() == "Healthy" && h["10.0.0.2:80"].GetHealth() == "Healthy"
	})
}
