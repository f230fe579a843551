package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/agent"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/worker"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// backend is a real HTTP server on loopback that names itself in every answer.
func backend(t *testing.T, name string) (host string, port int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	h, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	fmt.Sscan(p, &port)
	return h, port
}

// freePort returns a TCP port free on every loopback address used here.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func gatewayDoc(listenPort, backendPort int) string {
	return fmt.Sprintf(`
name: appgw1
httpListeners: [{name: web, port: %d}]
backendAddressPools: [{name: pool1, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s1, port: %d}]
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, listenPort, backendPort)
}

type runningWorker struct {
	id     string
	bind   string
	w      *worker.Worker
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func startWorker(t *testing.T, cpAddr, id, bind, stateDir string) *runningWorker {
	t.Helper()
	log := cptest.Logger(t)
	w := worker.New(worker.Config{BindAddress: bind, ShutdownGrace: 2 * time.Second, Log: log})
	conn := cptest.Dial(t, cpAddr)
	a := agent.New(agent.Config{
		Gateway: "appgw1", ID: id, Address: bind, StateDir: stateDir, Health: w,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Log: log,
	}, conn, w)
	if err := a.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{id: id, bind: bind, w: w, a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(rw.stop)
	return rw
}

func (rw *runningWorker) stop() {
	if rw.cancel == nil {
		return
	}
	rw.cancel()
	<-rw.done
	rw.cancel = nil
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = rw.w.Shutdown(ctx)
}

// get sends one request through a worker and returns the body ("" and the error text on failure).
func get(addr string, port int, path string) (string, int) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d%s", addr, port, path))
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func listDataPlanes(t *testing.T, cpAddr string) map[string]*fgv1.DataPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := fgv1.NewConfigServiceClient(cptest.Dial(t, cpAddr)).ListDataPlanes(ctx, &fgv1.ListDataPlanesRequest{Gateway: "appgw1"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fgv1.DataPlane{}
	for _, dp := range resp.GetDataplanes() {
		out[dp.GetId()] = dp
	}
	return out
}

// Config reaches two workers, both ACK it and serve it; a second version replaces the first on both.
func TestConfigReachesTwoWorkersAndTheyAck(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	conn := cptest.Dial(t, cp.Addr)
	_, portA := backend(t, "A")
	_, portB := backend(t, "B")
	listen := freePort(t)

	w1 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	w2 := startWorker(t, cp.Addr, "dp-2", "127.0.0.3", "")
	rev1 := cptest.Apply(t, conn, gatewayDoc(listen, portA))

	for _, w := range []*runningWorker{w1, w2} {
		cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev1 }, "%s applied %d, want %d", w.id, w.a.Applied(), rev1)
		if body, code := get(w.bind, listen, "/x"); code != 200 || body != "A /x" {
			t.Fatalf("%s: GET = %d %q, want 200 \"A /x\"", w.id, code, body)
		}
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		dps := listDataPlanes(t, cp.Addr)
		return len(dps) == 2 && dps["dp-1"].GetAppliedVersion() == rev1 && dps["dp-2"].GetAppliedVersion() == rev1 &&
			dps["dp-1"].GetDesiredVersion() == rev1 && dps["dp-1"].GetControlplane() == "cp-a"
	}, "ListDataPlanes does not show both workers at version %d: %v", rev1, listDataPlanes(t, cp.Addr))

	rev2 := cptest.Apply(t, conn, gatewayDoc(listen, portB))
	for _, w := range []*runningWorker{w1, w2} {
		cptest.Eventually(t, 10*time.Second, func() bool { body, _ := get(w.bind, listen, "/y"); return body == "B /y" }, "%s does not serve version %d", w.id, rev2)
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		dps := listDataPlanes(t, cp.Addr)
		return dps["dp-1"].GetAppliedVersion() == rev2 && dps["dp-2"].GetAppliedVersion() == rev2
	}, "ACKs of version %d not recorded", rev2)
}

// A worker that cannot apply a config (its new port is taken) NACKs it and keeps serving the old one;
// the control plane shows the rejection. A later good config clears it.
func TestNackKeepsOldConfig(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	conn := cptest.Dial(t, cp.Addr)
	_, portA := backend(t, "A")
	_, portB := backend(t, "B")
	listen := freePort(t)
	w := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	rev1 := cptest.Apply(t, conn, gatewayDoc(listen, portA))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev1 }, "version %d not applied", rev1)

	// Occupy another port on the worker's address, then point the listener there.
	taken, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	rev2 := cptest.Apply(t, conn, gatewayDoc(takenPort, portB))
	cptest.Eventually(t, 10*time.Second, func() bool {
		dp := listDataPlanes(t, cp.Addr)["dp-1"]
		return dp.GetRejectedVersion() == rev2 && strings.Contains(dp.GetLastError(), "address already in use")
	}, "NACK of version %d not recorded: %v", rev2, listDataPlanes(t, cp.Addr)["dp-1"])
	if dp := listDataPlanes(t, cp.Addr)["dp-1"]; dp.GetAppliedVersion() != rev1 {
		t.Fatalf("applied version = %d after NACK, want %d", dp.GetAppliedVersion(), rev1)
	}
	if body, code := get("127.0.0.2", listen, "/still"); code != 200 || body != "A /still" {
		t.Fatalf("old config not served after NACK: %d %q", code, body)
	}
	if w.a.Applied() != rev1 {
		t.Fatalf("agent applied %d, want %d", w.a.Applied(), rev1)
	}

	rev3 := cptest.Apply(t, conn, gatewayDoc(listen, portB))
	cptest.Eventually(t, 10*time.Second, func() bool {
		dp := listDataPlanes(t, cp.Addr)["dp-1"]
		return dp.GetAppliedVersion() == rev3 && dp.GetLastError() == ""
	}, "version %d not acked after the NACK", rev3)
}

// The control plane restarts while traffic flows: no request fails, and the worker reconnects and
// picks up a config applied after the restart.
func TestControlPlaneRestartKeepsServing(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	_, portA := backend(t, "A")
	_, portB := backend(t, "B")
	listen := freePort(t)
	w := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	rev1 := cptest.Apply(t, cptest.Dial(t, cp.Addr), gatewayDoc(listen, portA))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev1 }, "version %d not applied", rev1)

	var failures, served atomic.Int64
	stop := make(chan struct{})
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, code := get("127.0.0.2", listen, "/"); code != 200 {
				failures.Add(1)
			}
			served.Add(1)
		}
	}()
	cp.Stop()
	cptest.Eventually(t, 5*time.Second, func() bool { return !w.a.Connected() }, "agent still connected after control-plane stop")
	before := served.Load()
	cptest.Eventually(t, 5*time.Second, func() bool { return served.Load() > before+20 }, "no traffic served while the control plane is down")
	cp.Restart()
	cptest.Eventually(t, 10*time.Second, w.a.Connected, "agent did not reconnect")
	rev2 := cptest.Apply(t, cptest.Dial(t, cp.Addr), gatewayDoc(listen, portB))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev2 }, "version %d not applied after restart", rev2)
	close(stop)
	<-trafficDone
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed across the control-plane restart", failures.Load(), served.Load())
	}
}

// A worker restarted while the control plane is down serves its last good config from the state dir.
func TestWorkerRestartFromStateDirWithControlPlaneDown(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	_, portA := backend(t, "A")
	listen := freePort(t)
	stateDir := t.TempDir()
	w := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", stateDir)
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), gatewayDoc(listen, portA))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "version %d not applied", rev)

	cp.Stop()
	w.stop()
	if _, code := get("127.0.0.2", listen, "/"); code == 200 {
		t.Fatal("stopped worker still serves")
	}
	w2 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", stateDir)
	if w2.a.Applied() != rev {
		t.Fatalf("restarted worker serves version %d, want %d from its state dir", w2.a.Applied(), rev)
	}
	if body, code := get("127.0.0.2", listen, "/back"); code != 200 || body != "A /back" {
		t.Fatalf("restarted worker: GET = %d %q", code, body)
	}
	// And when the control plane returns, it reconnects and is recorded at that version.
	cp.Restart()
	cptest.Eventually(t, 10*time.Second, func() bool {
		return listDataPlanes(t, cp.Addr)["dp-1"].GetAppliedVersion() == rev
	}, "restarted worker not registered at version %d", rev)
}

// Deleting the gateway closes the worker's listeners.
func TestDeleteGatewayStopsServing(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	conn := cptest.Dial(t, cp.Addr)
	_, portA := backend(t, "A")
	listen := freePort(t)
	w := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	rev := cptest.Apply(t, conn, gatewayDoc(listen, portA))
	cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "version %d not applied", rev)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := fgv1.NewConfigServiceClient(conn).DeleteGateway(ctx, &fgv1.DeleteGatewayRequest{Name: "appgw1"}); err != nil {
		t.Fatal(err)
	}
	cptest.Eventually(t, 10*time.Second, func() bool { _, code := get("127.0.0.2", listen, "/"); return code == 0 }, "listener still open after delete")
}
