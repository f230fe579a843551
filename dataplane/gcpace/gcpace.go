// Package gcpace keeps Go's garbage collector from running needlessly often in a proxy with a small
// live heap.
//
// With the default GOGC=100 a collection starts whenever the heap doubles. A data-plane worker keeps
// only a few MiB live but allocates some kilobytes per request, so at tens of thousands of requests
// a second it would collect dozens of times a second, spending CPU that nginx and HAProxy never
// spend. Pacer raises GOGC while the live heap is small, so that the heap may grow to a floor
// (MinHeap) before a collection, and lowers it back to the base as the live heap grows (many
// connections, large configurations): the heap target is max(MinHeap, live x (1 + base/100)).
// This is the "GC tuner" approach (a dynamic GOGC) rather than a memory limit, which would make
// collections more frequent, not less, near the limit.
package gcpace

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultMinHeap is the heap size below which collections are not worth their cost.
const DefaultMinHeap = 64 << 20

// runtimeMinHeap is the Go runtime's own smallest heap goal at GOGC=100: at GOGC=g a collection
// never starts below runtimeMinHeap x g/100, whatever the live heap. GOGC is capped so that this
// does not pass the floor.
const runtimeMinHeap = 4 << 20

// Pacer adjusts GOGC to the live heap.
type Pacer struct {
	// MinHeap is the heap target floor in bytes.
	MinHeap uint64
	// Base is the GOGC used once the live heap is large (the process's GOGC when started).
	Base int

	sample []metrics.Sample
	last   int
}

// New returns a pacer with the given floor and the process's current GOGC as its base.
func New(minHeap uint64) *Pacer {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	return &Pacer{MinHeap: minHeap, Base: base, last: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

// Percent is the GOGC that makes the heap target max(MinHeap, live x (1 + Base/100)).
func (p *Pacer) Percent(live uint64) int {
	if p.Base < 0 {
		return p.Base // GOGC=off stays off
	}
	// Before the first collection the live heap reads 0; below the runtime's minimum it does not
	// matter.
	live = max(live, runtimeMinHeap)
	want := math.Ceil((float64(p.MinHeap)/float64(live) - 1) * 100)
	limit := float64(p.MinHeap) * 100 / runtimeMinHeap
	return int(max(min(want, limit), float64(p.Base)))
}

// Update reads the live heap and sets GOGC; it returns the value set.
func (p *Pacer) Update() int {
	metrics.Read(p.sample)
	var live uint64
	if p.sample[0].Value.Kind() == metrics.KindUint64 {
		live = p.sample[0].Value.Uint64()
	}
	pct := p.Percent(live)
	// Only a real change is worth it: SetGCPercent stops the world briefly.
	if pct != p.last && (pct < p.last*9/10 || pct > p.last*11/10 || pct == p.Base) {
		debug.SetGCPercent(pct)
		p.last = pct
	}
	return p.last
}

// Run updates GOGC every interval until ctx ends, then restores the base.
func (p *Pacer) Run(ctx context.Context, interval time.Duration) {
	p.Update()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			debug.SetGCPercent(p.Base)
			return
		case <-t.C:
			p.Update()
		}
	}
}
