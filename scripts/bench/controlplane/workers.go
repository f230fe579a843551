package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// fleetSim is N simulated data-plane workers, each with its own Connect stream, sharing a few
// client connections. A worker does what agent.Agent does on the wire: Hello, an ACK for every
// Snapshot (applied instantly: no validation, nothing served), full HealthReports when told to and
// heartbeats every period. Nothing is ever dialled but the control plane.
type fleetSim struct {
	gateway string
	conns   []*grpc.ClientConn
	workers []*worker
	recv    *recvTracker

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	broken   atomic.Int64 // streams that ended while the bench still wanted them
	errMu    sync.Mutex
	firstErr error

	heartbeats atomic.Int64
}

type worker struct {
	i      int
	id     string
	stream fgv1.DataPlaneService_ConnectClient

	mu     sync.Mutex // owns the stream's send side and report
	report *fgv1.HealthReport
}

func (w *worker) send(req *fgv1.ConnectRequest) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream.Send(req)
}

// newFleetSim makes n workers; their connections go to the replicas at addrs in turn (connection i
// to addrs[i%len(addrs)]), so that workers are split evenly between replicas.
func newFleetSim(addrs []string, gateway string, n, perConn int, creds credentials.TransportCredentials) (*fleetSim, error) {
	if perConn < 1 {
		perConn = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleetSim{gateway: gateway, recv: newRecvTracker(n), ctx: ctx, cancel: cancel}
	for i := 0; i < (n+perConn-1)/perConn; i++ {
		conn, err := grpc.NewClient(addrs[i%len(addrs)],
			grpc.WithTransportCredentials(creds),
			grpc.WithUserAgent("fleetgate-bench-worker"),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)),
		)
		if err != nil {
			f.close()
			return nil, err
		}
		f.conns = append(f.conns, conn)
	}
	for i := 0; i < n; i++ {
		f.workers = append(f.workers, &worker{i: i, id: fmt.Sprintf("sim-%05d", i)})
	}
	return f, nil
}

func (f *fleetSim) fail(err error) {
	f.broken.Add(1)
	f.errMu.Lock()
	if f.firstErr == nil {
		f.firstErr = err
	}
	f.errMu.Unlock()
}

// err reports streams that broke.
func (f *fleetSim) err() error {
	if n := f.broken.Load(); n > 0 {
		f.errMu.Lock()
		defer f.errMu.Unlock()
		return fmt.Errorf("%d worker stream(s) broke; first: %v", n, f.firstErr)
	}
	return nil
}

// connect opens every worker's stream and says Hello (applied version 0), 64 at a time.
func (f *fleetSim) connect(perConn int) error {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, w := range f.workers {
		sem <- struct{}{}
		wg.Add(1)
		go func(w *worker) {
			defer func() { <-sem; wg.Done() }()
			client := fgv1.NewDataPlaneServiceClient(f.conns[w.i/perConn])
			stream, err := client.Connect(f.ctx)
			if err == nil {
				w.stream = stream
				err = w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: &fgv1.Hello{
					DataplaneId: w.id,
					Gateway:     f.gateway,
					Address:     "127.0.0.1:8080", // config only: nothing listens, nothing dials it
				}}})
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("worker %s: %w", w.id, err)
				}
				mu.Unlock()
				return
			}
			f.wg.Add(1)
			go f.receive(w)
		}(w)
	}
	wg.Wait()
	return firstErr
}

// receive reads snapshots and probe calls; each snapshot is acknowledged at once.
func (f *fleetSim) receive(w *worker) {
	defer f.wg.Done()
	for {
		resp, err := w.stream.Recv()
		if err != nil {
			if f.ctx.Err() == nil {
				f.fail(fmt.Errorf("worker %s: %w", w.id, err))
			}
			return
		}
		switch k := resp.GetKind().(type) {
		case *fgv1.ConnectResponse_Snapshot:
			f.recv.record(w.i, k.Snapshot.GetVersion(), time.Now())
			ack := &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Ack{Ack: &fgv1.Ack{Version: k.Snapshot.GetVersion()}}}
			if err := w.send(ack); err != nil && f.ctx.Err() == nil {
				f.fail(fmt.Errorf("worker %s: ack: %w", w.id, err))
				return
			}
		case *fgv1.ConnectResponse_ProbeCall:
			reply := &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_ProbeReply{ProbeReply: &fgv1.ProbeReply{
				Id: k.ProbeCall.GetId(), Error: "simulated worker: runs no probes",
			}}}
			_ = w.send(reply)
		}
	}
}

