package fleet

import (
	"net"
	"slices"
	"strings"
	"sync"
	"unique"

	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Health values of a worker's view of a server, as workers report them. Anything else (Unknown, or
// empty) counts as a pending probe.
const (
	healthHealthy   = "Healthy"
	healthUnhealthy = "Unhealthy"
)

// GatewayHealth holds the health views of one gateway's workers in a compact form, and keeps for
// every (settings, server) pair a summary that is updated incrementally when a view changes: how
// many workers see the server healthy and unhealthy, the newest probe among them, and every
// worker's view in worker-id order. A BackendHealth answer then costs a lookup per server of the
// configuration, not a pass over every worker's view.
//
// Strings are interned (the many workers of a fleet report the same reasons and messages) and
// times are kept as numbers; the protobuf messages of the reports are not kept, except drain
// reports (a handful per worker).
type GatewayHealth struct {
	mu      sync.RWMutex
	workers map[string]*workerView
	pairs   map[pairKey]*PairHealth
}

type pairKey struct{ settings, address string }

type workerView struct {
	id      string
	version int64
	servers []ServerView // in the report's order
	drains  []*fgv1.DrainReport
}

// PairHealth is the fleet-wide summary of one (settings, server) pair: the counts by health, the
// newest probe, and every worker's view of it, ordered by worker id.
type PairHealth struct {
	settings, address  string
	healthy, unhealthy int32
	newest             probeTime     // the latest of the members' last probes
	members            []*ServerView // sorted by worker id (then report order)
}

// probeTime is a last probe's time as numbers; nsec -1: none.
type probeTime struct {
	sec  int64
	nsec int32
}

var noProbe = probeTime{nsec: -1}

// after tells whether t is later than u; any time is later than none.
func (t probeTime) after(u probeTime) bool {
	switch {
	case t.nsec < 0:
		return false
	case u.nsec < 0:
		return true
	}
	return t.sec > u.sec || t.sec == u.sec && t.nsec > u.nsec
}

// ServerView is one worker's view of one server.
type ServerView struct {
	w         *workerView
	pair      *PairHealth
	state     uint8 // statePending, stateHealthy, stateUnhealthy
	interval  int32
	probeNsec int32 // -1: no last probe
	probeSec  int64
	health    istr
	reason    istr
	message   istr
	trans     []transition
}

const (
	statePending uint8 = iota
	stateHealthy
	stateUnhealthy
)

func stateOf(health string) uint8 {
	switch health {
	case healthHealthy:
		return stateHealthy
	case healthUnhealthy:
		return stateUnhealthy
	}
	return statePending
}

type transition struct {
	atSec                                int64
	atNsec                               int32 // -1: no time
	dataplane, from, to, reason, message istr
}

// istr is an interned string: one pointer, shared by every view holding the same text.
type istr struct{ h unique.Handle[string] }

func intern(s string) istr { return istr{unique.Make(s)} }

func (s istr) String() string {
	if s.h == (unique.Handle[string]{}) {
		return ""
	}
	return s.h.Value()
}

// set makes s hold v, interning v only when it differs.
func (s *istr) set(v string) {
	if s.String() != v {
		*s = intern(v)
	}
}

// NewGatewayHealth returns an empty gateway: no worker views.
func NewGatewayHealth() *GatewayHealth {
	return &GatewayHealth{workers: map[string]*workerView{}, pairs: map[pairKey]*PairHealth{}}
}

// Set records (or replaces) worker id's view. Servers whose view did not change cost a comparison;
// the summaries of the others are adjusted.
func (g *GatewayHealth) Set(id string, rep *fgv1.HealthReport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.workers[id]
	if w == nil {
		w = &workerView{id: id}
		g.workers[id] = w
	}
	w.version = rep.GetVersion()
	w.drains = rep.GetDrains()
	srvs := rep.GetServers()
	if g.samePairs(w, srvs) {
		for i, s := range srvs {
			w.servers[i].update(s)
		}
		return
	}
	// The set of servers changed (or this is the worker's first view): leave every pair, then join
	// the new ones.
	for i := range w.servers {
		g.leave(&w.servers[i])
	}
	w.servers = make([]ServerView, len(srvs))
	for i, s := range srvs {
		sv := &w.servers[i]
		sv.w, sv.probeNsec = w, -1
		sv.update(s) // fills the fields before joining, so the pair counts its state
		g.join(sv, pairKey{s.GetSettings(), s.GetAddress()})
	}
}

// samePairs tells whether srvs names the same pairs, in the same order, as w's current view.
func (g *GatewayHealth) samePairs(w *workerView, srvs []*fgv1.ServerHealthReport) bool {
	if len(srvs) != len(w.servers) || len(srvs) == 0 {
		return false
	}
	for i, s := range srvs {
		p := w.servers[i].pair
		if p.settings != s.GetSettings() || p.address != s.GetAddress() {
			return false
		}
	}
	return true
}

// Remove forgets worker id's view (it disconnected, or its view went stale).
func (g *GatewayHealth) Remove(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.workers[id]
	if w == nil {
		return
	}
	for i := range w.servers {
		g.leave(&w.servers[i])
	}
	delete(g.workers, id)
}

// Len is the number of workers with a view.
func (g *GatewayHealth) Len() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.workers)
}

