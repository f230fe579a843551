package l4

import (
	"sync"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/dataplane/drain"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Draining (dataplane/drain), as the HTTP proxy does it: a server removed from its pool by an
// apply, or drained by an operator, gets no new connections; its open connections continue until
// they close or the drain deadline passes, when they are cut (both sides closed).

// drainTimeout is a removal drain's timeout, and an operator's drain's without timeout_seconds.
const drainTimeout = config.DefaultDrainTimeout * time.Second

// serverStats holds a server's open connections, across configurations.
type serverStats struct {
	mu    sync.Mutex
	conns map[*conn]struct{}
}

func newServerStats() *serverStats { return &serverStats{conns: map[*conn]struct{}{}} }

func (s *serverStats) add(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *serverStats) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Active is the number of open connections.
func (s *serverStats) Active() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.conns))
}

// Requests is 0: layer-4 connections carry no requests.
func (s *serverStats) Requests() int64 { return 0 }

// Cut closes both sides of every open connection and returns how many there were.
func (s *serverStats) Cut() int64 {
	s.mu.Lock()
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.abort()
	}
	return int64(len(list))
}

// DrainChanged receives a value (coalesced) when a drain report changes.
func (p *Proxy) DrainChanged() <-chan struct{} { return p.drains.Changed() }

// DrainReports lists the drains in progress and those finished in the last minutes (an operator's
// for as long as it is listed). active_connections counts open TCP connections; layer-4 connections
// carry no requests, so inflight_requests is 0.
func (p *Proxy) DrainReports() []*fgv1.DrainReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.drains.Reports()
}

// updateDrains starts, keeps and ends drains for the next configuration (under p.mu, before it is
// published): servers that left their pool start draining; servers back in it stop; the operator's
// drains follow their list, marking their servers draining in next.
func (p *Proxy) updateDrains(old, next *state, admin []*fgv1.AdminDrain, now time.Time) {
	type poolHost struct{ pool, host string }
	wanted := map[poolHost]*fgv1.AdminDrain{}
	for _, d := range admin {
		wanted[poolHost{d.GetPool(), d.GetAddress()}] = d
	}
	drains := p.drains.Drains
	for id, s := range next.servers {
		d := drains[id]
		ad := wanted[poolHost{id.Pool, s.host}]
		if ad == nil {
			if d != nil {
				// Back in its pool, or undrained: serve it again.
				delete(drains, id)
				p.log.Info("layer-4 drain cancelled", "pool", id.Pool, "settings", id.Settings, "server", id.Addr)
			}
			continue
		}
		s.draining = true
		timeout := time.Duration(ad.GetTimeoutSeconds()) * time.Second
		if timeout <= 0 {
			timeout = drainTimeout
		}
		if d != nil && d.Admin && d.Timeout == timeout && (ad.GetStartedAt() == nil || d.Started.Equal(ad.GetStartedAt().AsTime())) {
			continue // the same drain as before
		}
		started := now
		if ad.GetStartedAt() != nil {
			started = ad.GetStartedAt().AsTime()
		}
		deadline := started.Add(timeout)
		drains[id] = &drain.Drain[struct{}]{Admin: true, Conns: s.stats, Started: started, Deadline: deadline, Timeout: timeout}
		p.log.Info("layer-4 server drained by an operator", "pool", id.Pool, "settings", id.Settings, "server", id.Addr, "deadline", deadline)
	}
	// An operator's drain of a server that then left its pool becomes a removal drain.
	for id, d := range drains {
		if d.Admin && next.servers[id] == nil {
			d.Admin = false
			if !d.Done && d.Deadline.After(now.Add(drainTimeout)) {
				d.Deadline = now.Add(drainTimeout)
			}
		}
	}
	if old == nil {
		return
	}
	for id, s := range old.servers {
		if next.servers[id] != nil || drains[id] != nil {
			continue
		}
		drains[id] = &drain.Drain[struct{}]{Conns: s.stats, Started: now, Deadline: now.Add(drainTimeout)}
		p.log.Info("layer-4 server left its pool; draining", "pool", id.Pool, "settings", id.Settings, "server", id.Addr, "deadline", now.Add(drainTimeout))
	}
}
