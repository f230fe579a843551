package health

import (
	"fmt"
	"testing"
	"time"
)

func TestTrackerThresholds(t *testing.T) {
	for _, threshold := range []int{1, 3, 20} {
		t.Run(fmt.Sprint(threshold), func(t *testing.T) {
			tr := NewTracker(threshold)
			now := time.Unix(1000, 0)
			if s := tr.State().Status; s != Unknown || !tr.Usable() {
				t.Fatalf("new tracker: %s usable=%v, want Unknown and usable", s, tr.Usable())
			}
			if !tr.Observe(Outcome{OK: true, At: now}) || tr.State().Status != Healthy {
				t.Fatalf("first success did not make it Healthy: %s", tr.State().Status)
			}
			for i := 1; i < threshold; i++ {
				if tr.Observe(Outcome{Reason: "tcp-connect-error", At: now}) {
					t.Fatalf("failure %d of %d changed health to %s", i, threshold, tr.State().Status)
				}
				if !tr.Usable() {
					t.Fatalf("unusable after %d of %d failures", i, threshold)
				}
			}
			if !tr.Observe(Outcome{Reason: "tcp-connect-error", Message: "refused", At: now}) {
				t.Fatalf("failure %d did not change health", threshold)
			}
			st := tr.State()
			if st.Status != Unhealthy || tr.Usable() || st.Reason != "tcp-connect-error" || st.Failures != threshold {
				t.Fatalf("after %d failures: %+v usable=%v", threshold, st, tr.Usable())
			}
			if !tr.Observe(Outcome{OK: true, At: now}) || !tr.Usable() || tr.State().Status != Healthy {
				t.Fatalf("one success did not restore Healthy: %+v", tr.State())
			}
			ts := tr.State().Transitions
			if len(ts) != 3 || ts[0].From != Unknown || ts[1].To != Unhealthy || ts[1].Reason != "tcp-connect-error" || ts[2].To != Healthy {
				t.Fatalf("transitions = %+v", ts)
			}
		})
	}
}

// Failures before the first success count toward Unhealthy from Unknown too.
func TestTrackerUnknownToUnhealthy(t *testing.T) {
	tr := NewTracker(2)
	tr.Observe(Outcome{Reason: "x"})
	if tr.State().Status != Unknown {
		t.Fatalf("one failure of two: %s, want Unknown", tr.State().Status)
	}
	tr.Observe(Outcome{Reason: "x"})
	if tr.State().Status != Unhealthy {
		t.Fatalf("two failures of two: %s, want Unhealthy", tr.State().Status)
	}
}

func TestTrackerKeepsLastTransitions(t *testing.T) {
	tr := NewTracker(1)
	for i := range 2*MaxTransitions + 1 {
		tr.Observe(Outcome{OK: i%2 == 1, Reason: "r", At: time.Unix(int64(i), 0)})
	}
	ts := tr.State().Transitions
	if len(ts) != MaxTransitions {
		t.Fatalf("kept %d transitions, want %d", len(ts), MaxTransitions)
	}
	if last := ts[len(ts)-1].At.Unix(); last != 2*MaxTransitions {
		t.Fatalf("newest kept transition at %d, want %d", last, 2*MaxTransitions)
	}
}
