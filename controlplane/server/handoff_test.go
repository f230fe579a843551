package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const leaveDoc = `
name: leave
httpListeners: [{name: l, port: 80}]
backendAddressPools: [{name: p, backendAddresses: [{ipAddress: 10.0.0.1}, {ipAddress: 10.0.0.2}]}]
backendHttpSettingsCollection: [{name: s, port: 80}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: l, backendAddressPool: p, backendHttpSettings: s}]
`

// rawWorker is a worker's Connect stream driven by hand.
type rawWorker struct {
	t      *testing.T
	id     string
	stream grpc.BidiStreamingClient[fgv1.ConnectRequest, fgv1.ConnectResponse]
	cancel context.CancelFunc
}

func connectRaw(t *testing.T, conn *grpc.ClientConn, id string, applied int64) *rawWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := fgv1.NewDataPlaneServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &rawWorker{t: t, id: id, stream: stream, cancel: cancel}
	w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: &fgv1.Hello{DataplaneId: id, Gateway: "leave", Address: "127.0.0.1", AppliedVersion: applied}}})
	return w
}

func (w *rawWorker) send(req *fgv1.ConnectRequest) {
	w.t.Helper()
	if err := w.stream.Send(req); err != nil {
		w.t.Fatalf("%s: send: %v", w.id, err)
	}
}

// recv is the next message from the control plane, with a bound.
func (w *rawWorker) recv() (*fgv1.ConnectResponse, error) {
	type result struct {
		m   *fgv1.ConnectResponse
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, err := w.stream.Recv()
		got <- result{m, err}
	}()
	select {
	case r := <-got:
		return r.m, r.err
	case <-time.After(10 * time.Second):
		w.t.Fatalf("%s: nothing from the control plane within 10 s", w.id)
		return nil, nil
	}
}

func (w *rawWorker) snapshot() int64 {
	w.t.Helper()
	m, err := w.recv()
	if err != nil || m.GetSnapshot() == nil {
		w.t.Fatalf("%s: want a snapshot, got %v, %v", w.id, m, err)
	}
	return m.GetSnapshot().GetVersion()
}

func (w *rawWorker) report(servers ...*fgv1.ServerHealthReport) {
	w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: &fgv1.HealthReport{Servers: servers}}})
}

