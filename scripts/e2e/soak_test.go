package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// soakGCFloorMiB is the workers' --gc-min-heap-mib in the soak.
const soakGCFloorMiB = 8

// soakDuration is -soak, else 2 minutes on CI ($CI set), else 60 s.
func soakDuration() time.Duration {
	switch {
	case *soakFlag > 0:
		return *soakFlag
	case os.Getenv("CI") != "":
		return 2 * time.Minute
	}
	return 60 * time.Second
}

// resources is one reading of the processes' memory and goroutines.
type resources struct {
	rss        map[string]int64 // KiB, by process
	goroutines map[string]float64
	live       map[string]float64 // workers' live heap after the last GC, bytes
}

// Traffic through two workers, an apply every second and a flapping server, for a bounded time: no
// request fails that the down server does not explain, no acknowledged apply is lost, the fleet
// converges, and neither memory nor goroutines grow without bound.
func TestSoak(t *testing.T) {
	faultTest(t)
	// A failed test prints the processes' logs after its own messages; the end of the output is
	// what a CI summary shows, so the failures are said again after the logs.
	var problems []string
	t.Cleanup(func() {
		if len(problems) > 0 {
			t.Logf("TestSoak failed:\n\t%s", strings.Join(problems, "\n\t"))
		}
	})
	errorf := func(format string, args ...any) {
		t.Helper()
		problems = append(problems, fmt.Sprintf(format, args...))
		t.Errorf(format, args...)
	}
	dur := soakDuration()
	const n = "127.0.65."
	cpAddr := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	cpMetrics := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	// The Debian etcd when there is one, so that the control plane's memory is its own; else the
	// embedded etcd, whose history (kept an hour before compaction) grows inside the control plane.
	var (
		cp       *proc
		etcdURL  string
		etcdProc *proc
	)
	if bin, ok := lookEtcd(); ok {
		members := startEtcdCluster(t, bin, []string{n + "1"})
		etcdURL, etcdProc = members[0].client, members[0].proc
		waitQuorum(t, []string{etcdURL}, 30*time.Second)
		cp = startControlPlane(t, "cp", cpAddr, etcdURL, "--metrics-address", cpMetrics)
	} else {
		cp, etcdURL = startEmbeddedControlPlane(t, "cp", cpAddr, n+"5", "--metrics-address", cpMetrics)
	}
	waitServing(t, cpAddr, 30*time.Second)
	etcdCli := etcdClient(t, []string{etcdURL})
	etcdStatus := func() (rev, dbSize int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := etcdCli.Status(ctx, etcdURL)
		if err != nil {
			return 0, 0
		}
		return st.Header.GetRevision(), st.DbSize
	}
	bport := freePort(t, n+"31")
	steady := newBackend(t, "A", fmt.Sprintf("%s31:%d", n, bport), modeEcho)
	flappy := newBackend(t, "B", fmt.Sprintf("%s32:%d", n, bport), modeEcho)
	web := freePort(t, n+"21")
	// A small GC floor (the default is 64 MiB): collections happen during the soak, so the live heap
	// is measured, and RSS growth beyond the floor says something.
	gcFloor := []string{"--gc-min-heap-mib", strconv.Itoa(soakGCFloorMiB)}
	workers := []*worker{startWorker(t, "dp-1", cpAddr, n+"21", gcFloor...), startWorker(t, "dp-2", cpAddr, n+"22", gcFloor...)}
	ap := newApplier(t)
	g := gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, marker: 1, flappy: true}
	ap.mustApply(cpAddr, g)
	for _, w := range workers {
		waitMarker(t, w, web, 1, 20*time.Second)
	}
	eventually(t, 20*time.Second, func() bool {
		fleet := fleetHealth(t, cpAddr)
		return fleet[steady.addr] == "Healthy" && fleet[flappy.addr] == "Healthy"
	}, "servers not Healthy")

	read := func() resources {
		r := resources{rss: map[string]int64{}, goroutines: map[string]float64{}, live: map[string]float64{}}
		for _, w := range workers {
			r.rss[w.id], _ = rssKiB(w.pid())
			r.goroutines[w.id], _ = metric("http://"+w.admin+"/metrics", "go_goroutines")
			r.live[w.id], _ = metric("http://"+w.admin+"/metrics", "go_gc_heap_live_bytes")
		}
		r.rss["cp"], _ = rssKiB(cp.pid())
		if etcdProc != nil {
			r.rss["etcd"], _ = rssKiB(etcdProc.pid())
		}
		r.goroutines["cp"], _ = metric("http://"+cpMetrics+"/metrics", "go_goroutines")
		return r
	}
	idleStart := read()

	var targets []target
	for _, w := range workers {
		targets = append(targets, target{w.id, fmt.Sprintf("http://%s:%d", w.bind, web)})
	}
	began := time.Now()
	tr := startTraffic(t, targets, 2, 5*time.Millisecond, "/soak")
	ch := startChurn(t, ap, cpAddr, g, time.Second)
	stopFlap := flappy.flap(time.Second)

	warmUp := min(15*time.Second, dur/4)
	time.Sleep(warmUp)
	loadStart := read()
	revStart, dbStart := etcdStatus()
	peak := read()
	for time.Since(began) < dur {
		time.Sleep(min(5*time.Second, dur-time.Since(began)+time.Millisecond))
		r := read()
		for k, v := range r.rss {
			peak.rss[k] = max(peak.rss[k], v)
		}
		for k, v := range r.goroutines {
			peak.goroutines[k] = max(peak.goroutines[k], v)
		}
	}
	loadEnd := read()
	revEnd, dbEnd := etcdStatus()
	ch.stop()
	stopFlap()
	time.Sleep(2 * time.Second) // B back up and probed Healthy before the traffic stops
	tr.stop()
	ran := time.Since(began)

	// Converged: both workers serve the last acknowledged apply and say so.
	last := ap.last()
	for _, w := range workers {
		waitMarker(t, w, web, last.marker, 15*time.Second)
	}
	eventually(t, 15*time.Second, func() bool {
		r := ctl(t, cpAddr, "dataplanes", gatewayName)
		return r.code == 0 && strings.Count(r.stdout, "InSync") == 2 && strings.Contains(r.stdout, fmt.Sprint(last.revision))
	}, "the workers are not both InSync at revision %d", last.revision)
	checkStored(t, cpAddr, last)
	acks := ap.acked()
	checked := checkAcksInEtcd(t, []string{etcdURL}, acks)
	if ap.failed > 0 {
		errorf("%d of %d applies failed: %s", ap.failed, ap.failed+len(acks), strings.Join(ap.errors, "; "))
	}

	// Idle again: goroutines come back near where they started.
	time.Sleep(3 * time.Second)
	idleEnd := read()

	total, failed := tr.counts()
	fs := tr.failureList()
	explained, unexplained := explain(fs, 100*time.Millisecond, flappy)
	if len(unexplained) > 0 {
		errorf("%d failed requests that the flapping server does not explain:%s", len(unexplained), describe(unexplained, 10))
	}
	if failed > len(fs) {
		errorf("more failures (%d) than recorded (%d): cannot explain them all", failed, len(fs))
	}
	// The promise: once a worker's probe marked B Unhealthy, that worker sends it nothing more.
	flips := map[string][]flip{}
	marks, stalls := 0, 0
	var detect []time.Duration
	for _, w := range workers {
		flips[w.id] = healthFlips(w.proc, flappy.addr)
		detect = append(detect, detection(flappy.downSpans(), flips[w.id])...)
		marks += countFlips(flips[w.id], "Unhealthy")
		stalls += countFlips(healthFlips(w.proc, steady.addr), "Unhealthy")
	}
	afterMark := 0
	for _, f := range explained {
		if bad, at := routedAfterMark(f, flips[f.target]); bad {
			if afterMark++; afterMark <= 10 {
				errorf("request at %s via %s failed on B although that worker had marked B Unhealthy at %s: %d %q",
					f.start.Format("15:04:05.000"), f.target, at.Format("15:04:05.000"), f.status, f.body)
			}
		}
	}
	served := tr.servedBy()
	rows := [][2]string{
		{"duration (warm-up)", fmt.Sprintf("%s (%s)", ms(ran), ms(warmUp))},
		{"requests", fmt.Sprintf("%d (%.0f/s): dp-1 %d, dp-2 %d; by A %d, by B %d", total, float64(total)/ran.Seconds(),
			tr.byTarget["dp-1"], tr.byTarget["dp-2"], served["A"], served["B"])},
		{"failed", fmt.Sprintf("%d (%.2f%%): %d explained by B being down, %d not", failed, 100*float64(failed)/float64(max(total, 1)), len(explained), len(unexplained))},
		{"B down periods / Unhealthy marks (both workers)", fmt.Sprintf("%d / %d", len(flappy.downSpans()), marks)},
		{"B down -> marked Unhealthy (per worker)", spread(detect)},
		{"failures after B was marked Unhealthy", fmt.Sprint(afterMark)},
		{"steady A marked Unhealthy (probe timeouts: the machine stalled)", fmt.Sprint(stalls)},
		{"applies (1/s)", fmt.Sprintf("%d acknowledged, %d failed; %d checked in etcd history", len(acks), ap.failed, checked)},
		{"etcd after warm-up -> end", fmt.Sprintf("revision %d -> %d (%.1f writes/s), db size %d -> %d KiB",
			revStart, revEnd, float64(revEnd-revStart)/(ran-warmUp).Seconds(), dbStart>>10, dbEnd>>10)},
		{"converged", fmt.Sprintf("dp-1 and dp-2 InSync at revision %d (marker %d)", last.revision, last.marker)},
	}
	procs := []string{"dp-1", "dp-2", "cp"}
	if etcdProc != nil {
		procs = append(procs, "etcd")
	}
	for _, p := range procs {
		growth := 100 * float64(loadEnd.rss[p]-loadStart.rss[p]) / float64(max(loadStart.rss[p], 1))
		rows = append(rows, [2]string{p + " VmRSS", fmt.Sprintf("idle %d KiB, after warm-up %d KiB -> end %d KiB (%+.1f%%), peak %d KiB, idle at end %d KiB",
			idleStart.rss[p], loadStart.rss[p], loadEnd.rss[p], growth, peak.rss[p], idleEnd.rss[p])})
		rows = append(rows, [2]string{p + " goroutines", fmt.Sprintf("idle %.0f, after warm-up %.0f -> end %.0f, peak %.0f, idle at end %.0f",
			idleStart.goroutines[p], loadStart.goroutines[p], loadEnd.goroutines[p], peak.goroutines[p], idleEnd.goroutines[p])})
		if p == "etcd" {
			rows = rows[:len(rows)-1] // no goroutine count for etcd
			continue
		}
		if loadStart.rss[p] == 0 || idleEnd.goroutines[p] == 0 {
			errorf("%s: could not read VmRSS or go_goroutines", p)
			continue
		}
		_, worker := loadStart.live[p]
		switch {
		case p == "cp" && etcdProc == nil:
			t.Logf("cp VmRSS includes the embedded etcd and its history: growth not checked (install etcd to check it)")
		case worker:
			// A worker's GC pacer lets its heap fill up to a floor (--gc-min-heap-mib) before
			// collecting, so its RSS climbs towards that floor under load without anything leaking:
			// judge the live heap, and RSS only beyond the floor.
			lg := 100 * (loadEnd.live[p] - loadStart.live[p]) / max(loadStart.live[p], 1)
			rows = append(rows, [2]string{p + " live heap", fmt.Sprintf("after warm-up %.0f KiB -> end %.0f KiB (%+.1f%%)",
				loadStart.live[p]/1024, loadEnd.live[p]/1024, lg)})
			if loadStart.live[p] == 0 {
				errorf("%s: live heap 0 after warm-up: no garbage collection yet, or go_gc_heap_live_bytes unreadable", p)
			} else if lg >= 50 && loadEnd.live[p]-loadStart.live[p] > 4<<20 {
				errorf("%s: live heap grew %.1f%% after warm-up (%.0f -> %.0f KiB), want < 50%%", p, lg, loadStart.live[p]/1024, loadEnd.live[p]/1024)
			}
			// From the larger of its idle and after-warm-up readings: a worker that allocates
			// little hands its garbage back to the OS (gcpace), so the second may come right
			// after such a release.
			base := max(idleStart.rss[p], loadStart.rss[p])
			if floor := int64(soakGCFloorMiB << 10); loadEnd.rss[p] >= base*3/2 && loadEnd.rss[p] > base+floor {
				errorf("%s: VmRSS grew from %d KiB (idle %d, after warm-up %d) to %d KiB, beyond the GC floor and 50%%",
					p, base, idleStart.rss[p], loadStart.rss[p], loadEnd.rss[p])
			}
		case growth >= 50:
			errorf("%s: VmRSS grew %.1f%% after warm-up (%d -> %d KiB), want < 50%%", p, growth, loadStart.rss[p], loadEnd.rss[p])
		}
		if idleEnd.goroutines[p] > idleStart.goroutines[p]*1.25+20 {
			errorf("%s: %.0f goroutines when idle at the end, %.0f when idle at the start: a leak?", p, idleEnd.goroutines[p], idleStart.goroutines[p])
		}
		if loadEnd.goroutines[p] > loadStart.goroutines[p]*1.5+30 {
			errorf("%s: goroutines under load grew from %.0f to %.0f", p, loadStart.goroutines[p], loadEnd.goroutines[p])
		}
	}
	summary(t, fmt.Sprintf("soak: %s of traffic, applies and a flapping server", dur), rows)
}
