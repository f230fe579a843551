package proxy_test

import (
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// A server removed by an apply drains (30 s without connectionDraining); an apply that brings it
// back cancels the drain.
func TestReAddCancelsDrain(t *testing.T) {
	decode := func(doc string) *fgv1.Gateway {
		gw, err := config.Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		config.Normalize(gw)
		return gw
	}
	both := decode(gateway(t, 20, "127.0.0.71:9000", "127.0.0.72:9000"))
	one := decode(gateway(t, 20, "127.0.0.72:9000"))
	p := proxy.New(cptest.Logger(t))
	defer p.Close()
	if _, err := p.Apply(1, both, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(p.DrainReports()); n != 0 {
		t.Fatalf("%d drains before any removal", n)
	}
	if _, err := p.Apply(2, one, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	reps := p.DrainReports()
	if len(reps) != 1 || reps[0].GetAddress() != "127.0.0.71:9000" || reps[0].GetAdmin() {
		t.Fatalf("after removing 127.0.0.71: drains %v", reps)
	}
	// No request was in flight: it ends by itself, clean.
	deadline := reps[0].GetDeadline().AsTime().Sub(reps[0].GetStartedAt().AsTime())
	if deadline != 30*time.Second {
		t.Fatalf("drain timeout without connectionDraining = %s, want 30s", deadline)
	}
	if _, err := p.Apply(3, both, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 0 {
		t.Fatalf("re-adding the server did not cancel its drain: %v", reps)
	}
}
