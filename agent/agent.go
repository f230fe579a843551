// Package agent is a data-plane worker's link to the control plane: it subscribes to its gateway's
// configuration, hands each snapshot to the worker, answers ACK or NACK, keeps the last good snapshot
// on disk so that a restarted worker serves at once, and reconnects with jittered exponential backoff
// (at once when a replica hands it off). On shutdown it tells the control plane it is leaving.
// Serving never waits on it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Applier serves snapshots. Apply returns an error to reject one; the previous one keeps serving.
// A snapshot with Deleted set asks to stop serving the gateway.
type Applier interface {
	Apply(ctx context.Context, snap *fgv1.Snapshot) error
}

// HealthSource is the worker's view of its backend servers, reported to the control plane.
type HealthSource interface {
	// Report is the whole current view.
	Report() *fgv1.HealthReport
	// Changed receives a value when the view changes.
	Changed() <-chan struct{}
	// MinInterval is the shortest probe interval (0: nothing probed).
	MinInterval() time.Duration
	// ProbeNow probes one (settings, server) pair now, for an operator.
	ProbeNow(ctx context.Context, settings, address string) (*fgv1.ProbeResult, error)
}

// Reporting cadence: a change is sent after ReportDebounce (so a burst of changes goes as one
// report); with no change, a heartbeat (an empty report) goes every shortest probe interval, between
// MinHeartbeat and MaxHeartbeat, so the control plane can tell a live view from a stale one.
const (
	ReportDebounce = 200 * time.Millisecond
	MinHeartbeat   = time.Second
	MaxHeartbeat   = 30 * time.Second
)

// Config identifies the worker and says where its control plane is.
type Config struct {
	// Gateway served, worker ID and the address its listeners bind to.
	Gateway, ID, Address string
	// StateDir keeps the last good snapshot. Empty: nothing is kept.
	StateDir string
	// BackoffBase and BackoffMax bound reconnect delays (defaults 200ms and 10s).
	BackoffBase, BackoffMax time.Duration
	// Health, if set, is reported up the stream.
	Health HealthSource
	Log    *slog.Logger
}

// Agent runs the worker's session with the control plane.
type Agent struct {
	cfg     Config
	conn    grpc.ClientConnInterface
	client  fgv1.DataPlaneServiceClient
	applier Applier
	log     *slog.Logger

	applied   atomic.Int64
	connected atomic.Bool

	// Leaving: leaveCh is closed by Leave, after leaveReason is set; leftSent once a stream carried
	// the Leaving message.
	leaveOnce   sync.Once
	leaveReason string
	leaveCh     chan struct{}
	leftOnce    sync.Once
	leftSent    chan struct{}
	handoffs    atomic.Int64
}

// ErrNotConnected is Leave's answer when no session is up to carry the message; the agent says it
// on its next session.
var ErrNotConnected = errors.New("not connected to the control plane")

// Hand-offs are answered at once, unless a replica keeps handing the worker off right after it
// connects (it was reached again while shutting down): after maxQuickHandoffs sessions in a row
// shorter than quickSession, the usual backoff applies.
const (
	maxQuickHandoffs = 3
	quickSession     = time.Second
)

// closeWait bounds the clean end of a stream when the agent stops.
const closeWait = time.Second

// handoffError ends a session the control plane handed off (ConnectResponse.Reconnect).
type handoffError struct{ reason string }

func (e *handoffError) Error() string { return "control plane handed this worker off: " + e.reason }

// New returns an agent that talks over conn.
func New(cfg Config, conn grpc.ClientConnInterface, applier Applier) *Agent {
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = 200 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Agent{cfg: cfg, conn: conn, client: fgv1.NewDataPlaneServiceClient(conn), applier: applier, log: cfg.Log,
		leaveCh: make(chan struct{}), leftSent: make(chan struct{})}
}

