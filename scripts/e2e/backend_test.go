package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Backend servers misbehave: one flaps (down and up every second), one answers too late, one resets
// its connections mid-response. Requests that a healthy server could serve must not fail.
func TestFaultBackends(t *testing.T) {
	faultTest(t)
	const n = "127.0.64."
	cpAddr := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	startEmbeddedControlPlane(t, "cp", cpAddr, n+"5")
	waitServing(t, cpAddr, 30*time.Second)
	bport := freePort(t, n+"31")
	steady := newBackend(t, "A", fmt.Sprintf("%s31:%d", n, bport), modeEcho)
	flappy := newBackend(t, "B", fmt.Sprintf("%s32:%d", n, bport), modeEcho)
	slow := newBackend(t, "C", fmt.Sprintf("%s33:%d", n, bport), modeSlow)
	reset := newBackend(t, "D", fmt.Sprintf("%s34:%d", n, bport), modeReset)
	web := freePort(t, n+"21")
	w := startWorker(t, "dp-1", cpAddr, n+"21")
	ap := newApplier(t)
	ap.mustApply(cpAddr, gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, slow: n + "33", reset: n + "34", marker: 1, flappy: true})
	waitMarker(t, w, web, 1, 20*time.Second)
	eventually(t, 20*time.Second, func() bool {
		fleet := fleetHealth(t, cpAddr)
		return len(fleet) == 4 && fleet[steady.addr] == "Healthy" && fleet[flappy.addr] == "Healthy" && fleet[slow.addr] == "Healthy" && fleet[reset.addr] == "Healthy"
	}, "the four servers are not all Healthy")
	base := fmt.Sprintf("http://%s:%d", w.bind, web)
	tg := []target{{w.id, base}}

	// 1. Flapping: B goes down and up every second for 16 s under steady traffic to pool {A, B}.
	const flapFor = 16 * time.Second
	tr := startTraffic(t, tg, 4, 5*time.Millisecond, "/flap")
	time.Sleep(500 * time.Millisecond)
	flapStart := time.Now()
	stopFlap := flappy.flap(time.Second)
	time.Sleep(flapFor)
	stopFlap() // B stays up
	time.Sleep(2 * time.Second)
	tr.stop()
	total, failed := tr.counts()
	served := tr.servedBy()
	fs := tr.failureList()
	explained, unexplained := explain(fs, 100*time.Millisecond, flappy)
	if len(unexplained) > 0 {
		t.Errorf("%d failed requests that the flapping server does not explain:%s", len(unexplained), describe(unexplained, 10))
	}
	if failed > len(fs) {
		t.Errorf("more failures (%d) than recorded (%d)", failed, len(fs))
	}
	// The product's promise: once the probe has marked B Unhealthy, no request goes to it until a
	// probe finds it back. When the worker flipped is read from its log.
	flips := healthFlips(w.proc, flappy.addr)
	stalls := countFlips(healthFlips(w.proc, steady.addr), "Unhealthy")
	var unhealthyMarks, afterMark int
	for _, fl := range flips {
		if fl.health == "Unhealthy" && fl.at.After(flapStart) {
			unhealthyMarks++
		}
	}
	for _, f := range explained {
		if bad, at := routedAfterMark(f, flips); bad {
			afterMark++
			t.Errorf("request at %s failed on B although dp-1 had marked B Unhealthy at %s: %d %q",
				f.start.Format("15:04:05.000"), at.Format("15:04:05.000"), f.status, f.body)
		}
	}
	downs := flappy.downSpans()
	var downTime time.Duration
	for _, d := range downs {
		if !d.to.IsZero() {
			downTime += d.to.Sub(d.from)
		}
	}
	detect := detection(downs, flips)
	if unhealthyMarks == 0 {
		t.Errorf("no Unhealthy transition of B was recorded while it flapped")
	}
	if served["A"] == 0 || served["B"] == 0 {
		t.Errorf("answers by server: %v: want both", served)
	}
	flapRows := [][2]string{
		{"requests (4 clients, pool {A steady, B flapping ~1 s})", fmt.Sprintf("%d in %s: %d by A, %d by B", total, flapFor+2500*time.Millisecond, served["A"], served["B"])},
		{"failed", fmt.Sprintf("%d (%.2f%%): %d explained by B being down, %d not", failed, 100*float64(failed)/float64(max(total, 1)), len(explained), len(unexplained))},
		{"B down periods / total down time", fmt.Sprintf("%d / %s", len(downs), ms(downTime))},
		{"B marked Unhealthy by dp-1", fmt.Sprintf("%d times; down -> Unhealthy %s (%d down periods ended before)", unhealthyMarks, spread(detect), len(downs)-len(detect))},
		{"failures after B was marked Unhealthy", fmt.Sprint(afterMark)},
		{"steady A marked Unhealthy (probe timeouts: the machine stalled)", fmt.Sprint(stalls)},
		{"retry on another server after a connect error", "yes, up to 3 servers (a failure above would be a request B dropped after it was sent)"},
	}

	// 2. Slow server: /slow/* goes to C, which answers after 3 s; requestTimeout 1 s -> 504. Pool1
	// traffic at the same time is unaffected.
	tr = startTraffic(t, tg, 2, 10*time.Millisecond, "/during-slow")
	var mu sync.Mutex
	var slowCodes []int
	var slowTimes []time.Duration
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				begin := time.Now()
				_, code := get(base + "/slow/x")
				mu.Lock()
				slowCodes = append(slowCodes, code)
				slowTimes = append(slowTimes, time.Since(begin))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	tr.stop()
	for i, c := range slowCodes {
		if c != http.StatusGatewayTimeout || slowTimes[i] < 900*time.Millisecond || slowTimes[i] > 4*time.Second {
			t.Errorf("request to the slow server: %d after %s, want 504 after about 1 s", c, ms(slowTimes[i]))
		}
	}
	tr.requireNoFailure(t, "pool1 traffic while the slow server timed out")
	slowTotal, _ := tr.counts()
	slowRows := [][2]string{
		{"slow server (3 s) with requestTimeout 1 s", fmt.Sprintf("%v after %s", slowCodes, durations(slowTimes))},
		{"pool1 requests meanwhile", fmt.Sprintf("%d, 0 failed, max latency %s", slowTotal, ms(tr.maxLatency))},
	}

	// 3. A server that resets its connections mid-response: the client sees the response aborted;
	// the worker stays healthy for every other request.
	tr = startTraffic(t, tg, 2, 10*time.Millisecond, "/during-reset")
	aborted, complete := 0, 0
	var firstAbort string
	for range 10 {
		resp, err := plainClient.Get(base + "/reset/x")
		if err != nil {
			aborted++
			if firstAbort == "" {
				firstAbort = "transport: " + err.Error()
			}
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || len(b) < 65536 {
			aborted++
			if firstAbort == "" {
				firstAbort = fmt.Sprintf("status %d, %d of 65536 body bytes, then %v", resp.StatusCode, len(b), err)
			}
			continue
		}
		complete++
	}
	time.Sleep(500 * time.Millisecond)
	tr.stop()
	if aborted != 10 {
		t.Errorf("requests to the resetting server: %d aborted, %d complete; want every one aborted", aborted, complete)
	}
	tr.requireNoFailure(t, "pool1 traffic while the resetting server cut responses")
	if !w.alive() {
		t.Fatal("the worker died")
	}
	if body, code := get("http://" + w.admin + "/healthz"); code != 200 {
		t.Errorf("worker /healthz after the resets: %d %q", code, body)
	}
	resetTotal, _ := tr.counts()
	rows := append(flapRows, slowRows...)
	rows = append(rows,
		[2]string{"resetting server: responses aborted", fmt.Sprintf("%d of 10 (%s)", aborted, firstAbort)},
		[2]string{"pool1 requests meanwhile", fmt.Sprintf("%d, 0 failed; worker /healthz 200", resetTotal)},
	)
	summary(t, "backends: flapping, slow, resetting", rows)
}

