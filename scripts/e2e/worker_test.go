package e2e

import (
	"fmt"
	"testing"
	"time"
)

// Workers die (SIGKILL) or freeze (SIGSTOP: the process holds its connection open and says nothing)
// and their health reports leave the fleet view: the fleet's verdict rests on the workers still
// reporting, and is Unknown once none is.
func TestFaultWorkerKillAndFreeze(t *testing.T) {
	faultTest(t)
	const n = "127.0.63."
	const leaseTTL = 2
	cpAddr := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	startEmbeddedControlPlane(t, "cp", cpAddr, n+"5", "--lease-ttl", fmt.Sprint(leaseTTL))
	waitServing(t, cpAddr, 30*time.Second)
	bport := freePort(t, n+"31")
	addrs := []string{fmt.Sprintf("%s31:%d", n, bport), fmt.Sprintf("%s32:%d", n, bport)}
	newBackend(t, "A", addrs[0], modeEcho)
	newBackend(t, "B", addrs[1], modeEcho)
	web := freePort(t, n+"21")
	w1 := startWorker(t, "dp-1", cpAddr, n+"21")
	w2 := startWorker(t, "dp-2", cpAddr, n+"22")
	ap := newApplier(t)
	g := gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, marker: 1}
	last := ap.mustApply(cpAddr, g)
	for _, w := range []*worker{w1, w2} {
		waitMarker(t, w, web, 1, 20*time.Second)
	}

	// state reports whether every server has the fleet health want and exactly the views of ids,
	// each Healthy.
	state := func(want string, ids ...string) bool {
		fleet, views := backendHealth(t, cpAddr)
		if fleet == nil {
			return false
		}
		for _, a := range addrs {
			if fleet[a] != want || len(views[a]) != len(ids) {
				return false
			}
			for _, id := range ids {
				if views[a][id] != "Healthy" {
					return false
				}
			}
		}
		return true
	}
	eventually(t, 20*time.Second, func() bool { return state("Healthy", "dp-1", "dp-2") }, "both workers' views do not show both servers Healthy")

	// 1. dp-1 is killed: its views vanish; the fleet's verdict, from dp-2, stays Healthy throughout.
	w1.kill()
	killed := time.Now()
	var oneGone time.Duration
	blips := 0
	for time.Since(killed) < time.Duration(leaseTTL)*time.Second+5*time.Second {
		if state("Healthy", "dp-2") {
			oneGone = time.Since(killed)
			break
		}
		if fleet := fleetHealth(t, cpAddr); fleet[addrs[0]] != "Healthy" || fleet[addrs[1]] != "Healthy" {
			blips++
		}
		time.Sleep(50 * time.Millisecond)
	}
	if oneGone == 0 {
		t.Fatalf("dp-1's views still in BackendHealth %s after SIGKILL (lease TTL %d s)", ms(time.Since(killed)), leaseTTL)
	}
	if blips > 0 {
		t.Errorf("the fleet verdict left Healthy %d times while dp-1's views were leaving, with dp-2 seeing both servers Healthy", blips)
	}
	if dps := dataplanes(t, cpAddr); dps["dp-1"] != nil || dps["dp-2"] == nil {
		t.Errorf("dataplanes after dp-1's kill: %v", dps)
	}

	// 2. dp-2, the last worker, is killed: nobody has a fresh result; every server is Unknown.
	w2.kill()
	allGone := eventually(t, time.Duration(leaseTTL)*time.Second+5*time.Second, func() bool { return state("Unknown") },
		"BackendHealth is not Unknown for every server after the last worker's kill")

	// 3. dp-2 restarts: it serves its state dir's config before it hears from the control plane.
	w2.proc = w2.restart()
	url := fmt.Sprintf("http://%s:%d/after-restart", w2.bind, web)
	servesAt := eventually(t, 15*time.Second, func() bool { _, code := get(url); return code == 200 }, "restarted dp-2 does not serve")
	backAt := eventually(t, 20*time.Second, func() bool { return state("Healthy", "dp-2") }, "restarted dp-2's views do not come back")
	if dps := dataplanes(t, cpAddr); dps["dp-2"].GetAppliedVersion() != last.revision {
		t.Errorf("restarted dp-2 reports version %d, want %d", dps["dp-2"].GetAppliedVersion(), last.revision)
	}

	// 4. dp-2 freezes: its stream stays open but reports stop; after three heartbeat periods (the
	// probe interval, 1 s) its views are dropped.
	w2.freeze()
	frozen := time.Now()
	staleAt := eventually(t, 10*time.Second, func() bool { return state("Unknown") },
		"BackendHealth still shows the frozen worker's views")
	// How long the frozen worker stays listed as connected (gRPC keepalive decides), bounded.
	var unlisted time.Duration
	for time.Since(frozen) < 25*time.Second {
		if dps := dataplanes(t, cpAddr); dps != nil && dps["dp-2"] == nil {
			unlisted = time.Since(frozen)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	w2.cont()
	thawBack := eventually(t, 30*time.Second, func() bool { return state("Healthy", "dp-2") }, "thawed dp-2's views do not come back")
	listedAfter := "still listed after 25 s (no keepalive verdict yet)"
	if unlisted > 0 {
		listedAfter = ms(unlisted)
	}
	summary(t, "workers: SIGKILL and SIGSTOP", [][2]string{
		{"lease TTL / probe interval", fmt.Sprintf("%d s / 1 s", leaseTTL)},
		{"dp-1 SIGKILL -> its views gone (dp-2 still reports)", ms(oneGone)},
		{"  fleet verdict blips away from Healthy", fmt.Sprint(blips)},
		{"dp-2 SIGKILL (last worker) -> every server Unknown", ms(allGone)},
		{"dp-2 restart -> serves from its state dir", ms(servesAt)},
		{"dp-2 restart -> its views back, Healthy", ms(backAt)},
		{"dp-2 SIGSTOP -> every server Unknown (stale views)", ms(staleAt)},
		{"dp-2 SIGSTOP -> gone from `dataplanes`", listedAfter},
		{"dp-2 SIGCONT -> its views back, Healthy", ms(thawBack)},
	})
}
