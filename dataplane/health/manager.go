// Package health decides which backend servers a worker sends traffic to: it runs one prober per
// (server, backend settings) pair that a rule uses, feeds each result to that pair's threshold state
// machine (Tracker), and reports the worker's view for the control plane to aggregate.
package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/dataplane/probe"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Prober runs one probe. probe.Run is the real one.
type Prober interface {
	Probe(ctx context.Context, s probe.Spec) probe.Result
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context, s probe.Spec) probe.Result

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context, s probe.Spec) probe.Result { return f(ctx, s) }

// MaxFirstProbeDelay spreads the first probes of new targets over up to this long (or the interval,
// if shorter), so that a thousand servers are not probed in the same millisecond.
const MaxFirstProbeDelay = 2 * time.Second

// Manager runs the probers of one worker.
type Manager struct {
	prober Prober
	log    *slog.Logger

	// observe, if set, sees every scheduled probe's result (for metrics).
	observe func(settings, server, reason string, d time.Duration)

	mu      sync.Mutex
	running map[Key]*runner
	version int64
	changed chan struct{}
	wg      sync.WaitGroup
}

type runner struct {
	target  Target
	tracker *Tracker
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewManager returns a manager with no targets.
func NewManager(p Prober, log *slog.Logger) *Manager {
	return &Manager{prober: p, log: log, running: map[Key]*runner{}, changed: make(chan struct{}, 1)}
}

// Observe sets a function that sees every scheduled probe's result. Call it before Update.
func (m *Manager) Observe(f func(settings, server, reason string, d time.Duration)) { m.observe = f }

// Changed receives a value (coalesced) whenever a server's health or the set of targets changes.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

func (m *Manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Update makes targets the probed set: new pairs start in Unknown, pairs whose probe changed are
// probed anew but keep their state, pairs no longer used stop.
func (m *Manager) Update(version int64, targets []Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.version = version
	want := make(map[Key]Target, len(targets))
	for _, t := range targets {
		want[t.Key] = t
	}
	for k, r := range m.running {
		if t, ok := want[k]; !ok || t.Fingerprint != r.target.Fingerprint {
			r.cancel()
			<-r.done
			if !ok {
				delete(m.running, k)
			}
		}
	}
	for k, t := range want {
		r := m.running[k]
		switch {
		case r == nil:
			r = &runner{tracker: NewTracker(t.Threshold)}
			m.running[k] = r
		case r.target.Fingerprint == t.Fingerprint:
			continue
		}
		r.target = t
		r.tracker.SetThreshold(t.Threshold)
		m.start(r)
	}
	m.notify()
}

func (m *Manager) start(r *runner) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(r.done)
		m.run(ctx, r.target, r.tracker)
	}()
}

// run probes one target every interval until ctx ends. Probes are scheduled on a fixed grid from a
// random first offset, so intervals do not drift; a probe that overruns its slot starts the next one
// at once.
func (m *Manager) run(ctx context.Context, t Target, tr *Tracker) {
	first := min(t.Interval, MaxFirstProbeDelay)
	next := time.Now().Add(rand.N(first + 1))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res := m.prober.Probe(ctx, t.Spec)
		if ctx.Err() != nil {
			return
		}
		if m.observe != nil {
			m.observe(t.Settings, t.Address, res.Reason, res.Duration)
		}
		if tr.Observe(Outcome{OK: res.Healthy, Reason: res.Reason, Message: res.Message, At: res.At}) {
			st := tr.State()
			m.log.Info("backend health changed", "settings", t.Settings, "server", t.Address,
				"health", st.Status, "reason", st.Reason, "message", st.Message)
			m.notify()
		}
		next = next.Add(t.Interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		timer.Reset(time.Until(next))
	}
}

// Tracker returns the state machine of a pair, nil if it is not probed.
func (m *Manager) Tracker(k Key) *Tracker {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.running[k]; r != nil {
		return r.tracker
	}
	return nil
}

// Target returns the target of a pair.
func (m *Manager) Target(k Key) (Target, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.running[k]
	if r == nil {
		return Target{}, false
	}
	return r.target, true
}

// ProbeNow runs one probe of a pair right now, outside its schedule and without counting it toward
// the pair's health.
func (m *Manager) ProbeNow(ctx context.Context, settings, address string) (*fgv1.ProbeResult, error) {
	t, ok := m.Target(Key{Settings: settings, Address: address})
	if !ok {
		return nil, fmt.Errorf("server %s under settings %q is not probed by this worker", address, settings)
	}
	return ResultProto(m.prober.Probe(ctx, t.Spec)), nil
}

// ResultProto converts a probe result for the API.
func ResultProto(r probe.Result) *fgv1.ProbeResult {
	out := &fgv1.ProbeResult{
		Healthy:  r.Healthy,
		Reason:   r.Reason,
		Message:  r.Message,
		Hint:     r.Hint,
		Status:   int32(r.Status),
		Address:  r.Addr,
		Duration: durationpb.New(r.Duration),
		At:       timestamppb.New(r.At),
	}
	for _, st := range r.Stages {
		out.Stages = append(out.Stages, &fgv1.ProbeStage{Name: st.Name, Duration: durationpb.New(st.Duration), Detail: st.Detail, Error: st.Err})
	}
	return out
}

// MinInterval is the shortest probe interval among the targets (0 without targets).
func (m *Manager) MinInterval() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var d time.Duration
	for _, r := range m.running {
		if d == 0 || r.target.Interval < d {
			d = r.target.Interval
		}
	}
	return d
}

// Report is the worker's whole current view, sorted by settings and address.
func (m *Manager) Report() *fgv1.HealthReport {
	m.mu.Lock()
	keys := make([]Key, 0, len(m.running))
	for k := range m.running {
		keys = append(keys, k)
	}
	runners := make(map[Key]*runner, len(m.running))
	for k, r := range m.running {
		runners[k] = r
	}
	version := m.version
	m.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Settings != keys[j].Settings {
			return keys[i].Settings < keys[j].Settings
		}
		return keys[i].Address < keys[j].Address
	})
	rep := &fgv1.HealthReport{Version: version, Servers: make([]*fgv1.ServerHealthReport, 0, len(keys))}
	for _, k := range keys {
		r := runners[k]
		st := r.tracker.State()
		s := &fgv1.ServerHealthReport{
			Settings:        k.Settings,
			Address:         k.Address,
			Health:          st.Status,
			Reason:          st.Reason,
			Message:         st.Message,
			IntervalSeconds: int32(r.target.Interval / time.Second),
		}
		if !st.LastProbe.IsZero() {
			s.LastProbe = timestamppb.New(st.LastProbe)
		}
		for _, tr := range st.Transitions {
			s.Transitions = append(s.Transitions, &fgv1.HealthTransition{
				At: timestamppb.New(tr.At), From: tr.From, To: tr.To, Reason: tr.Reason, Message: tr.Message,
			})
		}
		rep.Servers = append(rep.Servers, s)
	}
	return rep
}

// Close stops every prober and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	for k, r := range m.running {
		r.cancel()
		delete(m.running, k)
	}
	m.mu.Unlock()
	m.wg.Wait()
}