func logReplica(t *testing.T) (*cptest.Replica, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	r := cptest.StartWith(t, cptest.Etcd(t), "cp-leave", cptest.Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return r, logs
}

func fleetView(t *testing.T, conn *grpc.ClientConn) map[string]*fgv1.DataPlane {
	t.Helper()
	resp, err := fgv1.NewConfigServiceClient(conn).ListDataPlanes(ctx(t), &fgv1.ListDataPlanesRequest{Gateway: "leave"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fgv1.DataPlane{}
	for _, dp := range resp.GetDataplanes() {
		out[dp.GetId()] = dp
	}
	return out
}

func serverHealth(t *testing.T, conn *grpc.ClientConn) map[string]string {
	t.Helper()
	resp, err := fgv1.NewConfigServiceClient(conn).BackendHealth(ctx(t), &fgv1.BackendHealthRequest{Gateway: "leave"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				out[srv.GetAddress()] = srv.GetHealth()
			}
		}
	}
	return out
}

// A worker that says Leaving is shown leaving with its reason, its health view stops counting at
// once (a server only it probed becomes Unknown, one it disagreed on takes the other worker's view),
// it is sent no new snapshot, and the log tells "worker leaving"/"worker left" from a lost stream.
func TestLeavingWorker(t *testing.T) {
	cp, logs := logReplica(t)
	conn := cptest.Dial(t, cp.Addr)
	rev1 := cptest.Apply(t, conn, leaveDoc)

	w1 := connectRaw(t, conn, "dp-1", 0)
	w2 := connectRaw(t, conn, "dp-2", 0)
	for _, w := range []*rawWorker{w1, w2} {
		if v := w.snapshot(); v != rev1 {
			t.Fatalf("%s got version %d, want %d", w.id, v, rev1)
		}
		w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Ack{Ack: &fgv1.Ack{Version: rev1}}})
	}
	w1.report(srv("10.0.0.1:80", "Healthy", ""), srv("10.0.0.2:80", "Healthy", ""))
	w2.report(srv("10.0.0.1:80", "Unhealthy", "tcp-connect-error"))
	cptest.Eventually(t, 10*time.Second, func() bool {
		h := serverHealth(t, conn)
		return h["10.0.0.1:80"] == "Partial" && h["10.0.0.2:80"] == "Healthy"
	}, "views not aggregated: %v", serverHealth(t, conn))

	w1.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Leaving{Leaving: &fgv1.Leaving{Reason: "SIGTERM"}}})
	cptest.Eventually(t, 10*time.Second, func() bool {
		dp := fleetView(t, conn)["dp-1"]
		return dp.GetLeaving() && dp.GetLeavingReason() == "SIGTERM" && dp.GetAppliedVersion() == rev1
	}, "dp-1 not shown leaving: %v", fleetView(t, conn)["dp-1"])
	cptest.Eventually(t, 10*time.Second, func() bool {
		h := serverHealth(t, conn)
		return h["10.0.0.1:80"] == "Unhealthy" && h["10.0.0.2:80"] == "Unknown"
	}, "dp-1's view still counts: %v", serverHealth(t, conn))
	if !strings.Contains(logs.String(), `msg="worker leaving" dataplane=dp-1 gateway=leave reason=SIGTERM`) {
		t.Errorf("no 'worker leaving' line in the log:\n%s", logs.String())
	}
	// Reports after leaving are ignored.
	w1.report(srv("10.0.0.2:80", "Healthy", ""))

	// A new version reaches dp-2 only; dp-1's stream then ends with nothing more sent to it.
	rev2 := cptest.Apply(t, conn, strings.Replace(leaveDoc, "{name: l, port: 80}", "{name: l, port: 8080}", 1))
	if v := w2.snapshot(); v != rev2 {
		t.Fatalf("dp-2 got version %d, want %d", v, rev2)
	}
	w1.report(srv("10.0.0.2:80", "Healthy", ""))
	if err := w1.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if m, err := w1.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("leaving dp-1 was sent %v (err %v), want the stream to end", m, err)
	}
	if h := serverHealth(t, conn); h["10.0.0.2:80"] != "Unknown" {
		t.Errorf("a leaving worker's later report counted: %v", h)
	}
	cptest.Eventually(t, 10*time.Second, func() bool { _, ok := fleetView(t, conn)["dp-1"]; return !ok }, "dp-1 still listed after its stream ended")
	cptest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), `msg="worker left" dataplane=dp-1`) }, "no 'worker left' line")

	// A stream that breaks without a word is a lost stream, not a leaving worker.
	w2.cancel()
	cptest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), `msg="dataplane stream lost" dataplane=dp-2`) }, "no 'dataplane stream lost' line:\n%s", logs.String())
	if strings.Contains(logs.String(), `msg="worker leaving" dataplane=dp-2`) || strings.Contains(logs.String(), `msg="worker left" dataplane=dp-2`) {
		t.Errorf("dp-2's lost stream was logged as leaving:\n%s", logs.String())
	}
}

// Stopping a replica hands its workers off: each is sent Reconnect naming the replica, its stream
// ends, and the replica accepts no new connection.
func TestShutdownSendsReconnect(t *testing.T) {
	cp, logs := logReplica(t)
	conn := cptest.Dial(t, cp.Addr)
	rev := cptest.Apply(t, conn, leaveDoc)
	w := connectRaw(t, conn, "dp-1", rev)
	cptest.Eventually(t, 10*time.Second, func() bool { _, ok := fleetView(t, conn)["dp-1"]; return ok }, "dp-1 not registered")

	stopped := make(chan struct{})
	go func() { cp.Stop(); close(stopped) }()
	m, err := w.recv()
	if err != nil || m.GetReconnect() == nil || !strings.Contains(m.GetReconnect().GetReason(), "cp-leave") {
		t.Fatalf("want a Reconnect naming the replica, got %v, %v", m, err)
	}
	if m, err := w.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after Reconnect: %v, %v; want the stream to end", m, err)
	}
	<-stopped
	if c, err := net.Dial("tcp", cp.Addr); err == nil {
		c.Close()
		t.Fatal("a stopped replica still accepts connections")
	}
	for _, line := range []string{`msg="control plane shutting down; handing workers off to other replicas"`, `msg="dataplane handed off to another replica" dataplane=dp-1`} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %s:\n%s", line, logs.String())
		}
	}
}
