package gcpace

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	p := &Pacer{MinHeap: 64 << 20, Base: 100}
	for _, tt := range []struct {
		live uint64
		want int
	}{
		{0, 1500},                 // before the first collection: the runtime's 4 MiB minimum x 16
		{1 << 10, 1500},           // nearly empty heap: the same
		{4 << 20, 1500},           // 4 MiB live -> target 64 MiB
		{16 << 20, 300},           // 16 MiB -> 64 MiB
		{32 << 20, 100},           // 32 MiB x 2 = 64 MiB: the base
		{1 << 30, 100},            // large heap: the base, never lower
		{(64 << 20) / 3 * 2, 100}, // 42.7 MiB: (1.5-1) x 100 = 50, below the base
	} {
		if got := p.Percent(tt.live); got != tt.want {
			t.Errorf("Percent(%d) = %d, want %d", tt.live, got, tt.want)
		}
	}
	off := &Pacer{MinHeap: 64 << 20, Base: -1}
	if got := off.Percent(1 << 20); got != -1 {
		t.Errorf("GOGC=off: Percent = %d, want -1 (stays off)", got)
	}
}

// TestUpdateSetsGOGC runs the pacer against the real runtime: with a small live heap GOGC goes up,
// and with a live heap past the floor it comes back to the base.
func TestUpdateSetsGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	p := New(32 << 20)
	runtime.GC()
	if got := p.Update(); got <= p.Base {
		t.Fatalf("small live heap: GOGC %d, want above the base %d", got, p.Base)
	}
	if cur := debug.SetGCPercent(p.last); cur != p.last {
		t.Errorf("runtime GOGC %d, pacer says %d", cur, p.last)
	}
	keep := make([][]byte, 0, 48)
	for range 48 {
		keep = append(keep, make([]byte, 1<<20)) // 48 MiB live, past 32 MiB / 2
	}
	runtime.GC()
	if got := p.Update(); got != p.Base {
		t.Errorf("live heap past the floor: GOGC %d, want the base %d", got, p.Base)
	}
	runtime.KeepAlive(keep)
}

var sink []byte

// TestReleaseWhenIdle runs the pacer against the real runtime: after a busy interval, the first
// idle one collects and hands the garbage back to the OS, once; the next busy spell arms it again.
func TestReleaseWhenIdle(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	p := New(256 << 20)
	held := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64() + s[1].Value.Uint64()
	}
	busy := func() {
		for range 64 {
			sink = make([]byte, 1<<20) // 64 MiB of garbage, under the 256 MiB floor
		}
		sink = nil
	}
	p.Update() // the first reading
	busy()
	// A buffer left in a sync.Pool at the end of the busy spell is freed by the release too.
	var pool sync.Pool
	pooled := make(chan struct{})
	buf := make([]byte, 64<<10)
	runtime.AddCleanup(&buf[0], func(ch chan struct{}) { close(ch) }, pooled)
	pool.Put(&buf)
	p.Update()
	if p.Releases != 0 {
		t.Fatalf("busy interval: %d releases, want 0", p.Releases)
	}
	before := held()
	p.Update()
	if p.Releases != 1 {
		t.Fatalf("first idle interval: %d releases, want 1", p.Releases)
	}
	if after := held(); after+32<<20 > before {
		t.Errorf("heap held %d MiB before the release, %d MiB after: want 32 MiB or more handed back", before>>20, after>>20)
	}
	select {
	case <-pooled:
	case <-time.After(5 * time.Second):
		t.Error("the buffer in a sync.Pool outlived the release")
	}
	runtime.KeepAlive(&pool)
	p.Update()
	if p.Releases != 1 {
		t.Errorf("still idle: %d releases, want 1 (one per idle spell)", p.Releases)
	}
	busy()
	p.Update()
	p.Update()
	if p.Releases != 2 {
		t.Errorf("idle again after a busy interval: %d releases, want 2", p.Releases)
	}

	off := New(256 << 20)
	off.IdleAlloc = 0
	off.Update()
	busy()
	off.Update()
	off.Update()
	if off.Releases != 0 {
		t.Errorf("IdleAlloc 0: %d releases, want none", off.Releases)
	}
}
