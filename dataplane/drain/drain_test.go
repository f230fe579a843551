package drain

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// counter is a server's connections: n open, of which r requests; Cut closes them all.
type counter struct{ n, r, cuts int64 }

func (c *counter) Active() int64   { return c.n }
func (c *counter) Requests() int64 { return c.r }
func (c *counter) Cut() int64 {
	n := c.n
	c.n, c.r = 0, 0
	c.cuts++
	return n
}

func TestBookEndsDrains(t *testing.T) {
	b := NewBook[string](slog.New(slog.NewTextHandler(io.Discard, nil)), "")
	t0 := time.Unix(1_800_000_000, 0)
	idle, busy, admin := &counter{}, &counter{n: 3, r: 2}, &counter{n: 1, r: 1}
	b.Drains[ID{"p", "s", "10.0.0.1:80"}] = &Drain[string]{Conns: idle, Started: t0, Deadline: t0.Add(time.Minute)}
	b.Drains[ID{"p", "s", "10.0.0.2:80"}] = &Drain[string]{Conns: busy, Started: t0, Deadline: t0.Add(time.Minute)}
	b.Drains[ID{"a", "s", "10.0.0.3:80"}] = &Drain[string]{Admin: true, Conns: admin, Started: t0, Deadline: t0.Add(time.Second)}

	reps := b.Reports()
	if len(reps) != 3 || reps[0].GetPool() != "a" || reps[2].GetAddress() != "10.0.0.2:80" {
		t.Fatalf("reports not by pool, settings, address: %v", reps)
	}
	if r := reps[2]; r.GetActiveConnections() != 3 || r.GetInflightRequests() != 2 || r.GetDone() {
		t.Errorf("busy drain reported %v, want 3 active, 2 requests, not done", r)
	}

	if !b.Check(t0.Add(100 * time.Millisecond)) {
		t.Error("Check reported no change though the idle drain ended")
	}
	if d := b.Drains[ID{"p", "s", "10.0.0.1:80"}]; !d.Done || !d.Over.Load() || d.CutConns != 0 {
		t.Errorf("drain with no connection: done %v, over %v, cut %d; want done clean", d.Done, d.Over.Load(), d.CutConns)
	}
	if b.Check(t0.Add(200 * time.Millisecond)) {
		t.Error("Check reported a change though nothing changed")
	}
	busy.n = 2
	if !b.Check(t0.Add(300 * time.Millisecond)) {
		t.Error("Check reported no change though a drain's connections fell")
	}

	// The operator's drain passes its deadline: its connection is cut.
	b.Check(t0.Add(2 * time.Second))
	d := b.Drains[ID{"a", "s", "10.0.0.3:80"}]
	if !d.Done || d.CutConns != 1 || admin.cuts != 1 || !d.Over.Load() {
		t.Errorf("after the deadline: done %v, cut %d, cuts %d; want 1 connection cut", d.Done, d.CutConns, admin.cuts)
	}
	if r := b.Reports()[0]; r.GetCutConnections() != 1 || r.GetActiveConnections() != 0 {
		t.Errorf("report of the cut drain: %v", r)
	}

	// Finished removal drains are forgotten after KeepFinished; the operator's stays while listed.
	b.Check(t0.Add(KeepFinished + time.Hour))
	if _, ok := b.Drains[ID{"p", "s", "10.0.0.1:80"}]; ok {
		t.Error("finished removal drain still kept after KeepFinished")
	}
	if _, ok := b.Drains[ID{"a", "s", "10.0.0.3:80"}]; !ok {
		t.Error("operator's finished drain forgotten")
	}
}

func TestBookNotifyCoalesces(t *testing.T) {
	b := NewBook[struct{}](slog.New(slog.NewTextHandler(io.Discard, nil)), "layer-4 ")
	b.Notify()
	b.Notify()
	<-b.Changed()
	select {
	case <-b.Changed():
		t.Fatal("two notifications delivered twice; want one")
	default:
	}
}
