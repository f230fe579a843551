package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/health"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// healthDoc is a gateway whose pool holds the given servers (all on port), probed every second.
func healthDoc(listen, port int, threshold int, ips ...string) string {
	var addrs []string
	for _, ip := range ips {
		addrs = append(addrs, fmt.Sprintf("{ipAddress: %s}", ip))
	}
	return fmt.Sprintf(`
name: appgw1
httpListeners: [{name: web, port: %d}]
backendAddressPools: [{name: pool1, backendAddresses: [%s]}]
backendHttpSettingsCollection: [{name: s1, port: %d, probe: p1}]
probes: [{name: p1, path: /health, interval: 1, timeout: 1, unhealthyThreshold: %d}]
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, listen, strings.Join(addrs, ", "), port, threshold)
}

// switchable is a backend whose health endpoint answers per probing worker (by source address).
type switchable struct {
	srv  *http.Server
	addr string
	sick map[string]bool // worker source IP -> answer 503 to its probes
	mu   chan struct{}
}

func startSwitchable(t *testing.T, addr, name string) *switchable {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &switchable{addr: l.Addr().String(), sick: map[string]bool{}, mu: make(chan struct{}, 1)}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			ip, _, _ := net.SplitHostPort(r.RemoteAddr)
			b.mu <- struct{}{}
			sick := b.sick[ip] || b.sick["*"]
			<-b.mu
			if sick {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		fmt.Fprint(w, name)
	})}
	go b.srv.Serve(l)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *switchable) setSick(ip string, sick bool) {
	b.mu <- struct{}{}
	b.sick[ip] = sick
	<-b.mu
}

// backendHealth returns BackendHealth's summary of each server, by address.
func backendHealth(t *testing.T, cpAddr string) map[string]*fgv1.BackendServerHealth {
	t.Helper()
	return backendHealthOf(t, cpAddr, false)
}

// backendHealthViews is backendHealth with every worker's view of each server (dataplanes).
func backendHealthViews(t *testing.T, cpAddr string) map[string]*fgv1.BackendServerHealth {
	t.Helper()
	return backendHealthOf(t, cpAddr, true)
}

func backendHealthOf(t *testing.T, cpAddr string, dataplanes bool) map[string]*fgv1.BackendServerHealth {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := fgv1.NewConfigServiceClient(cptest.Dial(t, cpAddr)).BackendHealth(ctx, &fgv1.BackendHealthRequest{Gateway: "appgw1", Dataplanes: dataplanes})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fgv1.BackendServerHealth{}
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				out[srv.GetAddress()] = srv
			}
		}
	}
	return out
}

// Probes drive routing and reach the fleet view: a failing server leaves rotation and shows
// Unhealthy with its reason; a whole pool down answers 502; two workers that disagree show Partial;
// two replicas give the same answer; workers that stop leave Unknown.
func TestBackendHealthFleetWide(t *testing.T) {
	etcd := cptest.Etcd(t)
	cpA := cptest.Start(t, etcd, "cp-a")
	cpB := cptest.Start(t, etcd, "cp-b")
	a := startSwitchable(t, "127.0.0.31:0", "A")
	_, port, _ := net.SplitHostPort(a.addr)
	b := startSwitchable(t, "127.0.0.32:"+port, "B")
	var p int
	fmt.Sscan(port, &p)
	listen := freePort(t)
	w1 := startWorker(t, cpA.Addr, "dp-1", "127.0.0.2", "")
	w2 := startWorker(t, cpB.Addr, "dp-2", "127.0.0.3", "")
	cptest.Apply(t, cptest.Dial(t, cpA.Addr), healthDoc(listen, p, 2, "127.0.0.31", "127.0.0.32"))
	addrA, addrB := "127.0.0.31:"+port, "127.0.0.32:"+port

	cptest.Eventually(t, 15*time.Second, func() bool {
		h := backendHealth(t, cpA.Addr)
		return h[addrA].GetHealth() == "Healthy" && h[addrB].GetHealth() == "Healthy" && h[addrA].GetHealthyDataplanes() == 2
	}, "both servers not Healthy on both workers: %v", backendHealth(t, cpA.Addr))
	// The default answer is the summary: counts and the newest probe, no views; dataplanes adds
	// each worker's view, whose newest probe is the summary's (probes run every 2 s: retry if
	// one ran between the calls).
	cptest.Eventually(t, 15*time.Second, func() bool {
		h := backendHealth(t, cpB.Addr)
		return h[addrA].GetHealthyDataplanes() == 2 && h[addrB].GetHealthyDataplanes() == 2
	}, "both servers not Healthy on both workers through replica B: %v", backendHealth(t, cpB.Addr))
	for _, h := range backendHealth(t, cpB.Addr) {
		if len(h.GetDataplanes()) != 0 || h.GetReportingDataplanes() != 2 || h.GetHealthyDataplanes() != 2 || h.GetLastProbe() == nil {
			t.Fatalf("summary of %s: %v; want 2 of 2 healthy, a last probe, no views", h.GetAddress(), h)
		}
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		for addr, h := range backendHealthViews(t, cpB.Addr) {
			var newest time.Time
			ids := []string{}
			for _, v := range h.GetDataplanes() {
				ids = append(ids, v.GetDataplane())
				if v.GetLastProbe().AsTime().After(newest) {
					newest = v.GetLastProbe().AsTime()
				}
			}
			if strings.Join(ids, ",") != "dp-1,dp-2" || !h.GetLastProbe().AsTime().Equal(newest) {
				t.Logf("%s with dataplanes: views of %v, newest probe %s, summary's %s", addr, ids, newest, h.GetLastProbe().AsTime())
				return false
			}
		}
		return true
	}, "BackendHealth with dataplanes lacks the workers' views or their newest probe")

	// B fails its probes everywhere: Unhealthy with the reason, and no traffic reaches it.
	b.setSick("*", true)
	cptest.Eventually(t, 15*time.Second, func() bool {
		return backendHealth(t, cpA.Addr)[addrB].GetHealth() == "Unhealthy"
	}, "B not Unhealthy: %v", backendHealth(t, cpA.Addr)[addrB])
	hb := backendHealth(t, cpB.Addr)[addrB]
	if hb.GetReason() != "http-status-code-mismatch" || !strings.Contains(hb.GetHealthProbeLog(), "Received:503") {
		t.Fatalf("replica B's view of B: %s %q %q", hb.GetHealth(), hb.GetReason(), hb.GetHealthProbeLog())
	}
	cptest.Eventually(t, 5*time.Second, func() bool { return !w1.w.Health().Tracker(keyOf(addrB)).Usable() }, "dp-1 still routes to B")
	for range 6 {
		if body, code := get("127.0.0.2", listen, "/"); code != 200 || body != "A" {
			t.Fatalf("with B unhealthy: GET = %d %q, want A only", code, body)
		}
	}

	// The whole pool down: 502 saying so.
	a.setSick("*", true)
	cptest.Eventually(t, 15*time.Second, func() bool { _, code := get("127.0.0.2", listen, "/"); return code == 502 }, "no 502 with the pool down")
	if body, _ := get("127.0.0.2", listen, "/"); !strings.Contains(body, "no healthy backend") {
		t.Fatalf("502 body %q does not say no healthy backend was available", body)
	}

	// Workers disagree: A sick only for dp-2's probes (they come from dp-2's address).
	a.setSick("*", false)
	b.setSick("*", false)
	cptest.Eventually(t, 15*time.Second, func() bool {
		h := backendHealth(t, cpA.Addr)
		return h[addrA].GetHealthyDataplanes() == 2 && h[addrB].GetHealthyDataplanes() == 2
	}, "servers did not recover on both workers: %v", backendHealth(t, cpA.Addr))
	a.setSick("127.0.0.3", true)
	cptest.Eventually(t, 15*time.Second, func() bool {
		return backendHealth(t, cpA.Addr)[addrA].GetHealth() == "Partial" && backendHealth(t, cpB.Addr)[addrA].GetHealth() == "Partial"
	}, "A not Partial on both replicas: %v", backendHealth(t, cpA.Addr)[addrA])
	partial := backendHealth(t, cpB.Addr)[addrA]
	if !strings.Contains(partial.GetHealthProbeLog(), "healthy on dp-1") || !strings.Contains(partial.GetHealthProbeLog(), "unhealthy on dp-2") {
		t.Fatalf("Partial message does not say who sees what: %q", partial.GetHealthProbeLog())
	}

	// History: dp-2 saw A go Healthy -> Unhealthy.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hist, err := fgv1.NewConfigServiceClient(cptest.Dial(t, cpA.Addr)).BackendHealthHistory(ctx, &fgv1.BackendHealthHistoryRequest{Gateway: "appgw1", Address: addrA})
	if err != nil {
		t.Fatal(err)
	}
	var sawDown bool
	for _, tr := range hist.GetTransitions() {
		if tr.GetDataplane() == "dp-2" && tr.GetTo() == "Unhealthy" && tr.GetReason() == "http-status-code-mismatch" {
			sawDown = true
		}
	}
	if !sawDown {
		t.Fatalf("history of A lacks dp-2's Healthy->Unhealthy: %v", hist.GetTransitions())
	}

	// Workers stop: no fresh reports, Unknown.
	w1.stop()
	w2.stop()
	cptest.Eventually(t, 15*time.Second, func() bool {
		h := backendHealth(t, cpA.Addr)
		return h[addrA].GetHealth() == "Unknown" && h[addrB].GetHealth() == "Unknown"
	}, "servers not Unknown after the workers stopped: %v", backendHealth(t, cpA.Addr))
}

func keyOf(addr string) health.Key { return health.Key{Settings: "s1", Address: addr} }