// spread describes a set of durations: min / median / max.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return strings.Join([]string{ms(s[0]), ms(s[len(s)/2]), ms(s[len(s)-1])}, " / ") + " (min / median / max)"
}

// flip is a worker's health verdict on a server changing, as its log says.
type flip struct {
	at     time.Time
	health string
}

var flipRE = regexp.MustCompile(`^time=(\S+) .*msg="backend health changed".* server=(\S+) health=(\w+)`)

// healthFlips reads from a worker's log when it changed its verdict on server addr. The line is
// written right after the request path's view changed, so the time is an upper bound.
func healthFlips(p *proc, addr string) []flip {
	var out []flip
	for _, line := range strings.Split(p.logText(), "\n") {
		m := flipRE.FindStringSubmatch(line)
		if m == nil || m[2] != addr {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		out = append(out, flip{at: at, health: m[3]})
	}
	return out
}

// routedAfterMark reports whether a failed request went to a server that the worker had already
// marked Unhealthy when the request was sent, and did not mark Healthy again before it ended.
func routedAfterMark(f sample, flips []flip) (bool, time.Time) {
	st, since := "Unknown", time.Time{}
	for _, fl := range flips {
		// The log's time is cut to the millisecond: a flip logged in the request's own millisecond
		// (or the next few) may have come after the server was chosen.
		if fl.at.Add(5 * time.Millisecond).After(f.start) {
			break
		}
		st, since = fl.health, fl.at
	}
	if st != "Unhealthy" {
		return false, since
	}
	for _, fl := range flips {
		if fl.at.After(f.start) && !fl.at.After(f.end) && fl.health != "Unhealthy" {
			return false, since
		}
	}
	return true, since
}

func countFlips(flips []flip, health string) int {
	n := 0
	for _, fl := range flips {
		if fl.health == health {
			n++
		}
	}
	return n
}
