package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/drain"
	"github.com/fleetgate/fleetgate/dataplane/upstream"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Draining (dataplane/drain): a server removed from its pool by an apply, or drained by an operator,
// gets no new requests (but for clients whose affinity cookie names it); its requests and upgraded
// connections in flight continue until they end or the drain deadline passes, when they are cut.

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

// Active is the connections still open: every request in flight holds one, upgraded ones included.
func (s *serverStats) Active() int64 { return s.inflight.Load() }

// Requests is the requests in flight that are not upgraded connections.
func (s *serverStats) Requests() int64 { return s.inflight.Load() - s.tunnels.Load() }

// lifetime is the context whose end cuts the server's current tunnels.
func (s *serverStats) lifetime() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.life
}

// Cut ends every request and tunnel in flight and returns how many there were; later ones start
// afresh.
func (s *serverStats) Cut() int64 {
	n := s.inflight.Load()
	s.cutter.Cut()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
	s.life, s.cancel = context.WithCancel(context.Background())
	return n
}

func (s *serverStats) track(open bool) {
	if open {
		s.tunnels.Add(1)
	} else {
		s.tunnels.Add(-1)
	}
}

// drainTimeout is a settings' drain timeout: connectionDraining's, else 30 s.
func drainTimeout(set *fgv1.BackendHttpSettings) time.Duration {
	if cd := set.GetConnectionDraining(); cd.GetEnabled() && cd.GetDrainTimeoutInSec() > 0 {
		return time.Duration(cd.GetDrainTimeoutInSec()) * time.Second
	}
	return config.DefaultDrainTimeout * time.Second
}

// DrainChanged receives a value (coalesced) when a drain report changes.
func (p *Proxy) DrainChanged() <-chan struct{} { return p.drains.Changed() }

// DrainReports lists the drains in progress and those finished in the last minutes.
func (p *Proxy) DrainReports() []*fgv1.DrainReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drains.Reports()
}

// updateDrains starts, keeps and ends drains for a new configuration (under p.mu): servers that
// left their pool start draining; servers that came back stop; the operator's drains follow the
// snapshot's list. It returns the servers an affinity cookie may still reach, by backend set.
func (p *Proxy) updateDrains(old, next *state, admin []*fgv1.AdminDrain, now time.Time) {
	drains := p.drains.Drains
	present := map[drain.ID]*server{}
	for _, bs := range next.targets {
		for _, s := range bs.servers {
			present[drain.ID{Pool: bs.pool, Settings: bs.settings, Addr: s.addr}] = s
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
			id := drain.ID{Pool: bs.pool, Settings: bs.settings, Addr: s.addr}
			d := drains[id]
			switch {
			case ad != nil:
				s.draining = true
				if d == nil || !d.Admin {
					started := ad.GetStartedAt().AsTime()
					timeout := time.Duration(ad.GetTimeoutSeconds()) * time.Second
					if timeout == 0 {
						timeout = bs.drainTimeout
					}
					d = &drain.Drain[*server]{Admin: true, Conns: s.stats, Started: started, Deadline: started.Add(timeout), Timeout: timeout}
					drains[id] = d
				}
				d.Server, s.drainEnded = s, &d.Over
			case d != nil:
				// Back in its pool, or undrained: serve it again.
				delete(drains, id)
			}
		}
	}
	// Operator's drains that no longer apply (lifted, or the server left its pool): a finished one is
	// forgotten; one still running goes on as a removal drain, to its deadline.
	for id, d := range drains {
		if !d.Admin {
			continue
		}
		s := present[id]
		if s != nil && wanted[poolHost{id.Pool, s.host}] != nil {
			continue
		}
		if s != nil || d.Done {
			delete(drains, id)
			continue
		}
		d.Admin = false
	}
	if old == nil {
		return
	}
	for _, bs := range old.targets {
		for _, s := range bs.servers {
			id := drain.ID{Pool: bs.pool, Settings: bs.settings, Addr: s.addr}
			if present[id] != nil || drains[id] != nil {
				continue
			}
			d := &drain.Drain[*server]{Conns: s.stats, Started: now, Deadline: now.Add(bs.drainTimeout)}
			gone := *s
			gone.draining, gone.drainEnded = true, &d.Over
			d.Server = &gone
			drains[id] = d
			p.log.Info("server left its pool; draining", "pool", bs.pool, "server", s.addr, "deadline", now.Add(bs.drainTimeout))
		}
	}
	// Affinity cookies of draining servers keep working: index them in their backend set.
	for _, bs := range next.targets {
		if !bs.affinity {
			continue
		}
		for id, d := range drains {
			if id.Pool == bs.pool && id.Settings == bs.settings && !d.Done && d.Server.hash != "" && bs.serverByHash[d.Server.hash] == nil {
				bs.serverByHash[d.Server.hash] = d.Server
			}
		}
	}
}