// join adds sv to the pair k, creating the pair.
func (g *GatewayHealth) join(sv *ServerView, k pairKey) {
	p := g.pairs[k]
	if p == nil {
		p = &PairHealth{settings: k.settings, address: k.address, newest: noProbe}
		g.pairs[k] = p
	}
	sv.pair = p
	id := sv.w.id
	// After every member with an id <= id: a worker naming a pair twice keeps its report order.
	i, _ := slices.BinarySearchFunc(p.members, id, func(m *ServerView, id string) int {
		if m.w.id <= id {
			return -1
		}
		return 1
	})
	p.members = slices.Insert(p.members, i, sv)
	p.count(sv.state, 1)
	if t := sv.probe(); t.after(p.newest) {
		p.newest = t
	}
}

// leave removes sv from its pair, dropping the pair when no worker reports it any more.
func (g *GatewayHealth) leave(sv *ServerView) {
	p := sv.pair
	if p == nil {
		return
	}
	id := sv.w.id
	i, _ := slices.BinarySearchFunc(p.members, id, func(m *ServerView, id string) int { return strings.Compare(m.w.id, id) })
	for ; i < len(p.members) && p.members[i].w.id == id; i++ {
		if p.members[i] == sv {
			p.members = slices.Delete(p.members, i, i+1)
			p.count(sv.state, -1)
			if sv.probe() == p.newest && p.newest != noProbe {
				p.findNewest()
			}
			break
		}
	}
	sv.pair = nil
	if len(p.members) == 0 {
		delete(g.pairs, pairKey{p.settings, p.address})
	}
}

// findNewest recomputes the newest probe from the members: only when the member that had it left
// or reported an older one, so rarely (a worker's probe times only move forward).
func (p *PairHealth) findNewest() {
	p.newest = noProbe
	for _, m := range p.members {
		if t := m.probe(); t.after(p.newest) {
			p.newest = t
		}
	}
}

func (p *PairHealth) count(state uint8, d int32) {
	switch state {
	case stateHealthy:
		p.healthy += d
	case stateUnhealthy:
		p.unhealthy += d
	}
}

// update copies a report's server entry into sv, moving its pair's counts if the health changed.
func (sv *ServerView) update(s *fgv1.ServerHealthReport) {
	if st := stateOf(s.GetHealth()); st != sv.state {
		if sv.pair != nil {
			sv.pair.count(sv.state, -1)
			sv.pair.count(st, 1)
		}
		sv.state = st
	}
	sv.health.set(s.GetHealth())
	sv.reason.set(s.GetReason())
	sv.message.set(s.GetMessage())
	sv.interval = s.GetIntervalSeconds()
	old := sv.probe()
	sv.probeSec, sv.probeNsec = stamp(s.GetLastProbe())
	if p := sv.pair; p != nil {
		switch t := sv.probe(); {
		case t.after(p.newest):
			p.newest = t
		case old == p.newest && t != old: // it had the newest and went back (or lost it)
			p.findNewest()
		}
	}
	if !sameTransitions(sv.trans, s.GetTransitions()) {
		sv.trans = make([]transition, len(s.GetTransitions()))
		for i, t := range s.GetTransitions() {
			tr := &sv.trans[i]
			tr.atSec, tr.atNsec = stamp(t.GetAt())
			tr.dataplane.set(t.GetDataplane())
			tr.from.set(t.GetFrom())
			tr.to.set(t.GetTo())
			tr.reason.set(t.GetReason())
			tr.message.set(t.GetMessage())
		}
	}
}

func stamp(ts *timestamppb.Timestamp) (int64, int32) {
	if ts == nil {
		return 0, -1
	}
	return ts.GetSeconds(), ts.GetNanos()
}

func unstamp(sec int64, nsec int32) *timestamppb.Timestamp {
	if nsec < 0 {
		return nil
	}
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nsec}
}

func sameTransitions(have []transition, ts []*fgv1.HealthTransition) bool {
	if len(have) != len(ts) {
		return false
	}
	for i, t := range ts {
		h := &have[i]
		sec, nsec := stamp(t.GetAt())
		if h.atSec != sec || h.atNsec != nsec || h.dataplane.String() != t.GetDataplane() || h.from.String() != t.GetFrom() ||
			h.to.String() != t.GetTo() || h.reason.String() != t.GetReason() || h.message.String() != t.GetMessage() {
			return false
		}
	}
	return true
}

// HealthReader reads a GatewayHealth under its read lock; it and what it returns are valid only in
// the function given to Read.
type HealthReader struct{ g *GatewayHealth }

// Read calls fn with a consistent view of the gateway's health.
func (g *GatewayHealth) Read(fn func(r HealthReader)) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	fn(HealthReader{g})
}

// Workers is the number of workers with a view.
func (r HealthReader) Workers() int {
	if r.g == nil {
		return 0
	}
	return len(r.g.workers)
}

