package proxy

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Draining: a server removed from its pool by an apply, or drained by an operator, gets no new
// requests (but for clients whose affinity cookie names it); its requests and upgraded connections
// in flight continue until they end or the drain deadline passes, when they are cut.
const (
	// drainTick is how often drains are checked for their end.
	drainTick = 100 * time.Millisecond
	// keepFinished is how long a finished drain stays in reports, so that `drain status` can tell
	// how it ended.
	keepFinished = 5 * time.Minute
)

// serverStats counts a server's connections across configurations, and can cut them.
type serverStats struct {
	inflight atomic.Int64 // requests in flight
	tunnels  atomic.Int64 // upgraded connections open (also counted in inflight)

	// Cutting: plain requests register with cutter (cheap, no context per request); upgraded
	// connections, which are few and long, watch life.
	cutter upstream.Cutter

	mu     sync.Mutex
	life   context.Context // cancelled to cut every tunnel
	cancel context.CancelFunc
}

func newServerStats() *serverStats {
	s := &serverStats{}
	s.life, s.cancel = context.WithCancel(context.Background())
	return s
}

// active is the connections still open: every request in flight holds one, upgraded ones included.
func (s *serverStats) active() int64 { return s.inflight.Load() }

// lifetime is the context whose end cuts the server's current tunnels.
func (s *serverStats) lifetime() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.life
}

// cut ends every request and tunnel in flight; later ones start afresh.
func (s *serverStats) cut() {
	s.cutter.Cut()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
	s.life, s.cancel = context.WithCancel(context.Background())
}

func (s *serverStats) track(open bool) {
	if open {
		s.tunnels.Add(1)
	} else {
		s.tunnels.Add(-1)
	}
}

// drainID names a drain.
type drainID struct {
	pool, settings, addr string
}

// drain is one server's drain on this worker.
type drain struct {
	id       drainID
	admin    bool
	stats    *serverStats
	started  time.Time
	deadline time.Time
	done     bool
	cut      int64
	ended    time.Time
	// server is the server as it was, still reachable through affinity cookies until the drain ends.
	server *server
	// over is set when the drain ends; the request path reads it through server.drainEnded.
	over *atomic.Bool
}

// drainTimeout is a settings' drain timeout: connectionDraining's, else 30 s.
func drainTimeout(set *fgv1.BackendHttpSettings) time.Duration {
	if cd := set.GetConnectionDraining(); cd.GetEnabled() && cd.GetDrainTimeoutInSec() > 0 {
		return time.Duration(cd.GetDrainTimeoutInSec()) * time.Second
	}
	return config.DefaultDrainTimeout * time.Second
}

// runDrains ends drains as their connections finish or their deadlines pass, until ctx ends.
func (p *Proxy) runDrains(ctx context.Context) {
	t := time.NewTicker(drainTick)
	defer t.Stop()
	last := map[drainID]int64{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if p.checkDrains(now, last) {
				p.notifyDrains()
			}
		}
	}
}

// checkDrains ends what can be ended and reports whether anything a report shows changed.
func (p *Proxy) checkDrains(now time.Time, last map[drainID]int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for id, d := range p.drains {
		if d.done {
			if !d.admin && now.Sub(d.ended) > keepFinished {
				delete(p.drains, id)
				delete(last, id)
				changed = true
			}
			continue
		}
		active := d.stats.active()
		switch {
		case active == 0:
			d.done, d.ended = true, now
			d.over.Store(true)
			p.log.Info("drain finished", "pool", id.pool, "server", id.addr)
			changed = true
		case !now.Before(d.deadline):
			d.stats.cut()
			d.done, d.cut, d.ended = true, active, now
			d.over.Store(true)
			p.log.Warn("drain deadline passed; connections cut", "pool", id.pool, "server", id.addr, "connections", active)
			changed = true
		case last[id] != active:
			changed = true
		}
		last[id] = active
	}
	return changed
}

// DrainChanged receives a value (coalesced) when a drain report changes.
func (p *Proxy) DrainChanged() <-chan struct{} { return p.drainChanged }

