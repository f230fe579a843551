package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fleetgate/fleetgate/agent"
	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
	"github.com/fleetgate/fleetgate/dataplane/worker"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// replica is a control-plane replica on its own loopback address, whose server certificate names
// that address only (so a worker that checked the wrong name against it would fail its handshake).
// kill cuts every connection and stops accepting, as a crash would; shutdown hands workers off.
type replica struct {
	name, addr string
	srv        *server.Server
	lis        *trackingListener
	served     chan struct{}
	stopOnce   sync.Once
}

func startReplica(t *testing.T, etcd, name, ip string) *replica {
	t.Helper()
	return startReplicaNamed(t, etcd, name, ip, ip)
}

// startReplicaNamed starts a replica on ip whose certificate names hosts only.
func startReplicaNamed(t *testing.T, etcd, name, ip string, hosts ...string) *replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert := cptest.Certificate(t, pki.Request{CommonName: "cp-" + ip, Hosts: hosts})
	srv, err := server.New(ctx, server.Config{
		EtcdEndpoints: []string{etcd}, Replica: name, LeaseTTL: 2, Log: cptest.Logger(t),
		TLS: pki.ServerTLSFromMemory(cert, cptest.CA(t).Pool()),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	r := &replica{name: name, addr: l.Addr().String(), srv: srv, lis: &trackingListener{Listener: l}, served: make(chan struct{})}
	go func() {
		defer close(r.served)
		_ = srv.Serve(r.lis)
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.stopOnce.Do(func() {
		r.srv.Stop()
		<-r.served
	})
}

// kill drops every connection and the listener at once: the workers see their streams break, with
// no word from the replica.
func (r *replica) kill() { r.lis.kill() }

// shutdown hands the replica's workers off and stops it.
func (r *replica) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown of %s: %v", r.name, err)
	}
	r.stop()
}

// trackingListener remembers the connections it accepted, so that they can all be cut.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	killed bool
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns = append(l.conns, c)
	return c, nil
}

func (l *trackingListener) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	l.Listener.Close()
	for _, c := range l.conns {
		c.Close()
	}
}

