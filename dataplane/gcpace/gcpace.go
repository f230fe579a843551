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
//
// The floor is paid in memory: up to MinHeap of garbage stays in the process between collections.
// So when the process goes idle (it allocates less than IdleAlloc in an interval) after being busy,
// the pacer collects and hands the free memory back to the OS, once, if there is enough of it to be
// worth a collection: an idle worker's RSS is then its live heap (sync.Pools emptied), not the
// floor.
package gcpace

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultMinHeap is the heap size below which collections are not worth their cost.
const DefaultMinHeap = 64 << 20

// DefaultIdleAlloc is the allocation in one interval below which the process counts as idle.
const DefaultIdleAlloc = 1 << 20

// releaseMin is the least garbage and free memory worth an idle collection.
const releaseMin = 4 << 20

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
	// IdleAlloc is the allocation in one Update interval below which the process is idle
	// (0: never idle, nothing is released).
	IdleAlloc uint64
	// Releases counts the idle collections that handed memory back to the OS.
	Releases int

	sample   []metrics.Sample
	last     int
	allocs   uint64 // cumulative allocation at the last Update
	released bool   // this idle spell was dealt with (memory released, or too little to be worth it)
}

const (
	sampleLive = iota
	sampleAllocs
	sampleObjects
	sampleUnused
	sampleFree
)

// New returns a pacer with the given floor and the process's current GOGC as its base.
func New(minHeap uint64) *Pacer {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	return &Pacer{MinHeap: minHeap, Base: base, last: base, IdleAlloc: DefaultIdleAlloc,
		sample: []metrics.Sample{
			sampleLive:    {Name: "/gc/heap/live:bytes"},
			sampleAllocs:  {Name: "/gc/heap/allocs:bytes"},
			sampleObjects: {Name: "/memory/classes/heap/objects:bytes"},
			sampleUnused:  {Name: "/memory/classes/heap/unused:bytes"},
			sampleFree:    {Name: "/memory/classes/heap/free:bytes"},
		}}
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

// Update reads the live heap and sets GOGC, and releases memory if the process has gone idle; it
// returns the GOGC set.
func (p *Pacer) Update() int {
	metrics.Read(p.sample)
	live := p.read(sampleLive)
	p.releaseIfIdle(live)
	pct := p.Percent(live)
	// Only a real change is worth it: SetGCPercent stops the world briefly.
	if pct != p.last && (pct < p.last*9/10 || pct > p.last*11/10 || pct == p.Base) {
		debug.SetGCPercent(pct)
		p.last = pct
	}
	return p.last
}

func (p *Pacer) read(i int) uint64 {
	if p.sample[i].Value.Kind() == metrics.KindUint64 {
		return p.sample[i].Value.Uint64()
	}
	return 0
}

// releaseIfIdle collects and returns free memory to the OS the first time an interval allocates
// less than IdleAlloc, if garbage and free pages beyond the live heap are worth it.
func (p *Pacer) releaseIfIdle(live uint64) {
	allocs := p.read(sampleAllocs)
	delta := allocs - p.allocs
	first := p.allocs == 0
	p.allocs = allocs
	if p.IdleAlloc == 0 || first {
		return
	}
	if delta >= p.IdleAlloc {
		p.released = false
		return
	}
	if p.released {
		return
	}
	p.released = true
	held := p.read(sampleObjects) + p.read(sampleUnused) + p.read(sampleFree)
	if held < live+releaseMin {
		return
	}
	// Two collections: the first moves what sync.Pools hold (buffers of the busy spell's peak) to
	// their victim caches, the second frees them, and FreeOSMemory then returns the pages.
	runtime.GC()
	debug.FreeOSMemory()
	p.Releases++
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
