package server

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func report(health string) *fgv1.HealthReport {
	return &fgv1.HealthReport{Servers: []*fgv1.ServerHealthReport{{Settings: "s", Address: "10.0.0.1:80", Health: health, IntervalSeconds: 5}}}
}

func heartbeat() *fgv1.HealthReport { return &fgv1.HealthReport{Heartbeat: true} }

// A failed write is retried after a jittered backoff that doubles up to maxRetry; heartbeats and an
// unchanged view write nothing; the latest view is what a retry writes.
func TestHealthViewRetry(t *testing.T) {
	var h healthView
	t0 := time.Unix(1000, 0)
	mustWrite := func(rep *fgv1.HealthReport, now time.Time, want bool) {
		t.Helper()
		got, err := h.observe(rep, "w", now)
		if err != nil || got != want {
			t.Fatalf("observe: write %v (%v), want %v", got, err, want)
		}
	}
	mustWrite(report("Healthy"), t0, true)
	h.saved(nil, t0)
	mustWrite(heartbeat(), t0, false)
	mustWrite(report("Healthy"), t0, false)
	if h.retryDue(t0.Add(time.Hour)) {
		t.Fatal("retry due with nothing unsaved")
	}

	mustWrite(report("Unhealthy"), t0, true)
	failed := errors.New("etcd down")
	now := t0
	var last time.Duration
	for i := range 10 {
		h.saved(failed, now)
		wait := h.retryAt.Sub(now)
		want := min(firstRetry<<i, maxRetry)
		if wait < want/2 || wait >= want*3/2 {
			t.Fatalf("attempt %d: retry in %s, want [%s, %s)", i, wait, want/2, want*3/2)
		}
		if h.retryDue(now.Add(wait - time.Millisecond)) {
			t.Fatalf("attempt %d: retry due early", i)
		}
		// Heartbeats and the same view again do not write before the retry is due.
		mustWrite(heartbeat(), now, false)
		mustWrite(report("Unhealthy"), now, false)
		now = now.Add(wait)
		if !h.retryDue(now) {
			t.Fatalf("attempt %d: retry not due at retryAt", i)
		}
		last = want
	}
	if last != maxRetry {
		t.Fatalf("backoff reached %s, want the cap %s", last, maxRetry)
	}
	// A newer view replaces the pending one: the retry writes it.
	mustWrite(report("Healthy"), now, true)
	var stored fgv1.HealthReport
	if err := proto.Unmarshal(h.written, &stored); err != nil || stored.GetServers()[0].GetHealth() != "Healthy" {
		t.Fatalf("pending view %v (%v), want the newest (Healthy)", &stored, err)
	}
	h.saved(nil, now)
	if h.unsaved || h.retryDue(now.Add(time.Hour)) {
		t.Fatal("still unsaved after a successful write")
	}
}
