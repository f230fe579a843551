package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Two control-plane replicas on one etcd; worker dp-1 is connected to replica A, dp-2 to replica B
// (a worker takes one --controlplane address: it cannot move to another replica by itself). Under
// traffic and an apply every 500 ms through B, A is killed with SIGKILL, then restarted.
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
	replicaA := startControlPlane(t, "cp-a", cpA, endpoints[0], "--lease-ttl", fmt.Sprint(leaseTTL))
	waitServing(t, cpA, 30*time.Second)
	startControlPlane(t, "cp-b", cpB, endpoints[0], "--lease-ttl", fmt.Sprint(leaseTTL))
	waitServing(t, cpB, 30*time.Second)

	bport := freePort(t, n+"31")
	addrA, addrB := fmt.Sprintf("%s31:%d", n, bport), fmt.Sprintf("%s32:%d", n, bport)
	newBackend(t, "A", addrA, modeEcho)
	newBackend(t, "B", addrB, modeEcho)
	web := freePort(t, n+"21")
	w1 := startWorker(t, "dp-1", cpA, n+"21")
	w2 := startWorker(t, "dp-2", cpB, n+"22")
	workers := []*worker{w1, w2}

	ap := newApplier(t)
	g := gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, marker: 1}
	ap.mustApply(cpB, g)
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

	var targets []target
	for _, w := range workers {
		targets = append(targets, target{w.id, fmt.Sprintf("http://%s:%d", w.bind, web)})
	}
	tr := startTraffic(t, targets, 2, 10*time.Millisecond, "/traffic")
	ch := startChurn(t, ap, cpB, g, 500*time.Millisecond)
	time.Sleep(2 * time.Second)

	// Replica A dies.
	replicaA.kill()
	killedAt := time.Now()
	markerAtKill := ap.last().marker
	var fleetGone, healthGone time.Duration
	incomplete := 0 // polls where dp-2's view (the survivor's) was not complete
	polls := 0
	for time.Since(killedAt) < time.Duration(leaseTTL)*time.Second+8*time.Second && (fleetGone == 0 || healthGone == 0) {
		polls++
		if fleetGone == 0 {
			if dps := dataplanes(t, cpB); dps != nil && dps["dp-1"] == nil && dps["dp-2"] != nil {
				fleetGone = time.Since(killedAt)
			}
		}
		fleet, views := backendHealth(t, cpB)
		okSurvivor := fleet != nil
		gone := fleet != nil
		for _, addr := range []string{addrA, addrB} {
			okSurvivor = okSurvivor && views[addr]["dp-2"] == "Healthy" && fleet[addr] == "Healthy"
			_, has := views[addr]["dp-1"]
			gone = gone && !has
		}
		if !okSurvivor {
			incomplete++
		}
		if gone && healthGone == 0 {
			healthGone = time.Since(killedAt)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fleetGone == 0 {
		t.Errorf("dp-1 (on the killed replica) still listed by replica B %s after the kill (lease TTL %d s)", ms(time.Since(killedAt)), leaseTTL)
	}
	if healthGone == 0 {
		t.Errorf("dp-1's health views still in BackendHealth from replica B %s after the kill (lease TTL %d s)", ms(time.Since(killedAt)), leaseTTL)
	}
	if incomplete > 0 {
		t.Errorf("BackendHealth from replica B lacked dp-2's Healthy view (or a Healthy fleet verdict) in %d of %d polls after replica A died", incomplete, polls)
	}
	// dp-2 follows the churn; dp-1 serves what it had.
	latest := ap.last().marker
	waitMarker(t, w2, web, latest, 10*time.Second)
	if got := tr.marker("dp-1"); got > markerAtKill+1 || got < markerAtKill-2 {
		t.Errorf("dp-1 (replica gone) serves marker %d; the last acknowledged before the kill was %d", got, markerAtKill)
	}
	dp1WhileDown := tr.marker("dp-1")
	downFor := 4*time.Second - time.Since(killedAt)
	if downFor > 0 {
		time.Sleep(downFor)
	}

	// Replica A comes back: dp-1 reconnects by itself and catches up.
	restartedAt := time.Now()
	replicaA.restart()
	var reconnected time.Duration
	eventually(t, 25*time.Second, func() bool {
		dps := dataplanes(t, cpB)
		if dp := dps["dp-1"]; dp != nil && dp.GetControlplane() == "cp-a" {
			reconnected = time.Since(restartedAt)
			return true
		}
		return false
	}, "dp-1 does not reconnect to the restarted replica A")
	caughtUp := waitMarker(t, w1, web, ap.last().marker, 15*time.Second)
	time.Sleep(time.Second)
	ch.stop()
	last := ap.last()
	for _, w := range workers {
		waitMarker(t, w, web, last.marker, 10*time.Second)
	}
	eventually(t, 20*time.Second, func() bool { return complete(cpA, "dp-1", "dp-2") && complete(cpB, "dp-1", "dp-2") },
		"BackendHealth does not show both workers again after replica A's restart")
	eventually(t, 10*time.Second, func() bool {
		dps := dataplanes(t, cpA)
		return dps["dp-1"].GetAppliedVersion() == last.revision && dps["dp-2"].GetAppliedVersion() == last.revision
	}, "the workers do not both report the last acknowledged revision %d", last.revision)
	time.Sleep(300 * time.Millisecond)
	tr.stop()
	tr.requireNoFailure(t, "traffic through the replica kill")

	acks := ap.acked()
	if ap.failed > 0 {
		t.Errorf("%d applies through the surviving replica B failed: %s", ap.failed, strings.Join(ap.errors, "; "))
	}
	checkStored(t, cpA, last)
	checkStored(t, cpB, last)
	checked := checkAcksInEtcd(t, endpoints, acks)
	total, failed := tr.counts()
	summary(t, "control plane: replica A killed (SIGKILL) and restarted", [][2]string{
		{"lease TTL", fmt.Sprintf("%d s", leaseTTL)},
		{"applies via replica B (every 500 ms)", fmt.Sprintf("%d acknowledged, %d failed", len(acks), ap.failed)},
		{"kill -> dp-1 gone from `dataplanes` (via B)", ms(fleetGone)},
		{"kill -> dp-1's views gone from BackendHealth (via B)", ms(healthGone)},
		{"BackendHealth polls with dp-2's view incomplete", fmt.Sprintf("%d of %d", incomplete, polls)},
		{"dp-1 while its replica was down", fmt.Sprintf("served marker %d (last ack before the kill %d)", dp1WhileDown, markerAtKill)},
		{"restart -> dp-1 reconnected", ms(reconnected)},
		{"restart -> dp-1 serves the latest config", ms(caughtUp)},
		{"acknowledged applies checked in etcd history", fmt.Sprintf("%d, none lost", checked)},
		{"requests through the workers", fmt.Sprintf("%d, %d failed", total, failed)},
	})
}
