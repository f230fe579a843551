package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

type phaseStat struct {
	name            string
	wall            time.Duration
	cpCPU, benchCPU time.Duration // cpCPU -1: unknown
	writes          int64         // -1: unknown
	err             string
}

type results struct {
	o      options
	cpMode string

	gatewayBytes int

	connectRecv, connectAck time.Duration
	applyRPC                []time.Duration
	allRecv, allAck         []time.Duration
	perWorker               []time.Duration
	allRecvStart            []time.Duration // from ApplyGateway's call rather than its answer
	perWorkerStart          []time.Duration
	recvEarly               int
	perWorkerAck            []time.Duration // each worker's entry in etcd shows the version, from ApplyGateway returning
	pushErr                 string

	reportBytes   int
	viewsResent   int // views sent again because their write to etcd had failed
	healthWorkers int
	reportsSent   time.Duration
	healthInit    time.Duration
	healthErr     string

	badWord          string
	toBad, toHealthy []time.Duration
	flipCalls        []time.Duration
	inCache          []time.Duration // start of the BackendHealth call that showed the change
	stored           []time.Duration // the worker's view written to etcd (bench's own etcd watch)
	flipErr          string

	bhLat          []time.Duration
	bhSize         int
	bhDetailLat    []time.Duration
	bhDetailSize   int
	bhDecode       time.Duration
	bhDefaultLimit string
	bhErr          string

	steadyWrites     int64
	steadyWall       time.Duration
	steadyHeartbeats int64
	steadyErr        string
	freshAfter       string

	memLoaded, hwmLoaded, memEnd, hwmEnd int64

	phases []phaseStat
	perf   map[string]string
	notes  []string
}

// pct is the nearest-rank percentile.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}

