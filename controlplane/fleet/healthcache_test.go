package fleet_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// The cache follows views written to a real etcd: its summaries move with each write, a stale view
// dropped by its replica and a worker that disconnects leave them, and a replica whose lease ends
// takes its workers' views along.
func TestHealthCacheFollowsEtcd(t *testing.T) {
	endpoint := cptest.Etcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := cptest.Logger(t)
	cache := fleet.NewHealthCache(log)
	done := make(chan struct{})
	go func() { defer close(done); _ = cache.Run(ctx, cli) }()
	defer func() { cancel(); <-done }()

	regCtx, regCancel := context.WithCancel(ctx)
	reg, err := fleet.NewRegistry(regCtx, cli, 5, 10*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	other, err := fleet.NewRegistry(ctx, cli, 5, 10*time.Second, log) // a second replica
	if err != nil {
		t.Fatal(err)
	}
	put := func(r *fleet.Registry, id string, servers ...*fgv1.ServerHealthReport) {
		t.Helper()
		if err := r.PutHealth(ctx, "gw", id, &fgv1.HealthReport{Servers: servers}); err != nil {
			t.Fatal(err)
		}
	}
	counts := func() (healthy, unhealthy, reporting int) {
		cache.Gateway("gw").Read(func(r fleet.HealthReader) {
			if p := r.Pair("s", "10.0.0.1:80"); p != nil {
				healthy, unhealthy, reporting = p.Healthy(), p.Unhealthy(), p.Reporting()
			}
		})
		return
	}
	wait := func(what string, h, u, n int) {
		t.Helper()
		cptest.Eventually(t, 10*time.Second, func() bool {
			gh, gu, gn := counts()
			return gh == h && gu == u && gn == n
		}, "%s: want healthy %d unhealthy %d of %d", what, h, u, n)
	}
	<-cache.Ready()
	put(reg, "dp-1", sv("s", "10.0.0.1:80", "Healthy"))
	put(reg, "dp-2", sv("s", "10.0.0.1:80", "Healthy"))
	put(other, "dp-3", sv("s", "10.0.0.1:80", "Healthy"))
	wait("three healthy views", 3, 0, 3)
	put(reg, "dp-2", sv("s", "10.0.0.1:80", "Unhealthy"))
	wait("a transition", 2, 1, 3)
	// dp-2's reports stop: its replica drops the stale view.
	if err := reg.RemoveHealth(ctx, "gw", "dp-2"); err != nil {
		t.Fatal(err)
	}
	wait("dp-2's stale view dropped", 2, 0, 2)
	// dp-1 disconnects.
	if err := reg.Remove(ctx, "gw", "dp-1"); err != nil {
		t.Fatal(err)
	}
	wait("dp-1 disconnected", 1, 0, 1)
	// dp-1 comes back, then its replica stops: the lease goes, and with it dp-1's view.
	put(reg, "dp-1", sv("s", "10.0.0.1:80", "Unhealthy"))
	wait("dp-1 back, unhealthy", 1, 1, 2)
	regCancel()
	reg.Wait()
	wait("dp-1's replica gone", 1, 0, 1)
	if n := cache.Count(); n != 1 {
		t.Fatalf("Count = %v, want 1", n)
	}
	if v := cache.Views("gw"); len(v) != 1 || v["dp-3"].GetServers()[0].GetHealth() != "Healthy" {
		t.Fatalf("Views = %v", v)
	}
}