// Leave tells the control plane that this worker is shutting down (ConnectRequest.Leaving): it gets
// no more configuration, and its health view stops counting. From now on the agent applies no
// snapshot and sends no health report, and a session opened later (during the worker's grace
// period) says Leaving again right after its hello. Leave returns once the message went out on a
// live stream, ErrNotConnected at once when there is none, or ctx's error. Keep Run going until the
// worker finished its requests: the stream ending tells the control plane the worker is gone.
func (a *Agent) Leave(ctx context.Context, reason string) error {
	a.leaveOnce.Do(func() {
		a.leaveReason = reason
		close(a.leaveCh)
	})
	if !a.connected.Load() {
		select {
		case <-a.leftSent:
			return nil
		default:
			return ErrNotConnected
		}
	}
	select {
	case <-a.leftSent:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaving tells whether Leave was called.
func (a *Agent) leaving() bool {
	select {
	case <-a.leaveCh:
		return true
	default:
		return false
	}
}

// Handoffs is how many times a control-plane replica handed this worker off to another.
func (a *Agent) Handoffs() int64 { return a.handoffs.Load() }

// Applied is the version being served, 0 before any.
func (a *Agent) Applied() int64 { return a.applied.Load() }

// Connected tells whether a session with the control plane is up.
func (a *Agent) Connected() bool { return a.connected.Load() }

// Restore serves the last good snapshot from the state dir, if there is one. Call it before Run.
func (a *Agent) Restore(ctx context.Context) error {
	if a.cfg.StateDir == "" {
		return nil
	}
	snap, err := loadState(a.cfg.StateDir, a.cfg.Gateway)
	if err != nil || snap == nil {
		return err
	}
	if err := a.apply(ctx, snap); err != nil {
		return fmt.Errorf("restore version %d: %w", snap.GetVersion(), err)
	}
	a.log.Info("serving last good config from state dir", "version", snap.GetVersion())
	return nil
}

// Run keeps a session with the control plane until ctx ends. A session that a replica hands off is
// followed by the next one at once; others after a backoff.
func (a *Agent) Run(ctx context.Context) error {
	attempt, quick := 0, 0
	for {
		began := time.Now()
		established, err := a.session(ctx)
		a.connected.Store(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if established {
			attempt = 0
		}
		var handoff *handoffError
		if errors.As(err, &handoff) {
			if time.Since(began) < quickSession {
				quick++
			} else {
				quick = 0
			}
			if quick <= maxQuickHandoffs {
				a.handoffs.Add(1)
				a.log.Info("control plane handed this worker off; reconnecting now", "reason", handoff.reason)
				a.awaitGoAway(ctx)
				continue
			}
		} else {
			quick = 0
		}
		delay := a.backoff(attempt)
		attempt++
		a.log.Warn("control plane session ended; reconnecting", "err", err, "in", delay.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// stateWatcher is what a *grpc.ClientConn tells of its connection.
type stateWatcher interface {
	GetState() connectivity.State
	WaitForStateChange(ctx context.Context, source connectivity.State) bool
}

// awaitGoAway lets the connection to a replica that handed the worker off leave READY before the
// next stream opens, so that the stream goes to another replica: the replica closed its listener
// and sent GOAWAY before its Reconnect, but gRPC may not have read the GOAWAY yet. It waits at most
// quickSession (a proxy in between may keep the connection up); the replica also answers a stream
// that still reaches it with another Reconnect.
func (a *Agent) awaitGoAway(ctx context.Context) {
	w, ok := a.conn.(stateWatcher)
	if !ok || w.GetState() != connectivity.Ready {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, quickSession)
	defer cancel()
	w.WaitForStateChange(wctx, connectivity.Ready)
}

// backoff is exponential with jitter: a random delay in [d/2, d], d doubling up to BackoffMax.
func (a *Agent) backoff(attempt int) time.Duration {
	d := a.cfg.BackoffBase << min(attempt, 20)
	if d > a.cfg.BackoffMax || d <= 0 {
		d = a.cfg.BackoffMax
	}
	return d/2 + rand.N(d/2+1)
}

// session runs one Connect stream. established reports whether the control plane answered at all.
func (a *Agent) session(ctx context.Context) (established bool, err error) {
	// When ctx ends, the stream gets closeWait to end cleanly (its side closed, the control plane
	// ending the stream after the messages before) before it is cut.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(closeWait, cancel) })()
	stream, err := a.client.Connect(sctx)
	if err != nil {
		return false, err
	}
	hello := &fgv1.Hello{
		DataplaneId:    a.cfg.ID,
		Gateway:        a.cfg.Gateway,
		Address:        a.cfg.Address,
		AppliedVersion: a.applied.Load(),
	}
	if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	a.connected.Store(true)
	a.log.Info("connected to control plane", "applied_version", hello.AppliedVersion)
	leaveCh := a.leaveCh // nil once this stream said Leaving
	sayLeaving := func() error {
		leaveCh = nil
		msg := &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Leaving{Leaving: &fgv1.Leaving{Reason: a.leaveReason}}}
		if err := stream.Send(msg); err != nil {
			return err
		}
		a.log.Info("told the control plane this worker is leaving", "reason", a.leaveReason)
		a.leftOnce.Do(func() { close(a.leftSent) })
		return nil
	}
	if a.leaving() {
		if err := sayLeaving(); err != nil {
			return true, err
		}
	}

	// One goroutine receives; this one owns every send.
	snaps := make(chan *fgv1.Snapshot)
	probeCalls := make(chan *fgv1.ProbeCall)
	probeReplies := make(chan *fgv1.ProbeReply, 4)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("control plane closed the stream")
				}
				recvErr <- err
				return
			}
			if r := resp.GetReconnect(); r != nil {
				recvErr <- &handoffError{reason: r.GetReason()}
				return
			}
			if snap := resp.GetSnapshot(); snap != nil {
				select {
				case snaps <- snap:
				case <-sctx.Done():
					return
				}
			}
			if call := resp.GetProbeCall(); call != nil {
				select {
				case probeCalls <- call:
				case <-sctx.Done():
					return
				}
			}
		}
	}()

	var changed <-chan struct{}
	if a.cfg.Health != nil {
		changed = a.cfg.Health.Changed()
	}
	// After a (re)connect the worker sends its whole view at once.
	debounce := time.NewTimer(0)
	defer debounce.Stop()
	heartbeat := time.NewTimer(a.heartbeat())
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := stream.CloseSend(); err == nil {
				select {
				case <-recvErr:
				case <-sctx.Done():
				}
			}
			return true, ctx.Err()
		case err := <-recvErr:
			return true, err
		case <-leaveCh:
			if err := sayLeaving(); err != nil {
				return true, err
			}
		case snap := <-snaps:
			if leaveCh == nil {
				// A leaving worker serves nothing new (the control plane sends nothing either).
				a.log.Debug("leaving: snapshot ignored", "version", snap.GetVersion())
				continue
			}
			var answer *fgv1.ConnectRequest
			if err := a.apply(ctx, snap); err != nil {
				a.log.Warn("config rejected; keeping the previous one", "version", snap.GetVersion(), "err", err)
				answer = &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Nack{Nack: &fgv1.Nack{Version: snap.GetVersion(), Error: err.Error()}}}
			} else {
				a.log.Info("config applied", "version", snap.GetVersion(), "deleted", snap.GetDeleted())
				answer = &fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Ack{Ack: &fgv1.Ack{Version: snap.GetVersion()}}}
			}
			if err := stream.Send(answer); err != nil {
				return true, err
			}
		case call := <-probeCalls:
			// Probes may take their whole timeout: run them beside the stream.
			go func() {
				reply := &fgv1.ProbeReply{Id: call.GetId()}
				if a.cfg.Health == nil {
					reply.Error = "this worker runs no probes"
				} else if res, err := a.cfg.Health.ProbeNow(sctx, call.GetSettings(), call.GetAddress()); err != nil {
					reply.Error = err.Error()
				} else {
					reply.Result = res
				}
				select {
				case probeReplies <- reply:
				case <-sctx.Done():
				}
			}()
		case reply := <-probeReplies:
			if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_ProbeReply{ProbeReply: reply}}); err != nil {
				return true, err
			}
		case <-changed:
			debounce.Reset(ReportDebounce)
		case <-debounce.C:
			if a.cfg.Health == nil || leaveCh == nil {
				continue // a leaving worker's view no longer counts
			}
			rep := a.cfg.Health.Report()
			if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: rep}}); err != nil {
				return true, err
			}
			heartbeat.Reset(a.heartbeat())
		case <-heartbeat.C:
			if a.cfg.Health != nil && leaveCh != nil {
				hb := &fgv1.HealthReport{Heartbeat: true}
				if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: hb}}); err != nil {
					return true, err
				}
			}
			heartbeat.Reset(a.heartbeat())
		}
	}
}