func fmtBytes(n int64) string {
	switch {
	case n < 0:
		return "n/a"
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func distRow(w io.Writer, name string, ds []time.Duration) {
	if len(ds) == 0 {
		fmt.Fprintf(w, "| %s | 0 | — | — | — |\n", name)
		return
	}
	fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", name, len(ds), fmtDur(pct(ds, 50)), fmtDur(pct(ds, 99)), fmtDur(pct(ds, 100)))
}

func valueRow(w io.Writer, name string, d time.Duration, failed string) {
	switch {
	case failed != "":
		fmt.Fprintf(w, "| %s | — | **failed** | — | — |\n", name)
	case d == 0:
		fmt.Fprintf(w, "| %s | — | — | — | — |\n", name)
	default:
		fmt.Fprintf(w, "| %s | 1 | %s | — | — |\n", name, fmtDur(d))
	}
}

func (r *results) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "\n## Fleetgate control-plane bench: %d workers × %d servers, %d rounds\n\n", o.workers, o.servers, o.rounds)
	fmt.Fprintf(w, "- control plane: %s\n", r.cpMode)
	fmt.Fprintf(w, "- machine: %d CPUs shared by the control plane (with its embedded etcd) and this load generator; %s\n", runtime.NumCPU(), runtime.Version())
	conns := (o.workers + o.perConn - 1) / o.perConn
	fmt.Fprintf(w, "- workers: %d Connect streams over %d gRPC connection%s; heartbeat every %s; gateway %q (%s as stored)\n\n",
		o.workers, conns, plural(conns), o.hbPeriod, o.gateway, fmtBytes(int64(r.gatewayBytes)))

	fmt.Fprintf(w, "### Config push (latencies from ApplyGateway returning)\n\n")
	fmt.Fprintf(w, "| Measure | n | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
	valueRow(w, fmt.Sprintf("connect: all %d workers said Hello and received the snapshot", o.workers), r.connectRecv, "")
	valueRow(w, "connect: every initial ACK recorded (ListDataPlanes)", r.connectAck, "")
	distRow(w, "ApplyGateway RPC", r.applyRPC)
	distRow(w, "**all workers received** the new snapshot", r.allRecv)
	distRow(w, "per-worker receive latency", r.perWorker)
	if len(r.perWorkerAck) > 0 {
		distRow(w, "**every ACK recorded** (workers' entries in etcd show applied_version)", r.allAck)
		distRow(w, "per-worker ACK recorded", r.perWorkerAck)
	} else {
		distRow(w, "every ACK recorded (ListDataPlanes applied_version)", r.allAck)
	}
	distRow(w, "all workers received, from ApplyGateway's *call*", r.allRecvStart)
	distRow(w, "per-worker receive latency, from ApplyGateway's *call*", r.perWorkerStart)
	if r.recvEarly > 0 {
		fmt.Fprintf(w, "\n%d of %d receipts arrived before ApplyGateway's answer did (the watch beat the unary reply); they count as 0 in the rows measured from the answer.\n",
			r.recvEarly, len(r.perWorker))
	}
	if r.pushErr != "" {
		fmt.Fprintf(w, "\n**Config push failed:** %s\n", r.pushErr)
	}

	fmt.Fprintf(w, "\n### Backend health\n\n")
	fmt.Fprintf(w, "| Measure | n | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
	valueRow(w, fmt.Sprintf("initial convergence: %d full views sent → every server Healthy with healthy_dataplanes == %d", r.healthWorkers, r.healthWorkers), r.healthInit, r.healthErr)
	distRow(w, fmt.Sprintf("transition visible: one worker's Healthy → Unhealthy → BackendHealth shows %s", r.badWord), r.toBad)
	distRow(w, "transition visible: back to Healthy", r.toHealthy)
	distRow(w, "transition visible: both directions", append(slices.Clone(r.toBad), r.toHealthy...))
	distRow(w, "…of which: view stored in etcd (bench's etcd watch on the worker's key)", r.stored)
	distRow(w, "…of which: in the health cache by (start of the call that showed it, upper bound)", r.inCache)
	distRow(w, "BackendHealth call while polling (convergence + flips)", r.flipCalls)
	distRow(w, fmt.Sprintf("**BackendHealth call, fleet summary** (%d×%d views loaded)", r.healthWorkers, o.servers), r.bhLat)
	distRow(w, "BackendHealth call with every worker's view (dataplanes: true, as gatewayctl --dataplanes asks)", r.bhDetailLat)
	fmt.Fprintf(w, "\n- %d of the %d workers report health (at most --max-views %d views); one full HealthReport: %s; sending all %d took %s\n",
		r.healthWorkers, o.workers, o.maxViews, fmtBytes(int64(r.reportBytes)), r.healthWorkers, fmtDur(r.reportsSent))
	if r.bhSize > 0 {
		fmt.Fprintf(w, "- BackendHealth response: fleet summary %s; with every worker's view %s, whose full proto decode costs the client another %s\n",
			fmtBytes(int64(r.bhSize)), fmtBytes(int64(r.bhDetailSize)), fmtDur(r.bhDecode))
	}
	if r.bhDefaultLimit != "" {
		fmt.Fprintf(w, "- BackendHealth with no detail asked and gRPC's default 4 MiB client receive limit: %s\n", r.bhDefaultLimit)
	}
	if r.healthWorkers > 0 && r.o.etcdEP != "" {
		note := "(the control plane retries failed writes: none should be)"
		if r.viewsResent > 0 {
			note = "**not written by the control plane after 5 s or more: sent again by the bench**"
		}
		fmt.Fprintf(w, "- health views found missing from etcd during convergence (checked every 5 s): %d %s\n", r.viewsResent, note)
	}
	if r.healthErr != "" {
		fmt.Fprintf(w, "\n**Health convergence failed:** %s\n", r.healthErr)
	}
	if r.flipErr != "" {
		fmt.Fprintf(w, "\n**Health flips failed:** %s\n", r.flipErr)
	}
	if r.bhErr != "" {
		fmt.Fprintf(w, "\n**BackendHealth latency failed:** %s\n", r.bhErr)
	}

	if r.steadyWall > 0 || r.steadyErr != "" {
		fmt.Fprintf(w, "\n### Steady state (%s, heartbeats only)\n\n", o.steady)
		fmt.Fprintf(w, "| Measure | value |\n|---|---:|\n")
		if r.steadyWall > 0 {
			fmt.Fprintf(w, "| etcd writes (revision delta) | %d |\n", r.steadyWrites)
			fmt.Fprintf(w, "| **etcd writes/s** | %.2f |\n", float64(r.steadyWrites)/r.steadyWall.Seconds())
		} else {
			fmt.Fprintf(w, "| etcd writes | n/a (no etcd endpoint: pass --etcd) |\n")
		}
		fmt.Fprintf(w, "| heartbeats sent | %d (%.0f/s) |\n", r.steadyHeartbeats, float64(r.steadyHeartbeats)/max(o.steady.Seconds(), 1e-9))
		if p := r.phase("steady"); p != nil && p.cpCPU >= 0 {
			fmt.Fprintf(w, "| control-plane CPU | %.2f s (%.1f%% of one core) |\n", p.cpCPU.Seconds(), 100*p.cpCPU.Seconds()/p.wall.Seconds())
		}
		fmt.Fprintf(w, "| views still fresh afterwards | %s |\n", r.freshAfter)
		if r.steadyErr != "" {
			fmt.Fprintf(w, "\n**Steady state:** %s\n", r.steadyErr)
		}
	}

	fmt.Fprintf(w, "\n### Resources per phase (control-plane process, embedded etcd included)\n\n")
	fmt.Fprintf(w, "| Phase | wall | CP CPU | CP cores busy | bench CPU | etcd writes |\n|---|---:|---:|---:|---:|---:|\n")
	for _, p := range r.phases {
		cpu, cores, writes := "n/a", "n/a", "n/a"
		if p.cpCPU >= 0 {
			cpu = fmt.Sprintf("%.2f s", p.cpCPU.Seconds())
			if p.wall >= 200*time.Millisecond { // CPU times tick every 10 ms: too coarse below
				cores = fmt.Sprintf("%.2f", p.cpCPU.Seconds()/p.wall.Seconds())
			} else {
				cores = "—"
			}
		}
		if p.writes >= 0 {
			writes = fmt.Sprint(p.writes)
		}
		name := p.name
		if p.err != "" {
			name += " (failed)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f s | %s |\n", name, fmtDur(p.wall), cpu, cores, p.benchCPU.Seconds(), writes)
	}
	if r.memLoaded >= 0 || r.memEnd >= 0 {
		fmt.Fprintf(w, "\n| Memory | VmRSS | VmHWM |\n|---|---:|---:|\n")
		fmt.Fprintf(w, "| after loading %d×%d health views | %s | %s |\n", o.workers, o.servers, fmtBytes(r.memLoaded), fmtBytes(r.hwmLoaded))
		if r.memEnd > 0 {
			fmt.Fprintf(w, "| at the end | %s | %s |\n", fmtBytes(r.memEnd), fmtBytes(r.hwmEnd))
		}
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
	if len(r.perf) > 0 {
		fmt.Fprintf(w, "\n### Where the control plane spends its CPU, per phase (perf record -g; recording perturbs the figures above a little)\n")
		for _, p := range r.phases {
			if s := r.perf[p.name]; s != "" {
				fmt.Fprintf(w, "\n%s:\n```\n%s\n```\n", p.name, strings.TrimSpace(s))
			}
		}
	}
}

func (r *results) phase(name string) *phaseStat {
	for i := range r.phases {
		if r.phases[i].name == name {
			return &r.phases[i]
		}
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// printSummary is one table over every run (size) of the bench.
func printSummary(w io.Writer, all []*results) {
	if len(all) == 0 {
		return
	}
	o := all[0].o
	fmt.Fprintf(w, "\n## Summary: %d workers, %d control-plane replica%s, p50 / p99 / max\n\n", o.workers, o.replicas, plural(o.replicas))
	fmt.Fprintf(w, "| servers | apply → a worker received the snapshot | apply → its ACK recorded in etcd | apply → every ACK recorded | health views | transition visible in BackendHealth | BackendHealth, summary | with every view | etcd writes/s, steady | CP RSS (largest replica) |\n")
	fmt.Fprintf(w, "|---:|---|---|---|---:|---|---|---|---:|---:|\n")
	tri := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "—"
		}
		return fmt.Sprintf("%s / %s / %s", fmtDur(pct(ds, 50)), fmtDur(pct(ds, 99)), fmtDur(pct(ds, 100)))
	}
	for _, r := range all {
		bh, bhd := "—", "—"
		if len(r.bhLat) > 0 {
			bh = fmt.Sprintf("%s / %s (%s)", fmtDur(pct(r.bhLat, 50)), fmtDur(pct(r.bhLat, 99)), fmtBytes(int64(r.bhSize)))
		}
		if len(r.bhDetailLat) > 0 {
			bhd = fmt.Sprintf("%s (%s)", fmtDur(pct(r.bhDetailLat, 50)), fmtBytes(int64(r.bhDetailSize)))
		}
		writes := "n/a"
		if r.steadyWall > 0 {
			writes = fmt.Sprintf("%.2f", float64(r.steadyWrites)/r.steadyWall.Seconds())
		}
		views := fmt.Sprintf("%d×%d", r.healthWorkers, r.o.servers)
		if r.o.etcdEP != "" {
			views += fmt.Sprintf(" (%d missing)", r.viewsResent)
		}
		if r.healthErr != "" {
			views += " (**failed**)"
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.o.servers, tri(r.perWorker), tri(r.perWorkerAck), tri(r.allAck),
			views, tri(append(slices.Clone(r.toBad), r.toHealthy...)), bh, bhd, writes, fmtBytes(max(r.memLoaded, r.memEnd)))
	}
}
