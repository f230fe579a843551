package l4

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Draining, as the HTTP proxy does it: a server removed from its pool by an apply, or drained by an
// operator, gets no new connections; its open connections continue until they close or the drain
// deadline passes, when they are cut (both sides closed).
const (
	// drainTick is how often drains are checked for their end.
	drainTick = 100 * time.Millisecond
	// keepFinished is how long a finished removal drain stays in reports.
	keepFinished = 5 * time.Minute
	// drainTimeout is a removal drain's timeout, and an operator's drain's without timeout_seconds.
	drainTimeout = config.DefaultDrainTimeout * time.Second
)

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

// active is the number of open connections.
func (s *serverStats) active() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.conns))
}

// cut closes both sides of every open connection and returns how many there were.
func (s *serverStats) cut() int64 {
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

// drain is one server's drain.
type drain struct {
	admin    bool
	stats    *serverStats
	started  time.Time
	deadline time.Time
	timeout  time.Duration // an operator's drain's, as asked
	done     bool
	cut      int64
	ended    time.Time
}

// runDrains ends drains as their connections close or their deadlines pass, until ctx ends.
func (p *Proxy) runDrains(ctx context.Context) {
	t := time.NewTicker(drainTick)
	defer t.Stop()
	last := map[serverID]int64{}
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
func (p *Proxy) checkDrains(now time.Time, last map[serverID]int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for id := range last {
		if p.drains[id] == nil {
			delete(last, id)
		}
	}
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
			p.log.Info("layer-4 drain finished", "pool", id.pool, "settings", id.settings, "server", id.addr)
			changed = true
		case !now.Before(d.deadline):
			cut := d.stats.cut()
			d.done, d.cut, d.ended = true, cut, now
			p.log.Warn("layer-4 drain deadline passed; connections cut", "pool", id.pool, "settings", id.settings, "server", id.addr, "connections", cut)
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

// DrainReports lists the drains in progress and those finished in the last minutes (an operator's
// for as long as it is listed). active_connections counts open TCP connections; layer-4 connections
// carry no requests, so inflight_requests is 0.
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
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Settings != b.Settings {
			return a.Settings < b.Settings
		}
		return a.Address < b.Address
	})
	return out
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
	for id, s := range next.servers {
		d := p.drains[id]
		ad := wanted[poolHost{id.pool, s.host}]
		if ad == nil {
			if d != nil {
				// Back in its pool, or undrained: serve it again.
				delete(p.drains, id)
				p.log.Info("layer-4 drain cancelled", "pool", id.pool, "settings", id.settings, "server", id.addr)
			}
			continue
		}
		s.draining = true
		timeout := time.Duration(ad.GetTimeoutSeconds()) * time.Second
		if timeout <= 0 {
			timeout = drainTimeout
		}
		if d != nil && d.admin && d.timeout == timeout && (ad.GetStartedAt() == nil || d.started.Equal(ad.GetStartedAt().AsTime())) {
			continue // the same drain as before
		}
		started := now
		if ad.GetStartedAt() != nil {
			started = ad.GetStartedAt().AsTime()
		}
		deadline := started.Add(timeout)
		p.drains[id] = &drain{admin: true, stats: s.stats, started: started, deadline: deadline, timeout: timeout}
		p.log.Info("layer-4 server drained by an operator", "pool", id.pool, "settings", id.settings, "server", id.addr, "deadline", deadline)
	}
	// An operator's drain of a server that then left its pool becomes a removal drain.
	for id, d := range p.drains {
		if d.admin && next.servers[id] == nil {
			d.admin = false
			if !d.done && d.deadline.After(now.Add(drainTimeout)) {
				d.deadline = now.Add(drainTimeout)
			}
		}
	}
	if old == nil {
		return
	}
	for id, s := range old.servers {
		if next.servers[id] != nil || p.drains[id] != nil {
			continue
		}
		p.drains[id] = &drain{stats: s.stats, started: now, deadline: now.Add(drainTimeout)}
		p.log.Info("layer-4 server left its pool; draining", "pool", id.pool, "settings", id.settings, "server", id.addr, "deadline", now.Add(drainTimeout))
	}
}
