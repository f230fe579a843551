package fleet_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/fleet"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func sv(settings, addr, health string) *fgv1.ServerHealthReport {
	s := &fgv1.ServerHealthReport{Settings: settings, Address: addr, Health: health, IntervalSeconds: 5,
		LastProbe: timestamppb.Now()}
	if health == "Unhealthy" {
		s.Reason, s.Message = "tcp-connect-error", "dial tcp "+addr+": connection refused"
	}
	return s
}

// summary is what a pair's incremental summary must equal: recomputed from the views.
type summary struct {
	healthy, unhealthy int
	ids                []string // reporting workers, by id
	firstBad           string
	newest             *timestamppb.Timestamp // the latest last probe, nil if none
}

func recompute(views map[string]*fgv1.HealthReport) map[[2]string]summary {
	out := map[[2]string]summary{}
	ids := make([]string, 0, len(views))
	for id := range views {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, s := range views[id].GetServers() {
			k := [2]string{s.GetSettings(), s.GetAddress()}
			sum := out[k]
			sum.ids = append(sum.ids, id)
			switch s.GetHealth() {
			case "Healthy":
				sum.healthy++
			case "Unhealthy":
				sum.unhealthy++
				if sum.firstBad == "" {
					sum.firstBad = id
				}
			}
			if lp := s.GetLastProbe(); lp != nil && (sum.newest == nil || lp.AsTime().After(sum.newest.AsTime())) {
				sum.newest = lp
			}
			out[k] = sum
		}
	}
	return out
}

// check compares every pair's incremental summary with a recomputation, and every stored view with
// the report it came from.
func check(t *testing.T, step string, g *fleet.GatewayHealth, views map[string]*fgv1.HealthReport, pairs [][2]string) {
	t.Helper()
	want := recompute(views)
	g.Read(func(r fleet.HealthReader) {
		if r.Workers() != len(views) {
			t.Fatalf("%s: %d workers, want %d", step, r.Workers(), len(views))
		}
		for _, k := range pairs {
			p, w := r.Pair(k[0], k[1]), want[k]
			if p == nil {
				if len(w.ids) != 0 {
					t.Fatalf("%s: %v: no summary, want %d reporting", step, k, len(w.ids))
				}
				continue
			}
			var ids []string
			for _, v := range p.Views() {
				ids = append(ids, v.Dataplane())
			}
			firstBad := ""
			if b := p.FirstUnhealthy(); b != nil {
				firstBad = b.Dataplane()
			}
			if p.Healthy() != w.healthy || p.Unhealthy() != w.unhealthy || !slices.Equal(ids, w.ids) || firstBad != w.firstBad ||
				!proto.Equal(p.LastProbe(), w.newest) {
				t.Fatalf("%s: %v: healthy %d unhealthy %d views %v first bad %q newest %v; want %d %d %v %q %v",
					step, k, p.Healthy(), p.Unhealthy(), ids, firstBad, p.LastProbe(), w.healthy, w.unhealthy, w.ids, w.firstBad, w.newest)
			}
		}
		for id, rep := range views {
			if got := r.Report(id); !proto.Equal(got, rep) {
				t.Fatalf("%s: stored view of %s differs:\n got %v\nwant %v", step, id, got, rep)
			}
		}
	})
}

// Random transitions, config changes (servers added and removed), workers vanishing and coming
// back, probe times moving on, going back or missing: the incremental summaries always equal a
// recomputation from the views.
func TestGatewayHealthIncremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	healths := []string{"Healthy", "Unhealthy", "Unknown"}
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	probed := func(s *fgv1.ServerHealthReport) *fgv1.ServerHealthReport {
		if s.Health == "Unknown" && rng.IntN(2) == 0 {
			s.LastProbe = nil // pending: no probe yet
		} else {
			s.LastProbe = timestamppb.New(base.Add(time.Duration(rng.IntN(20)) * 500 * time.Millisecond))
		}
		return s
	}
	var pairs [][2]string
	for _, set := range []string{"s1", "s2"} {
		for i := range 6 {
			pairs = append(pairs, [2]string{set, fmt.Sprintf("10.0.0.%d:80", i+1)})
		}
	}
	g := fleet.NewGatewayHealth()
	views := map[string]*fgv1.HealthReport{}
	for step := range 400 {
		id := fmt.Sprintf("dp-%d", rng.IntN(7))
		var what string
		switch op := rng.IntN(10); {
		case op == 0: // the worker vanishes (disconnected, or its view went stale)
			g.Remove(id)
			delete(views, id)
			what = "remove " + id
		case op <= 2 || views[id] == nil: // a new set of servers (first view, or a config change)
			rep := &fgv1.HealthReport{Version: int64(step)}
			for _, k := range pairs {
				if rng.IntN(3) > 0 {
					rep.Servers = append(rep.Servers, probed(sv(k[0], k[1], healths[rng.IntN(3)])))
				}
			}
			g.Set(id, rep)
			views[id] = rep
			what = fmt.Sprintf("new view of %s (%d servers)", id, len(rep.Servers))
		default: // the same servers, one transition (what a worker sends after a probe flips)
			old := views[id]
			rep := proto.Clone(old).(*fgv1.HealthReport)
			if len(rep.Servers) > 0 {
				i := rng.IntN(len(rep.Servers))
				s := probed(sv(rep.Servers[i].Settings, rep.Servers[i].Address, healths[rng.IntN(3)]))
				s.Transitions = append(rep.Servers[i].Transitions, &fgv1.HealthTransition{At: timestamppb.Now(), Dataplane: id, From: "Healthy", To: s.Health})
				rep.Servers[i] = s
			}
			g.Set(id, rep)
			views[id] = rep
			what = "transition on " + id
		}
		check(t, fmt.Sprintf("step %d (%s)", step, what), g, views, pairs)
	}
}