// heartbeat is the period of empty health reports.
func (a *Agent) heartbeat() time.Duration {
	if a.cfg.Health == nil {
		return MaxHeartbeat
	}
	return min(max(a.cfg.Health.MinInterval(), MinHeartbeat), MaxHeartbeat)
}

// apply validates a snapshot, hands it to the worker and, once served, keeps it on disk.
func (a *Agent) apply(ctx context.Context, snap *fgv1.Snapshot) error {
	if !snap.GetDeleted() {
		if snap.GetGateway() == nil {
			return errors.New("snapshot has no gateway")
		}
		if got := snap.GetGateway().GetName(); got != a.cfg.Gateway {
			return fmt.Errorf("snapshot is for gateway %q, this worker serves %q", got, a.cfg.Gateway)
		}
		config.Normalize(snap.Gateway)
		if err := config.Validate(snap.Gateway); err != nil {
			return err
		}
	}
	if err := a.applier.Apply(ctx, snap); err != nil {
		return err
	}
	a.applied.Store(snap.GetVersion())
	if a.cfg.StateDir != "" {
		if err := saveState(a.cfg.StateDir, a.cfg.Gateway, snap); err != nil {
			// Serving goes on; the next restart just won't find this version.
			a.log.Error("could not keep config in state dir", "err", err)
		}
	}
	return nil
}
