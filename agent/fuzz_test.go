package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/agent"
	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/l4"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// FuzzConnectStream feeds arbitrary bytes, decoded as a message of the Connect stream
// (ConnectResponse: a snapshot or a probe call), to a real agent over a real gRPC stream from a
// fake control plane. The agent must never panic and must answer every message: a snapshot that is
// not valid for this worker (no gateway, another gateway's, or one that Validate refuses after
// Normalize) with a NACK, without handing it to the worker; a valid one (or a deletion) is handed
// to the worker, whose data-plane compilation (routes, backends, certificates, layer 4, probe
// targets) must not panic either, and is ACKed if that succeeds; a probe call gets a reply.
func FuzzConnectStream(f *testing.F) {
	seed := func(m *fgv1.ConnectResponse) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	snap := func(v int64, doc string) *fgv1.ConnectResponse {
		gw, err := config.Decode([]byte(doc))
		if err != nil {
			f.Fatal(err)
		}
		return &fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_Snapshot{Snapshot: &fgv1.Snapshot{Version: v, Gateway: gw, AffinityKey: []byte("k")}}}
	}
	seed(snap(1, gatewayDoc(8080, 9001)))
	seed(snap(2, gatewayDoc(0, 9001)))                                            // invalid port
	seed(snap(3, "name: other\n"))                                                // another gateway
	seed(snap(4, gatewayDoc(8080, 9001)+"limits: {maxRequestHeaderBytes: 12}\n")) // invalid limit
	seed(snap(5, gatewayDoc(8080, 9001)+"limits: {maxRequestBodyBytes: 1000, maxConnectionsPerListener: 3}\n"))
	seed(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_Snapshot{Snapshot: &fgv1.Snapshot{Version: 6}}}) // no gateway
	seed(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_Snapshot{Snapshot: &fgv1.Snapshot{Version: 7, Deleted: true}}})
	seed(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_ProbeCall{ProbeCall: &fgv1.ProbeCall{Id: "p1", Settings: "s1", Address: "127.0.0.1"}}})
	seed(snap(8, `
name: appgw1
listeners: [{name: db, protocol: Tcp, port: 5432}]
backendAddressPools: [{name: pool1, backendAddresses: [{fqdn: db.internal}]}]
backendSettingsCollection: [{name: pg, port: 5432}]
routingRules: [{name: l4, ruleType: Basic, priority: 1, listener: db, backendAddressPool: pool1, backendSettings: pg}]
`))

	env := startFuzzEnv(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		msg := &fgv1.ConnectResponse{}
		if err := proto.Unmarshal(data, msg); err != nil {
			return // gRPC would fail the stream before the agent sees it
		}
		switch {
		case msg.GetSnapshot() != nil:
			env.checkSnapshot(t, msg)
		case msg.GetProbeCall() != nil:
			env.send(t, msg)
			reply := env.answer(t).GetProbeReply()
			if reply == nil || reply.GetId() != msg.GetProbeCall().GetId() || reply.GetError() == "" {
				t.Fatalf("probe call %v: reply %v", msg.GetProbeCall(), reply)
			}
		}
	})
}

// checkSnapshot sends a snapshot and checks the answer and what reached the worker.
func (e *fuzzEnv) checkSnapshot(t *testing.T, msg *fgv1.ConnectResponse) {
	snap := msg.GetSnapshot()
	// What the agent should decide, worked out on a copy.
	want := proto.Clone(snap).(*fgv1.Snapshot)
	var invalid error
	switch {
	case want.GetDeleted():
	case want.GetGateway() == nil:
		invalid = errors.New("no gateway")
	case want.GetGateway().GetName() != "appgw1":
		invalid = errors.New("another gateway")
	default:
		config.Normalize(want.Gateway)
		invalid = config.Validate(want.Gateway)
	}
	before := e.applier.calls()
	e.send(t, msg)
	ans := e.answer(t)
	got, applyErr, called := e.applier.last(before)
	switch {
	case invalid != nil:
		if ans.GetNack() == nil || ans.GetNack().GetVersion() != snap.GetVersion() {
			t.Fatalf("invalid snapshot (%v) answered %v, want a NACK of version %d", invalid, ans, snap.GetVersion())
		}
		if called {
			t.Fatalf("invalid snapshot (%v) was handed to the worker", invalid)
		}
	case !called:
		t.Fatalf("valid snapshot answered %v but never handed to the worker", ans)
	case !proto.Equal(got, want):
		t.Fatalf("worker got\n%v\nwant\n%v", got, want)
	case applyErr != nil:
		if ans.GetNack() == nil || ans.GetNack().GetError() != applyErr.Error() {
			t.Fatalf("worker refused the snapshot (%v); answer %v, want that NACK", applyErr, ans)
		}
	default:
		if ans.GetAck() == nil || ans.GetAck().GetVersion() != snap.GetVersion() {
			t.Fatalf("valid snapshot answered %v, want an ACK of version %d", ans, snap.GetVersion())
		}
	}
}