func TestGatewayHealthTransitionsAndVanishing(t *testing.T) {
	g := fleet.NewGatewayHealth()
	a := &fgv1.HealthReport{Servers: []*fgv1.ServerHealthReport{sv("s", "10.0.0.1:80", "Healthy"), sv("s", "10.0.0.2:80", "Healthy")}}
	b := proto.Clone(a).(*fgv1.HealthReport)
	g.Set("dp-b", b)
	g.Set("dp-a", a)
	pair := func() *fleet.PairHealth {
		var p *fleet.PairHealth
		g.Read(func(r fleet.HealthReader) { p = r.Pair("s", "10.0.0.1:80") })
		return p
	}
	if p := pair(); p.Healthy() != 2 || p.Reporting() != 2 || p.Views()[0].Dataplane() != "dp-a" {
		t.Fatalf("two healthy views: healthy %d of %d, first %s", p.Healthy(), p.Reporting(), p.Views()[0].Dataplane())
	}
	// dp-b sees it fail: one of two; it is the first (only) unhealthy view.
	b2 := proto.Clone(b).(*fgv1.HealthReport)
	b2.Servers[0] = sv("s", "10.0.0.1:80", "Unhealthy")
	g.Set("dp-b", b2)
	if p := pair(); p.Healthy() != 1 || p.Unhealthy() != 1 || p.FirstUnhealthy().Dataplane() != "dp-b" ||
		p.FirstUnhealthy().Reason() != "tcp-connect-error" {
		t.Fatalf("after a transition: healthy %d unhealthy %d", p.Healthy(), p.Unhealthy())
	}
	// The same report again changes nothing.
	g.Set("dp-b", proto.Clone(b2).(*fgv1.HealthReport))
	if p := pair(); p.Healthy() != 1 || p.Unhealthy() != 1 || p.Reporting() != 2 {
		t.Fatalf("after a repeated report: healthy %d unhealthy %d of %d", p.Healthy(), p.Unhealthy(), p.Reporting())
	}
	// dp-b vanishes: only dp-a's healthy view is left.
	g.Remove("dp-b")
	if p := pair(); p.Healthy() != 1 || p.Unhealthy() != 0 || p.Reporting() != 1 || p.FirstUnhealthy() != nil {
		t.Fatalf("after dp-b vanished: healthy %d unhealthy %d of %d", p.Healthy(), p.Unhealthy(), p.Reporting())
	}
	g.Remove("dp-b") // twice: nothing
	// dp-a stops probing 10.0.0.2 (config change): the pair is gone.
	g.Set("dp-a", &fgv1.HealthReport{Servers: a.Servers[:1]})
	g.Read(func(r fleet.HealthReader) {
		if p := r.Pair("s", "10.0.0.2:80"); p != nil {
			t.Fatalf("a server nobody probes still has a summary: %d views", p.Reporting())
		}
	})
	g.Remove("dp-a")
	if p := pair(); p != nil || g.Len() != 0 {
		t.Fatalf("after every worker vanished: %v, %d workers", p, g.Len())
	}
}