// startFailoverWorker starts a worker whose agent is given every replica's address, dialled as the
// dataplane binary dials them (agent.Dial), with the shared data-plane certificate.
func startFailoverWorker(t *testing.T, id, bind string, backoff time.Duration, cps []*replica, opts ...grpc.DialOption) *runningWorker {
	t.Helper()
	log := cptest.Logger(t)
	var addrs []string
	for _, cp := range cps {
		addrs = append(addrs, cp.addr)
	}
	cert := cptest.Certificate(t, pki.Request{CommonName: pki.DataPlaneName, Roles: []string{pki.RoleDataPlane}, AnyDataPlane: true})
	conn, err := agent.Dial(addrs, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cptest.ClientTLS(t, &cert)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w := worker.New(worker.Config{BindAddress: bind, ShutdownGrace: 2 * time.Second, Log: log})
	a := agent.New(agent.Config{
		Gateway: "appgw1", ID: id, Address: bind, Health: w,
		BackoffBase: backoff, BackoffMax: backoff, Log: log,
	}, conn, w)
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWorker{id: id, bind: bind, w: w, a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rw.done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(rw.stop)
	return rw
}

// dialReplica is an admin connection to one replica (its own name checked).
func dialReplica(t *testing.T, r *replica) *grpc.ClientConn { return cptest.Dial(t, r.addr) }

// holder returns the replica the worker is recorded on, and the other one, once the fleet view
// shows the worker at version rev.
func holder(t *testing.T, id string, rev int64, a, b *replica) (on, other *replica) {
	t.Helper()
	var dp *fgv1.DataPlane
	cptest.Eventually(t, 15*time.Second, func() bool {
		dp = listDataPlanes(t, a.addr)[id]
		return dp.GetAppliedVersion() == rev && (dp.GetControlplane() == a.name || dp.GetControlplane() == b.name)
	}, "%s not recorded at version %d: %v", id, rev, dp)
	if dp.GetControlplane() == a.name {
		return a, b
	}
	return b, a
}

// traffic sends requests through a worker until stopped, counting failures.
type traffic struct {
	failures, served atomic.Int64
	stopCh, done     chan struct{}
	last             atomic.Value
}

func startTraffic(bind string, port int) *traffic {
	tr := &traffic{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for i := 0; i < 1_000_000; i++ {
			select {
			case <-tr.stopCh:
				return
			default:
			}
			if body, code := get(bind, port, "/"); code != 200 {
				tr.failures.Add(1)
				tr.last.Store(fmt.Sprintf("%d %q", code, body))
			}
			tr.served.Add(1)
		}
	}()
	return tr
}

func (tr *traffic) stop(t *testing.T) {
	t.Helper()
	close(tr.stopCh)
	<-tr.done
	if n := tr.failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed (last: %v)", n, tr.served.Load(), tr.last.Load())
	}
	if tr.served.Load() == 0 {
		t.Fatal("no request served")
	}
}

// A worker given both replicas' addresses: the replica it is on dies (connections cut, no word), and
// it lands on the other one by itself, is recorded there and ACKs the next apply; traffic never fails.
func TestWorkerFailsOverWhenItsReplicaDies(t *testing.T) {
	etcd := cptest.Etcd(t)
	cpA := startReplica(t, etcd, "cp-a", "127.0.0.71")
	cpB := startReplica(t, etcd, "cp-b", "127.0.0.72")
	_, portA := backend(t, "A")
	listen := freePort(t)
	w := startFailoverWorker(t, "dp-1", "127.0.0.2", 20*time.Millisecond, []*replica{cpA, cpB})
	rev1 := cptest.Apply(t, dialReplica(t, cpA), gatewayDoc(listen, portA))
	on, other := holder(t, "dp-1", rev1, cpA, cpB)

	tr := startTraffic("127.0.0.2", listen)
	on.kill()
	cptest.Eventually(t, 15*time.Second, func() bool {
		dp := listDataPlanes(t, other.addr)["dp-1"]
		return dp.GetControlplane() == other.name && w.a.Connected()
	}, "dp-1 did not move to %s: %v", other.name, listDataPlanes(t, other.addr)["dp-1"])
	_, portB := backend(t, "B")
	rev2 := cptest.Apply(t, dialReplica(t, other), gatewayDoc(listen, portB))
	cptest.Eventually(t, 15*time.Second, func() bool {
		dp := listDataPlanes(t, other.addr)["dp-1"]
		return dp.GetAppliedVersion() == rev2 && dp.GetControlplane() == other.name
	}, "the ACK of version %d is not recorded by %s: %v", rev2, other.name, listDataPlanes(t, other.addr)["dp-1"])
	if body, code := get("127.0.0.2", listen, "/x"); code != 200 || body != "B /x" {
		t.Fatalf("after failover: GET = %d %q, want version %d's backend B", code, body, rev2)
	}
	tr.stop(t)
	if n := w.a.Handoffs(); n != 0 {
		t.Fatalf("a crash counted as %d hand-offs", n)
	}
}

// A replica that shuts down hands its worker off: the worker moves to the other replica at once.
// Its reconnect backoff is an hour, so only the hand-off path (no backoff) can get it there before
// the test's bound; it ACKs the next apply there, and traffic never fails.
func TestShutdownHandsWorkersOffWithoutBackoff(t *testing.T) {
	etcd := cptest.Etcd(t)
	cpA := startReplica(t, etcd, "cp-a", "127.0.0.71")
	cpB := startReplica(t, etcd, "cp-b", "127.0.0.72")
	_, portA := backend(t, "A")
	listen := freePort(t)
	w := startFailoverWorker(t, "dp-1", "127.0.0.2", time.Hour, []*replica{cpA, cpB})
	rev1 := cptest.Apply(t, dialReplica(t, cpA), gatewayDoc(listen, portA))
	on, other := holder(t, "dp-1", rev1, cpA, cpB)

	tr := startTraffic("127.0.0.2", listen)
	on.shutdown(t)
	cptest.Eventually(t, 15*time.Second, func() bool { return w.a.Handoffs() >= 1 }, "replica %s stopped without handing dp-1 off", on.name)
	cptest.Eventually(t, 15*time.Second, func() bool {
		dp := listDataPlanes(t, other.addr)["dp-1"]
		return dp.GetControlplane() == other.name && w.a.Connected()
	}, "dp-1 did not move to %s: %v", other.name, listDataPlanes(t, other.addr)["dp-1"])
	_, portB := backend(t, "B")
	rev2 := cptest.Apply(t, dialReplica(t, other), gatewayDoc(listen, portB))
	cptest.Eventually(t, 15*time.Second, func() bool {
		return listDataPlanes(t, other.addr)["dp-1"].GetAppliedVersion() == rev2
	}, "the ACK of version %d is not recorded by %s", rev2, other.name)
	tr.stop(t)
	if n := w.a.Handoffs(); n > 4 {
		t.Fatalf("one hand-off took %d reconnects", n)
	}
}

// A worker that leaves: the fleet view shows it leaving (with its reason) and its health view stops
// counting at once, so a server only it saw healthy is Unhealthy (the other worker's view) and, when
// the last worker leaves, Unknown rather than stale. A leaving worker still serves its requests.
func TestLeavingWorkerStopsCounting(t *testing.T) {
	etcd := cptest.Etcd(t)
	logs := &lockedBuffer{}
	cp := cptest.StartWith(t, etcd, "cp-a", cptest.Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	srv := startSwitchable(t, "127.0.0.73:0", "S")
	_, port, _ := net.SplitHostPort(srv.addr)
	var p int
	fmt.Sscan(port, &p)
	listen := freePort(t)
	w1 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	w2 := startWorker(t, cp.Addr, "dp-2", "127.0.0.3", "")
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), healthDoc(listen, p, 1, "127.0.0.73"))
	addr := "127.0.0.73:" + port

	// dp-1 sees the server unhealthy, dp-2 healthy: Partial.
	srv.setSick("127.0.0.2", true)
	cptest.Eventually(t, 15*time.Second, func() bool {
		return backendHealth(t, cp.Addr)[addr].GetHealth() == "Partial"
	}, "server not Partial: %v", backendHealth(t, cp.Addr)[addr])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w2.a.Leave(ctx, "test: dp-2 scaled in"); err != nil {
		t.Fatalf("leave: %v", err)
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		dp := listDataPlanes(t, cp.Addr)["dp-2"]
		return dp.GetLeaving() && dp.GetLeavingReason() == "test: dp-2 scaled in"
	}, "dp-2 not shown leaving: %v", listDataPlanes(t, cp.Addr)["dp-2"])
	if dp := listDataPlanes(t, cp.Addr)["dp-1"]; dp.GetLeaving() {
		t.Fatalf("dp-1 shown leaving: %v", dp)
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		h := backendHealthViews(t, cp.Addr)[addr]
		return h.GetHealth() == "Unhealthy" && h.GetReportingDataplanes() == 1 && len(h.GetDataplanes()) == 1 && h.GetDataplanes()[0].GetDataplane() == "dp-1"
	}, "dp-2's view still counts: %v", backendHealthViews(t, cp.Addr)[addr])
	// Still connected and serving while it finishes.
	if !w2.a.Connected() || w2.a.Applied() != rev {
		t.Fatalf("leaving dp-2: connected %v, applied %d", w2.a.Connected(), w2.a.Applied())
	}
	if body, code := get("127.0.0.3", listen, "/"); code != 200 || body != "S" {
		t.Fatalf("leaving dp-2: GET = %d %q", code, body)
	}

	// The last worker leaves: nobody has a fresh view, Unknown.
	if err := w1.a.Leave(ctx, "test: dp-1 scaled in"); err != nil {
		t.Fatalf("leave: %v", err)
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		return backendHealth(t, cp.Addr)[addr].GetHealth() == "Unknown"
	}, "server not Unknown once every worker left: %v", backendHealth(t, cp.Addr)[addr])

	// A leaving worker's stream ending (cleanly, as the agent stops) removes it, logged as left.
	w2.stop()
	cptest.Eventually(t, 10*time.Second, func() bool {
		_, ok := listDataPlanes(t, cp.Addr)["dp-2"]
		return !ok
	}, "dp-2 still listed after it left")
	cptest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="worker left" dataplane=dp-2`)
	}, "no 'worker left' line for dp-2:\n%s", logs.String())
	for _, l := range []string{`msg="worker leaving" dataplane=dp-2 gateway=appgw1 reason="test: dp-2 scaled in"`, `msg="worker leaving" dataplane=dp-1`} {
		if !strings.Contains(logs.String(), l) {
			t.Errorf("log lacks %s", l)
		}
	}
	if strings.Contains(logs.String(), `msg="dataplane stream lost" dataplane=dp-2`) {
		t.Errorf("dp-2's end logged as a lost stream:\n%s", logs.String())
	}
}

// lockedBuffer collects a replica's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The --controlplane list: one address passes as given, several must be host:port and distinct.
func TestSplitAddresses(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		err  string
	}{
		{"127.0.0.1:7070", "127.0.0.1:7070", ""},
		{"dns:///cp:7070", "dns:///cp:7070", ""},
		{" a:1, b:2 ,", "a:1 b:2", ""},
		{"[::1]:7070,127.0.0.1:7070", "[::1]:7070 127.0.0.1:7070", ""},
		{"", "", "no control-plane address"},
		{"a:1,b", "", "want host:port"},
		{"a:1,a:1", "", "given twice"},
	} {
		got, err := agent.SplitAddresses(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SplitAddresses(%q) = %v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("SplitAddresses(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

// With --tls-server-name (grpc.WithAuthority), one name is checked in every replica's certificate,
// here certificates that name no address at all; failover works the same.
func TestOneServerNameForEveryReplica(t *testing.T) {
	const name = "cp.fleetgate.test"
	etcd := cptest.Etcd(t)
	cpA := startReplicaNamed(t, etcd, "cp-a", "127.0.0.71", name)
	cpB := startReplicaNamed(t, etcd, "cp-b", "127.0.0.72", name)
	admin := func(r *replica) fgv1.ConfigServiceClient {
		c := cptest.Certificate(t, pki.Request{CommonName: "cptest", Roles: []string{pki.RoleAdmin}})
		return fgv1.NewConfigServiceClient(cptest.DialAs(t, r.addr, &c, grpc.WithAuthority(name)))
	}
	fleet := func(r *replica) map[string]*fgv1.DataPlane {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := admin(r).ListDataPlanes(ctx, &fgv1.ListDataPlanesRequest{Gateway: "appgw1"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*fgv1.DataPlane{}
		for _, dp := range resp.GetDataplanes() {
			out[dp.GetId()] = dp
		}
		return out
	}
	_, portA := backend(t, "A")
	listen := freePort(t)
	w := startFailoverWorker(t, "dp-1", "127.0.0.2", 20*time.Millisecond, []*replica{cpA, cpB}, grpc.WithAuthority(name))
	gw, err := config.Decode([]byte(gatewayDoc(listen, portA)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := admin(cpA).ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	cptest.Eventually(t, 15*time.Second, func() bool { return w.a.Applied() == resp.GetRevision() }, "version %d not applied", resp.GetRevision())
	var on, other *replica
	cptest.Eventually(t, 15*time.Second, func() bool {
		switch fleet(cpA)["dp-1"].GetControlplane() {
		case "cp-a":
			on, other = cpA, cpB
		case "cp-b":
			on, other = cpB, cpA
		}
		return on != nil
	}, "dp-1 not registered")
	on.kill()
	cptest.Eventually(t, 15*time.Second, func() bool {
		return fleet(other)["dp-1"].GetControlplane() == other.name && w.a.Connected()
	}, "dp-1 did not move to %s", other.name)
}