// quiet logs nothing: a fuzz target may not log through the test.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fuzzEnv is a fake control plane holding one Connect stream with a real agent.
type fuzzEnv struct {
	toAgent   chan *fgv1.ConnectResponse
	fromAgent chan *fgv1.ConnectRequest
	applier   *compilingApplier
}

func startFuzzEnv(t testing.TB) *fuzzEnv {
	e := &fuzzEnv{
		toAgent:   make(chan *fgv1.ConnectResponse),
		fromAgent: make(chan *fgv1.ConnectRequest, 16),
		applier:   newCompilingApplier(t),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fgv1.RegisterDataPlaneServiceServer(srv, &fakeControlPlane{e: e})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	// A plain loopback connection to the fake control plane (the test's own, in-process).
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := agent.New(agent.Config{Gateway: "appgw1", ID: "dp-fuzz", Address: "127.0.0.1", Log: quiet,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, conn, e.applier)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *fuzzEnv) send(t *testing.T, m *fgv1.ConnectResponse) {
	t.Helper()
	select {
	case e.toAgent <- m:
	case <-time.After(10 * time.Second):
		t.Fatal("no Connect stream to send on")
	}
}

// answer is the agent's next message other than a hello or a health report.
func (e *fuzzEnv) answer(t *testing.T) *fgv1.ConnectRequest {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-e.fromAgent:
			if m.GetHello() != nil || m.GetHealth() != nil {
				continue
			}
			return m
		case <-timeout:
			t.Fatal("the agent did not answer within 10 s")
		}
	}
}

type fakeControlPlane struct {
	fgv1.UnimplementedDataPlaneServiceServer
	e *fuzzEnv
}

func (s *fakeControlPlane) Connect(stream fgv1.DataPlaneService_ConnectServer) error {
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			s.e.fromAgent <- m
		}
	}()
	for {
		select {
		case m := <-s.e.toAgent:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// compilingApplier is a worker without sockets: it compiles each snapshot as the worker does
// (probe targets, layer-4 and HTTP proxies) and records what it was handed.
type compilingApplier struct {
	http *proxy.Proxy
	l4   *l4.Proxy

	mu    sync.Mutex
	n     int
	snap  *fgv1.Snapshot
	err   error
	calls func() int
}

func newCompilingApplier(t testing.TB) *compilingApplier {
	c := &compilingApplier{http: proxy.New(quiet), l4: l4.New(quiet)}
	t.Cleanup(func() { c.http.Close(); c.l4.Close() })
	c.calls = func() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }
	return c
}

func (c *compilingApplier) Apply(_ context.Context, snap *fgv1.Snapshot) (err error) {
	defer func() {
		c.mu.Lock()
		c.n, c.snap, c.err = c.n+1, proto.Clone(snap).(*fgv1.Snapshot), err
		c.mu.Unlock()
	}()
	if snap.GetDeleted() {
		c.http.Clear(snap.GetVersion())
		return c.l4.Apply(snap.GetVersion(), &fgv1.Gateway{}, nil, nil)
	}
	gw := snap.GetGateway()
	if _, err := health.Targets(gw); err != nil {
		return err
	}
	config.LimitsOf(gw)
	if err := c.l4.Apply(snap.GetVersion(), gw, nil, snap.GetDrains()); err != nil {
		return err
	}
	if _, err := c.http.Apply(snap.GetVersion(), gw, nil, snap.GetAffinityKey(), snap.GetDrains()); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// last returns the snapshot handed over since the count was before, if any.
func (c *compilingApplier) last(before int) (*fgv1.Snapshot, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == before {
		return nil, nil, false
	}
	return c.snap, c.err, true
}