// startHeartbeats sends HealthReport{heartbeat: true} from every worker every period, each worker
// at its own random phase.
func (f *fleetSim) startHeartbeats(period time.Duration) {
	hb := &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: &fgv1.HealthReport{Heartbeat: true}}}
	for _, w := range f.workers {
		f.wg.Add(1)
		go func(w *worker) {
			defer f.wg.Done()
			select {
			case <-time.After(rand.N(period)):
			case <-f.ctx.Done():
				return
			}
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				if err := w.send(hb); err != nil {
					if f.ctx.Err() == nil {
						f.fail(fmt.Errorf("worker %s: heartbeat: %w", w.id, err))
					}
					return
				}
				f.heartbeats.Add(1)
				select {
				case <-t.C:
				case <-f.ctx.Done():
					return
				}
			}
		}(w)
	}
}

// sendFullReports gives the workers at indexes which a full view of all servers, Healthy, and
// sends it, 64 workers at a time. The servers' strings and timestamp are shared between workers
// (read-only).
func (f *fleetSim) sendFullReports(which []int, version int64, settings string, addrs []string) error {
	now := timestamppb.Now()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, wi := range which {
		w := f.workers[wi]
		servers := make([]*fgv1.ServerHealthReport, len(addrs))
		for j, a := range addrs {
			servers[j] = &fgv1.ServerHealthReport{
				Settings: settings, Address: a, Health: "Healthy", IntervalSeconds: 30, LastProbe: now,
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(w *worker) {
			defer func() { <-sem; wg.Done() }()
			w.mu.Lock()
			w.report = &fgv1.HealthReport{Version: version, Servers: servers}
			err := w.stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: w.report}})
			w.mu.Unlock()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("worker %s: health report: %w", w.id, err)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return firstErr
}

// flip changes one server in worker wi's view and sends the whole view again, as a real worker does
// after its debounce. It returns when the report was handed to gRPC.
func (f *fleetSim) flip(wi, server int, healthy bool) error {
	w := f.workers[wi]
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.report == nil {
		return errors.New("worker has no report yet")
	}
	old := w.report.Servers[server]
	s := &fgv1.ServerHealthReport{
		Settings: old.GetSettings(), Address: old.GetAddress(), IntervalSeconds: old.GetIntervalSeconds(),
		LastProbe: timestamppb.Now(), Health: "Healthy",
	}
	if !healthy {
		s.Health, s.Reason = "Unhealthy", "tcp-connect-error"
		s.Message = "simulated: dial tcp " + old.GetAddress() + ": connect: connection refused"
	}
	// A new slice, so that no earlier message shares it (Send has marshalled those already anyway).
	servers := append([]*fgv1.ServerHealthReport(nil), w.report.Servers...)
	servers[server] = s
	w.report = &fgv1.HealthReport{Version: w.report.GetVersion(), Servers: servers}
	return w.stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: w.report}})
}

// close ends every stream and connection.
func (f *fleetSim) close() {
	f.cancel()
	for _, w := range f.workers {
		if w.stream != nil {
			w.mu.Lock()
			_ = w.stream.CloseSend()
			w.mu.Unlock()
		}
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	for _, c := range f.conns {
		_ = c.Close()
	}
}

// recvTracker records when each worker received each snapshot version.
type recvTracker struct {
	n     int
	mu    sync.Mutex
	byVer map[int64]*verRecv
}

type verRecv struct {
	times []time.Time
	count int
	done  chan struct{}
}

func newRecvTracker(n int) *recvTracker {
	return &recvTracker{n: n, byVer: map[int64]*verRecv{}}
}

func (t *recvTracker) get(ver int64) *verRecv {
	r := t.byVer[ver]
	if r == nil {
		r = &verRecv{times: make([]time.Time, t.n), done: make(chan struct{})}
		t.byVer[ver] = r
	}
	return r
}

func (t *recvTracker) record(worker int, ver int64, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.get(ver)
	if !r.times[worker].IsZero() {
		return
	}
	r.times[worker] = at
	r.count++
	if r.count == t.n {
		close(r.done)
	}
}

// wait blocks until every worker received ver, or timeout. It returns the receive times (zero for
// workers that did not receive it) and how many did.
func (t *recvTracker) wait(ver int64, timeout time.Duration, stop <-chan struct{}) ([]time.Time, int, error) {
	t.mu.Lock()
	r := t.get(ver)
	t.mu.Unlock()
	var err error
	select {
	case <-r.done:
	case <-time.After(timeout):
		err = fmt.Errorf("timeout after %s", timeout)
	case <-stop:
		err = errors.New("interrupted")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]time.Time(nil), r.times...), r.count, err
}
