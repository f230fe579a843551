package proxy_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

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

// An operator's drain of a server that then leaves its pool goes on as a removal drain (and ends),
// rather than staying an operator's drain forever; lifting an operator's drain ends it at once.
func TestOperatorDrainThenRemoval(t *testing.T) {
	decode := func(doc string) *fgv1.Gateway {
		gw, err := config.Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		config.Normalize(gw)
		return gw
	}
	both := decode(gateway(t, 20, "127.0.0.73:9000", "127.0.0.74:9000"))
	one := decode(gateway(t, 20, "127.0.0.74:9000"))
	p := proxy.New(cptest.Logger(t))
	defer p.Close()
	drain := []*fgv1.AdminDrain{{Pool: "pool", Address: "127.0.0.73", TimeoutSeconds: 60, StartedAt: timestamppb.Now()}}
	if _, err := p.Apply(1, both, nil, nil, drain); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 1 || !reps[0].GetAdmin() {
		t.Fatalf("operator drain: reports %v", reps)
	}
	if _, err := p.Apply(2, both, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 0 {
		t.Fatalf("lifted operator drain still reported: %v", reps)
	}
	if _, err := p.Apply(3, both, nil, nil, drain); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(4, one, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	reps := p.DrainReports()
	if len(reps) != 1 || reps[0].GetAdmin() || reps[0].GetAddress() != "127.0.0.73:9000" {
		t.Fatalf("operator-drained server removed from its pool: reports %v, want one removal drain", reps)
	}
}