// The newest probe follows the workers: a newer probe raises it, and when the worker that had it
// leaves or reports none, the next newest (or none) takes over.
func TestGatewayHealthNewestProbe(t *testing.T) {
	g := fleet.NewGatewayHealth()
	at := func(sec int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: sec, Nanos: 7} }
	view := func(sec int64) *fgv1.HealthReport {
		s := sv("s", "10.0.0.1:80", "Healthy")
		s.LastProbe = nil
		if sec > 0 {
			s.LastProbe = at(sec)
		}
		return &fgv1.HealthReport{Servers: []*fgv1.ServerHealthReport{s}}
	}
	newest := func() *timestamppb.Timestamp {
		var lp *timestamppb.Timestamp
		g.Read(func(r fleet.HealthReader) { lp = r.Pair("s", "10.0.0.1:80").LastProbe() })
		return lp
	}
	for _, step := range []struct {
		what string
		do   func()
		want int64 // 0: none
	}{
		{"dp-1 pending", func() { g.Set("dp-1", view(0)) }, 0},
		{"dp-1 probes", func() { g.Set("dp-1", view(100)) }, 100},
		{"dp-2 probes earlier", func() { g.Set("dp-2", view(90)) }, 100},
		{"dp-2 probes later", func() { g.Set("dp-2", view(110)) }, 110},
		{"dp-2 goes back", func() { g.Set("dp-2", view(95)) }, 100},
		{"dp-1 loses its probe", func() { g.Set("dp-1", view(0)) }, 95},
		{"dp-1 again", func() { g.Set("dp-1", view(120)) }, 120},
		{"dp-1 leaves", func() { g.Remove("dp-1") }, 95},
	} {
		step.do()
		want := at(step.want)
		if step.want == 0 {
			want = nil
		}
		if got := newest(); !proto.Equal(got, want) {
			t.Fatalf("%s: newest probe %v, want %v", step.what, got, want)
		}
	}
}

// A worker naming one pair twice counts twice, in report order, as the per-call aggregation did.
func TestGatewayHealthDuplicatePair(t *testing.T) {
	g := fleet.NewGatewayHealth()
	g.Set("dp-1", &fgv1.HealthReport{Servers: []*fgv1.ServerHealthReport{sv("s", "10.0.0.1:80", "Unhealthy"), sv("s", "10.0.0.1:80", "Healthy")}})
	g.Set("dp-1", &fgv1.HealthReport{Servers: []*fgv1.ServerHealthReport{sv("s", "10.0.0.1:80", "Healthy"), sv("s", "10.0.0.1:80", "Healthy")}})
	g.Read(func(r fleet.HealthReader) {
		if p := r.Pair("s", "10.0.0.1:80"); p.Healthy() != 2 || p.Unhealthy() != 0 || p.Reporting() != 2 {
			t.Fatalf("healthy %d unhealthy %d of %d", p.Healthy(), p.Unhealthy(), p.Reporting())
		}
	})
	g.Remove("dp-1")
	g.Read(func(r fleet.HealthReader) {
		if p := r.Pair("s", "10.0.0.1:80"); p != nil {
			t.Fatal("summary left after the worker vanished")
		}
	})
}

// BenchmarkGatewayHealthMemory reports the heap a gateway's health views take in the cache, per
// worker view of a server (1,000 workers x 1,000 servers), against keeping the decoded reports as
// the cache used to. Run: go test -run - -bench GatewayHealthMemory ./controlplane/fleet/
func BenchmarkGatewayHealthMemory(b *testing.B) {
	const workers, servers = 1000, 1000
	encoded := make([][]byte, workers)
	for w := range workers {
		rep := &fgv1.HealthReport{Version: 1}
		for s := range servers {
			rep.Servers = append(rep.Servers, &fgv1.ServerHealthReport{Settings: "settings1", Address: fmt.Sprintf("127.10.%d.%d:8080", s/250, s%250+1),
				Health: "Healthy", IntervalSeconds: 30, LastProbe: timestamppb.Now()})
		}
		encoded[w], _ = proto.Marshal(rep)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for range b.N {
		h0 := heap()
		reports := make([]*fgv1.HealthReport, workers)
		for w := range workers {
			reports[w] = &fgv1.HealthReport{}
			if err := proto.Unmarshal(encoded[w], reports[w]); err != nil {
				b.Fatal(err)
			}
		}
		h1 := heap()
		g := fleet.NewGatewayHealth()
		for w := range workers {
			g.Set(fmt.Sprintf("sim-%05d", w), reports[w])
		}
		reports = nil
		h2 := heap()
		b.ReportMetric(float64(h1-h0)/workers/servers, "B/view-as-proto")
		b.ReportMetric((float64(h2)-float64(h0))/workers/servers, "B/view-compact") // the reports are garbage by h2
		runtime.KeepAlive(g)
		runtime.KeepAlive(reports)
	}
}