// Pair is the summary of a (settings, server) pair; nil when no worker reports it.
func (r HealthReader) Pair(settings, address string) *PairHealth {
	if r.g == nil {
		return nil
	}
	return r.g.pairs[pairKey{settings, address}]
}

// PairsOf calls fn for every pair of a server: address "host:port", or a host for every port.
func (r HealthReader) PairsOf(address string, fn func(p *PairHealth)) {
	if r.g == nil {
		return
	}
	for _, p := range r.g.pairs {
		if p.address != address {
			if h, _, err := net.SplitHostPort(p.address); err != nil || h != address {
				continue
			}
		}
		fn(p)
	}
}

// Drains returns every worker's drain reports, by worker id (not to be modified).
func (r HealthReader) Drains() map[string][]*fgv1.DrainReport {
	out := map[string][]*fgv1.DrainReport{}
	if r.g == nil {
		return out
	}
	for id, w := range r.g.workers {
		if len(w.drains) > 0 {
			out[id] = w.drains
		}
	}
	return out
}

// Report rebuilds worker id's view as a HealthReport (nil when it has none): the stored view, for
// tests and rare uses; BackendHealth does not need it.
func (r HealthReader) Report(id string) *fgv1.HealthReport {
	if r.g == nil {
		return nil
	}
	w := r.g.workers[id]
	if w == nil {
		return nil
	}
	rep := &fgv1.HealthReport{Version: w.version, Drains: w.drains}
	for i := range w.servers {
		sv := &w.servers[i]
		s := &fgv1.ServerHealthReport{
			Settings: sv.pair.settings, Address: sv.pair.address, Health: sv.Health(), Reason: sv.Reason(),
			Message: sv.Message(), LastProbe: sv.LastProbe(), IntervalSeconds: sv.interval, Transitions: sv.Transitions(nil),
		}
		rep.Servers = append(rep.Servers, s)
	}
	return rep
}

// IDs returns the ids of the workers with a view, in no order.
func (r HealthReader) IDs() []string {
	if r.g == nil {
		return nil
	}
	out := make([]string, 0, len(r.g.workers))
	for id := range r.g.workers {
		out = append(out, id)
	}
	return out
}

// Address is the pair's server, "host:port".
func (p *PairHealth) Address() string { return p.address }

// Settings is the pair's backend settings.
func (p *PairHealth) Settings() string { return p.settings }

// Reporting is the number of workers reporting the pair.
func (p *PairHealth) Reporting() int { return len(p.members) }

// Healthy is the number of workers that see the server healthy.
func (p *PairHealth) Healthy() int { return int(p.healthy) }

// Unhealthy is the number of workers that see the server unhealthy.
func (p *PairHealth) Unhealthy() int { return int(p.unhealthy) }

// Views are the workers' views of the pair, by worker id (not to be modified).
func (p *PairHealth) Views() []*ServerView { return p.members }

// LastProbe is the newest of the workers' last probes of the server (a new message; nil if none
// has probed it yet).
func (p *PairHealth) LastProbe() *timestamppb.Timestamp { return unstamp(p.newest.sec, p.newest.nsec) }

// FirstUnhealthy is the view of the first worker (by id) that sees the server unhealthy; nil if none.
func (p *PairHealth) FirstUnhealthy() *ServerView {
	if p.unhealthy == 0 {
		return nil
	}
	for _, m := range p.members {
		if m.state == stateUnhealthy {
			return m
		}
	}
	return nil
}

// Dataplane is the worker's id.
func (sv *ServerView) Dataplane() string { return sv.w.id }

// Health is the worker's verdict as it reported it: Healthy, Unhealthy or Unknown.
func (sv *ServerView) Health() string { return sv.health.String() }

// IsHealthy tells whether the worker sees the server healthy.
func (sv *ServerView) IsHealthy() bool { return sv.state == stateHealthy }

// IsUnhealthy tells whether the worker sees the server unhealthy.
func (sv *ServerView) IsUnhealthy() bool { return sv.state == stateUnhealthy }

// Reason is the reason code of the worker's last failure.
func (sv *ServerView) Reason() string { return sv.reason.String() }

// Message is the worker's probe message.
func (sv *ServerView) Message() string { return sv.message.String() }

// LastProbe is the time of the worker's last probe (a new message; nil if none).
func (sv *ServerView) LastProbe() *timestamppb.Timestamp { return unstamp(sv.probeSec, sv.probeNsec) }

func (sv *ServerView) probe() probeTime { return probeTime{sv.probeSec, sv.probeNsec} }

// Transitions appends the worker's latest transitions of the server, as messages, to dst.
func (sv *ServerView) Transitions(dst []*fgv1.HealthTransition) []*fgv1.HealthTransition {
	for i := range sv.trans {
		t := &sv.trans[i]
		dst = append(dst, &fgv1.HealthTransition{
			At: unstamp(t.atSec, t.atNsec), Dataplane: t.dataplane.String(), From: t.from.String(), To: t.to.String(),
			Reason: t.reason.String(), Message: t.message.String(),
		})
	}
	return dst
}
