package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Two control-plane replicas on one etcd; both workers are given both addresses (--controlplane
// a,b) and each picks one. Under traffic and an apply every 500 ms through the other replica, the
// replica dp-1 is on is killed with SIGKILL: dp-1 (and dp-2 if it was there too) moves to the
// survivor by itself, follows the churn, and BackendHealth through the survivor never loses a
// server; then the killed replica is restarted and serves the full view too.
func TestFaultControlPlaneReplicaKill(t *testing.T) {
	faultTest(t)
	bin := etcdBinary(t)
	const n = "127.0.62."
	const leaseTTL = 2
	members := startEtcdCluster(t, bin, []string{n + "1"})
	endpoints := endpointsOf(members)
	waitQuorum(t, endpoints, 30*time.Second)

	// Both replicas listen on one address (ports differ), so that one server certificate names both.
	cpA := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	cpB := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	replicas := map[string]*proc{
		"cp-a": startControlPlane(t, "cp-a", cpA, endpoints[0], "--lease-ttl", fmt.Sprint(leaseTTL)),
	}
	waitServing(t, cpA, 30*time.Second)
	replicas["cp-b"] = startControlPlane(t, "cp-b", cpB, endpoints[0], "--lease-ttl", fmt.Sprint(leaseTTL))
	waitServing(t, cpB, 30*time.Second)
	addrOf := map[string]string{"cp-a": cpA, "cp-b": cpB}

	bport := freePort(t, n+"31")
	addrA, addrB := fmt.Sprintf("%s31:%d", n, bport), fmt.Sprintf("%s32:%d", n, bport)
	newBackend(t, "A", addrA, modeEcho)
	newBackend(t, "B", addrB, modeEcho)
	web := freePort(t, n+"21")
	both := cpA + "," + cpB
	w1 := startWorker(t, "dp-1", both, n+"21")
	w2 := startWorker(t, "dp-2", both, n+"22")
	workers := []*worker{w1, w2}

	ap := newApplier(t)
	g := gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, marker: 1}
	ap.mustApply(cpA, g)
	for _, w := range workers {
		waitMarker(t, w, web, 1, 20*time.Second)
	}
	// Both workers' views of both servers, through either replica.
	complete := func(server string, ids ...string) bool {
		fleet, views := backendHealth(t, server)
		if len(fleet) != 2 {
			return false
		}
		for _, addr := range []string{addrA, addrB} {
			if fleet[addr] != "Healthy" || len(views[addr]) != len(ids) {
				return false
			}
			for _, id := range ids {
				if views[addr][id] != "Healthy" {
					return false
				}
			}
		}
		return true
	}
	eventually(t, 20*time.Second, func() bool { return complete(cpB, "dp-1", "dp-2") && complete(cpA, "dp-1", "dp-2") },
		"BackendHealth does not show both workers' views of both servers as Healthy")

	// The victim is dp-1's replica; applies go through the other.
	victim := dataplanes(t, cpA)["dp-1"].GetControlplane()
	survivor := map[string]string{"cp-a": "cp-b", "cp-b": "cp-a"}[victim]
	if survivor == "" {
		t.Fatalf("dp-1 is connected to %q, want cp-a or cp-b", victim)
	}
	onVictim := 0
	for _, dp := range dataplanes(t, addrOf[survivor]) {
		if dp.GetControlplane() == victim {
			onVictim++
		}
	}
	var targets []target
	for _, w := range workers {
		targets = append(targets, target{w.id, fmt.Sprintf("http://%s:%d", w.bind, web)})
	}
	tr := startTraffic(t, targets, 2, 10*time.Millisecond, "/traffic")
	ch := startChurn(t, ap, addrOf[survivor], g, 500*time.Millisecond)
	time.Sleep(2 * time.Second)

	replicas[victim].kill()
	killedAt := time.Now()
	var moved time.Duration
	incomplete := 0 // polls where a server's fleet verdict through the survivor was not Healthy
	polls := 0
	// Poll until both moved and the dead replica's lease (and with it the views it wrote) expired.
	leaseGone := time.Duration(leaseTTL)*time.Second + time.Second
	for time.Since(killedAt) < leaseGone+10*time.Second && (moved == 0 || time.Since(killedAt) < leaseGone) {
		polls++
		if dps := dataplanes(t, addrOf[survivor]); dps != nil && moved == 0 {
			if dps["dp-1"].GetControlplane() == survivor && dps["dp-2"].GetControlplane() == survivor {
				moved = time.Since(killedAt)
			}
		}
		fleet := fleetHealth(t, addrOf[survivor])
		if fleet[addrA] != "Healthy" || fleet[addrB] != "Healthy" {
			incomplete++
		}
		time.Sleep(100 * time.Millisecond)
	}
	if moved == 0 {
		t.Fatalf("the workers are not both on the surviving replica %s %s after %s was killed: %v",
			survivor, ms(time.Since(killedAt)), victim, dataplanes(t, addrOf[survivor]))
	}
	if incomplete > 0 {
		t.Errorf("BackendHealth through the survivor lacked a Healthy verdict for a server in %d of %d polls after %s died", incomplete, polls, victim)
	}
	// The moved worker follows the churn; BackendHealth shows both workers' views again.
	caughtUp := waitMarker(t, w1, web, ap.last().marker, 15*time.Second)
	var viewsBack time.Duration
	eventually(t, 20*time.Second, func() bool {
		viewsBack = time.Since(killedAt)
		return complete(addrOf[survivor], "dp-1", "dp-2")
	}, "BackendHealth through the survivor does not show both workers' views after the move")

	// The killed replica comes back and serves the whole view as well.
	restartedAt := time.Now()
	replicas[victim].restart()
	waitServing(t, addrOf[victim], 30*time.Second)
	time.Sleep(time.Second)
	ch.stop()
	last := ap.last()
	for _, w := range workers {
		waitMarker(t, w, web, last.marker, 10*time.Second)
	}
	var rejoined time.Duration
	eventually(t, 20*time.Second, func() bool {
		rejoined = time.Since(restartedAt)
		return complete(cpA, "dp-1", "dp-2") && complete(cpB, "dp-1", "dp-2")
	}, "BackendHealth does not show both workers through both replicas after %s's restart", victim)
	eventually(t, 10*time.Second, func() bool {
		dps := dataplanes(t, cpA)
		return dps["dp-1"].GetAppliedVersion() == last.revision && dps["dp-2"].GetAppliedVersion() == last.revision
	}, "the workers do not both report the last acknowledged revision %d", last.revision)
	time.Sleep(300 * time.Millisecond)
	tr.stop()
	tr.requireNoFailure(t, "traffic through the replica kill")

	acks := ap.acked()
	if ap.failed > 0 {
		t.Errorf("%d applies through the surviving replica failed: %s", ap.failed, strings.Join(ap.errors, "; "))
	}
	checkStored(t, cpA, last)
	checkStored(t, cpB, last)
	checked := checkAcksInEtcd(t, endpoints, acks)
	total, failed := tr.counts()
	summary(t, "control plane: a replica killed (SIGKILL) under traffic and churn, then restarted", [][2]string{
		{"lease TTL", fmt.Sprintf("%d s", leaseTTL)},
		{"killed replica / workers on it", fmt.Sprintf("%s / %d of 2", victim, onVictim)},
		{"applies via the survivor (every 500 ms)", fmt.Sprintf("%d acknowledged, %d failed", len(acks), ap.failed)},
		{"kill -> both workers on the survivor", ms(moved)},
		{"BackendHealth polls without a Healthy verdict per server", fmt.Sprintf("%d of %d", incomplete, polls)},
		{"kill -> dp-1 serves the latest config", ms(caughtUp)},
		{"both workers' views through the survivor (checked once the lease expired)", ms(viewsBack) + " after the kill"},
		{"restart -> full view through both replicas", ms(rejoined)},
		{"acknowledged applies checked in etcd history", fmt.Sprintf("%d, none lost", checked)},
		{"requests through the workers", fmt.Sprintf("%d, %d failed", total, failed)},
	})
}
