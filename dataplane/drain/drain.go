// Package drain keeps a worker's connection drains, for the HTTP proxy and the layer-4 proxy alike.
//
// A server removed from its pool by an apply, or drained by an operator, gets no new connections;
// those open continue until they end or the drain's deadline passes, when they are cut. The owner
// decides when a drain starts, stops or changes kind (that differs between the proxies); a Book
// holds the drains, ends them on time and reports them.
package drain

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const (
	// Tick is how often drains are checked for their end.
	Tick = 100 * time.Millisecond
	// KeepFinished is how long a finished removal drain stays in reports, so that `drain status`
	// can tell how it ended. An operator's drain stays for as long as the operator lists it.
	KeepFinished = 5 * time.Minute
)

// ID names a drain: a server of a pool, under a backend settings.
type ID struct {
	Pool, Settings, Addr string
}

// Conns is a server's open connections, as a drain sees them.
type Conns interface {
	// Active is the connections open (for HTTP, requests in flight, upgraded ones included).
	Active() int64
	// Requests is how many of Active are requests (0 for layer-4 connections).
	Requests() int64
	// Cut ends every open connection and returns how many there were.
	Cut() int64
}

// Drain is one server's drain. T is what the owner keeps of the server while it drains.
type Drain[T any] struct {
	Admin    bool // an operator's drain (else the server left its pool)
	Conns    Conns
	Started  time.Time
	Deadline time.Time
	Timeout  time.Duration // an operator's drain's timeout, as asked
	Done     bool
	CutConns int64 // connections cut at the deadline
	Ended    time.Time
	// Over is set when the drain ends (clean or cut).
	Over   atomic.Bool
	Server T
}

// Book holds a worker's drains. Its owner guards it with its own lock (the one given to Run) and
// changes Drains directly under it.
type Book[T any] struct {
	Drains map[ID]*Drain[T]

	log     *slog.Logger
	kind    string // "" or "layer-4 ", for log messages
	last    map[ID]int64
	changed chan struct{}
}

// NewBook returns an empty book; kind prefixes its log messages ("layer-4 ").
func NewBook[T any](log *slog.Logger, kind string) *Book[T] {
	return &Book[T]{Drains: map[ID]*Drain[T]{}, log: log, kind: kind, last: map[ID]int64{},
		changed: make(chan struct{}, 1)}
}

// Run ends drains as their connections finish or their deadlines pass, every Tick under mu, until
// ctx ends.
func (b *Book[T]) Run(ctx context.Context, mu sync.Locker) {
	t := time.NewTicker(Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			mu.Lock()
			changed := b.Check(now)
			mu.Unlock()
			if changed {
				b.Notify()
			}
		}
	}
}

// Check ends what can be ended at now and reports whether anything a report shows changed.
func (b *Book[T]) Check(now time.Time) bool {
	changed := false
	for id := range b.last {
		if b.Drains[id] == nil {
			delete(b.last, id)
		}
	}
	for id, d := range b.Drains {
		if d.Done {
			if !d.Admin && now.Sub(d.Ended) > KeepFinished {
				delete(b.Drains, id)
				delete(b.last, id)
				changed = true
			}
			continue
		}
		active := d.Conns.Active()
		switch {
		case active == 0:
			d.Done, d.Ended = true, now
			d.Over.Store(true)
			b.log.Info(b.kind+"drain finished", "pool", id.Pool, "settings", id.Settings, "server", id.Addr)
			changed = true
		case !now.Before(d.Deadline):
			d.CutConns = d.Conns.Cut()
			d.Done, d.Ended = true, now
			d.Over.Store(true)
			b.log.Warn(b.kind+"drain deadline passed; connections cut", "pool", id.Pool, "settings", id.Settings,
				"server", id.Addr, "connections", d.CutConns)
			changed = true
		case b.last[id] != active:
			changed = true
		}
		b.last[id] = active
	}
	return changed
}

// Changed receives a value (coalesced) when a report changes.
func (b *Book[T]) Changed() <-chan struct{} { return b.changed }

// Notify signals Changed.
func (b *Book[T]) Notify() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// Reports lists the drains in progress and those finished lately, by pool, settings and address.
func (b *Book[T]) Reports() []*fgv1.DrainReport {
	out := make([]*fgv1.DrainReport, 0, len(b.Drains))
	for id, d := range b.Drains {
		r := &fgv1.DrainReport{
			Pool:      id.Pool,
			Settings:  id.Settings,
			Address:   id.Addr,
			StartedAt: timestamppb.New(d.Started),
			Deadline:  timestamppb.New(d.Deadline),
			Done:      d.Done,
			Admin:     d.Admin,
		}
		if d.Done {
			r.CutConnections = d.CutConns
		} else {
			r.ActiveConnections = d.Conns.Active()
			r.InflightRequests = d.Conns.Requests()
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