func (p *Proxy) notifyDrains() {
	select {
	case p.drainChanged <- struct{}{}:
	default:
	}
}

// DrainReports lists the drains in progress and those finished in the last minutes.
func (p *Proxy) DrainReports() []*fgv1.DrainReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*fgv1.DrainReport, 0, len(p.drains))
	for id, d := range p.drains {
		r := &fgv1.DrainReport{
			Pool:      id.pool,
			Settings:  id.settings,
			Address:   id.addr,
			StartedAt: timestamppb.New(d.started),
			Deadline:  timestamppb.New(d.deadline),
			Done:      d.done,
			Admin:     d.admin,
		}
		if d.done {
			r.CutConnections = d.cut
		} else {
			r.ActiveConnections = d.stats.active()
			r.InflightRequests = r.ActiveConnections - d.stats.tunnels.Load()
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Address < out[j].Address
	})
	return out
}

// updateDrains starts, keeps and ends drains for a new configuration (under p.mu): servers that
// left their pool start draining; servers that came back stop; the operator's drains follow the
// snapshot's list. It returns the servers an affinity cookie may still reach, by backend set.
func (p *Proxy) updateDrains(old, next *state, admin []*fgv1.AdminDrain, now time.Time) {
	present := map[drainID]*server{}
	for _, bs := range next.targets {
		for _, s := range bs.servers {
			present[drainID{bs.pool, bs.settings, s.addr}] = s
		}
	}
	// Operator's drains, by pool and host.
	type poolHost struct{ pool, host string }
	wanted := map[poolHost]*fgv1.AdminDrain{}
	for _, d := range admin {
		wanted[poolHost{d.GetPool(), d.GetAddress()}] = d
	}
	for _, bs := range next.targets {
		for _, s := range bs.servers {
			ad := wanted[poolHost{bs.pool, s.host}]
			id := drainID{bs.pool, bs.settings, s.addr}
			d := p.drains[id]
			switch {
			case ad != nil:
				s.draining = true
				if d == nil || !d.admin {
					started := ad.GetStartedAt().AsTime()
					timeout := time.Duration(ad.GetTimeoutSeconds()) * time.Second
					if timeout == 0 {
						timeout = bs.drainTimeout
					}
					d = &drain{id: id, admin: true, stats: s.stats, started: started, deadline: started.Add(timeout), over: new(atomic.Bool)}
					p.drains[id] = d
				}
				d.server, s.drainEnded = s, d.over
			case d != nil:
				// Back in its pool, or undrained: serve it again.
				delete(p.drains, id)
			}
		}
	}
	// Operator's drains that no longer apply (lifted, or the server left its pool): a finished one is
	// forgotten; one still running goes on as a removal drain, to its deadline.
	for id, d := range p.drains {
		if !d.admin {
			continue
		}
		s := present[id]
		if s != nil && wanted[poolHost{id.pool, s.host}] != nil {
			continue
		}
		if s != nil || d.done {
			delete(p.drains, id)
			continue
		}
		d.admin = false
	}
	if old == nil {
		return
	}
	for _, bs := range old.targets {
		for _, s := range bs.servers {
			id := drainID{bs.pool, bs.settings, s.addr}
			if present[id] != nil || p.drains[id] != nil {
				continue
			}
			d := &drain{id: id, stats: s.stats, started: now, deadline: now.Add(bs.drainTimeout), over: new(atomic.Bool)}
			gone := *s
			gone.draining, gone.drainEnded = true, d.over
			d.server = &gone
			p.drains[id] = d
			p.log.Info("server left its pool; draining", "pool", bs.pool, "server", s.addr, "deadline", now.Add(bs.drainTimeout))
		}
	}
	// Affinity cookies of draining servers keep working: index them in their backend set.
	for _, bs := range next.targets {
		if !bs.affinity {
			continue
		}
		for id, d := range p.drains {
			if id.pool == bs.pool && id.settings == bs.settings && !d.done && d.server.hash != "" && bs.serverByHash[d.server.hash] == nil {
				bs.serverByHash[d.server.hash] = d.server
			}
		}
	}
}
