package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/ctl"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// drainBackend answers with its name; /slow waits for release; /ws upgrades and echoes until closed.
type drainBackend struct {
	name    string
	addr    string
	release chan struct{}
	slow    chan struct{} // a /slow request arrived
}

func startDrainBackend(t *testing.T, addr, name string) *drainBackend {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &drainBackend{name: name, addr: l.Addr().String(), release: make(chan struct{}), slow: make(chan struct{}, 8)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			b.slow <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
		case "/ws":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			io.Copy(conn, brw)
			return
		}
		io.WriteString(w, name)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return b
}

// openWS opens an upgraded connection through a worker with a cookie and checks it echoes.
func openWS(t *testing.T, bind string, port int, cookie string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", net.JoinHostPort(bind, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nCookie: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", cookie)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade through %s: %v %v", bind, resp, err)
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through %s: %q %v", bind, buf, err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

func getCookie(bind string, port int, path, cookie string) (string, int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s:%d%s", bind, port, path), nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return err.Error(), 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	set := ""
	if v := resp.Header.Values("Set-Cookie"); len(v) > 0 {
		set = strings.SplitN(v[0], ";", 2)[0]
	}
	return string(b), resp.StatusCode, set
}

func drainStatus(t *testing.T, cp string) map[string]*fgv1.DrainingServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := fgv1.NewConfigServiceClient(cptest.Dial(t, cp)).DrainStatus(ctx, &fgv1.DrainStatusRequest{Gateway: "appgw1"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fgv1.DrainingServer{}
	for _, s := range resp.GetServers() {
		out[s.GetAddress()] = s
	}
	return out
}

// gatewayctl runs the real CLI in-process.
func gatewayctl(cp string, args ...string) (int, string) {
	var out bytes.Buffer
	args = append(append([]string{"--server", cp, "--gateway", "appgw1", "--timeout", "60s"}, cptest.GatewayctlFlags(cp)...), args...)
	code := ctl.Run(context.Background(), args,
		ctl.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out})
	return code, out.String()
}

func drainDoc(listen int, port string, drainSeconds int, ips ...string) string {
	var addrs []string
	for _, ip := range ips {
		addrs = append(addrs, fmt.Sprintf("{ipAddress: %s}", ip))
	}
	return fmt.Sprintf(`
name: appgw1
httpListeners: [{name: web, port: %d}]
backendAddressPools: [{name: pool1, backendAddresses: [%s]}]
backendHttpSettingsCollection:
  - {name: s1, port: %s, cookieBasedAffinity: Enabled, connectionDraining: {enabled: true, drainTimeoutInSec: %d}}
requestRoutingRules: [{name: r1, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool1, backendHttpSettings: s1}]
`, listen, strings.Join(addrs, ", "), port, drainSeconds)
}

// A server removed from its pool drains on both workers: no new requests reach it, a request in
// flight completes, its affinity clients still reach it, the fleet-wide counts fall, an upgraded
// connection still open at the deadline is closed, and `drain status --wait` returns then with 3.
func TestRemovedServerDrains(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	a := startDrainBackend(t, "127.0.0.61:0", "A")
	_, port, _ := net.SplitHostPort(a.addr)
	startDrainBackend(t, "127.0.0.62:"+port, "B")
	listen := freePort(t)
	w1 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	w2 := startWorker(t, cp.Addr, "dp-2", "127.0.0.3", "")
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), drainDoc(listen, port, 3, "127.0.0.61", "127.0.0.62"))
	for _, w := range []*runningWorker{w1, w2} {
		cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "%s did not apply", w.id)
	}
	// A client pinned to A by its cookie.
	var cookieA string
	for i := 0; i < 10 && cookieA == ""; i++ {
		if body, _, set := getCookie("127.0.0.2", listen, "/", ""); body == "A" {
			cookieA = set
		}
	}
	if cookieA == "" {
		t.Fatal("no request reached A")
	}
	slowDone := make(chan int, 1)
	go func() { _, code, _ := getCookie("127.0.0.2", listen, "/slow", cookieA); slowDone <- code }()
	ws := openWS(t, "127.0.0.3", listen, cookieA)
	waitSlow(t, a)

	waitDone := make(chan int, 1)
	var waitOut string
	var mu sync.Mutex
	cptest.Apply(t, cptest.Dial(t, cp.Addr), drainDoc(listen, port, 3, "127.0.0.62"))
	addrA := "127.0.0.61:" + port
	cptest.Eventually(t, 10*time.Second, func() bool {
		d := drainStatus(t, cp.Addr)[addrA]
		return d != nil && !d.GetDone() && d.GetActiveConnections() == 2 && d.GetDataplanes() == 2
	}, "drain of A not reported with 2 connections on 2 workers: %v", drainStatus(t, cp.Addr))
	drainStarted := time.Now()
	go func() {
		code, out := gatewayctl(cp.Addr, "drain", "status", "--wait")
		mu.Lock()
		waitOut = out
		mu.Unlock()
		waitDone <- code
	}()
	h := backendHealth(t, cp.Addr)[addrA]
	if h.GetHealth() != "Draining" || h.GetDrainingConnections() != 2 || h.GetDrainDeadline() == nil {
		t.Fatalf("BackendHealth of A while draining: %v", h)
	}
	for i := range 10 {
		bind := []string{"127.0.0.2", "127.0.0.3"}[i%2]
		if body, code, _ := getCookie(bind, listen, "/", ""); code != 200 || body != "B" {
			t.Fatalf("new request %d through %s reached %q (%d), want B only", i, bind, body, code)
		}
	}
	if body, _, _ := getCookie("127.0.0.3", listen, "/", cookieA); body != "A" {
		t.Fatalf("a request with A's affinity cookie went to %q during the drain, want A", body)
	}
	close(a.release)
	select {
	case code := <-slowDone:
		if code != 200 {
			t.Fatalf("in-flight request ended with %d, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request did not complete")
	}
	cptest.Eventually(t, 5*time.Second, func() bool {
		return drainStatus(t, cp.Addr)[addrA].GetActiveConnections() == 1
	}, "fleet count did not fall to 1 after the request finished: %v", drainStatus(t, cp.Addr)[addrA])
	select {
	case code := <-waitDone:
		t.Fatalf("drain status --wait returned %d before the deadline", code)
	default:
	}
	// The WebSocket is still open; the deadline closes it.
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ws.Read(make([]byte, 1)); err == nil {
		t.Fatal("upgraded connection got data instead of being closed at the deadline")
	}
	if since := time.Since(drainStarted); since > 8*time.Second {
		t.Fatalf("upgraded connection closed %s after the drain started, deadline was 3s", since)
	}
	select {
	case code := <-waitDone:
		mu.Lock()
		defer mu.Unlock()
		if code != 3 || !strings.Contains(waitOut, "Drained") {
			t.Fatalf("drain status --wait = %d, want 3 (connections cut):\n%s", code, waitOut)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("drain status --wait did not return after the deadline")
	}
	d := drainStatus(t, cp.Addr)[addrA]
	if !d.GetDone() || d.GetCutConnections() != 1 || d.GetActiveConnections() != 0 {
		t.Fatalf("final drain status of A: %v", d)
	}
}

// An operator's drain: stored in etcd, it survives a control-plane restart mid-drain; a drain whose
// connections finish in time ends clean (`drain status --wait` exits 0); undrain brings it back.
func TestOperatorDrainSurvivesControlPlaneRestart(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	a := startDrainBackend(t, "127.0.0.63:0", "A")
	_, port, _ := net.SplitHostPort(a.addr)
	startDrainBackend(t, "127.0.0.64:"+port, "B")
	listen := freePort(t)
	w1 := startWorker(t, cp.Addr, "dp-1", "127.0.0.2", "")
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), drainDoc(listen, port, 60, "127.0.0.63", "127.0.0.64"))
	cptest.Eventually(t, 10*time.Second, func() bool { return w1.a.Applied() == rev }, "not applied")
	var cookieA string
	for i := 0; i < 10 && cookieA == ""; i++ {
		if body, _, set := getCookie("127.0.0.2", listen, "/", ""); body == "A" {
			cookieA = set
		}
	}
	slowDone := make(chan int, 1)
	go func() { _, code, _ := getCookie("127.0.0.2", listen, "/slow", cookieA); slowDone <- code }()
	waitSlow(t, a)

	if code, out := gatewayctl(cp.Addr, "drain", "--pool", "pool1", "--address", "127.0.0.63", "--timeout", "30s"); code != 0 {
		t.Fatalf("drain: %d %s", code, out)
	}
	addrA := "127.0.0.63:" + port
	cptest.Eventually(t, 10*time.Second, func() bool {
		d := drainStatus(t, cp.Addr)[addrA]
		return d != nil && d.GetAdmin() && !d.GetDone() && d.GetActiveConnections() == 1
	}, "operator drain not reported: %v", drainStatus(t, cp.Addr))

	cp.Restart()
	cptest.Eventually(t, 15*time.Second, func() bool {
		d := drainStatus(t, cp.Addr)[addrA]
		return d != nil && !d.GetDone() && d.GetActiveConnections() == 1
	}, "drain lost across the control-plane restart: %v", drainStatus(t, cp.Addr))
	for range 6 {
		if body, _, _ := getCookie("127.0.0.2", listen, "/", ""); body != "B" {
			t.Fatalf("new request reached %q during the operator drain", body)
		}
	}
	close(a.release)
	if code := <-slowDone; code != 200 {
		t.Fatalf("in-flight request ended with %d", code)
	}
	if code, out := gatewayctl(cp.Addr, "drain", "status", "--wait"); code != 0 || !strings.Contains(out, "Drained") {
		t.Fatalf("drain status --wait = %d, want 0 (drained clean):\n%s", code, out)
	}
	if code, out := gatewayctl(cp.Addr, "undrain", "--pool", "pool1", "--address", "127.0.0.63"); code != 0 {
		t.Fatalf("undrain: %d %s", code, out)
	}
	cptest.Eventually(t, 10*time.Second, func() bool {
		body, _, _ := getCookie("127.0.0.2", listen, "/", "")
		return body == "A"
	}, "A gets no traffic after undrain")
}

func waitSlow(t *testing.T, b *drainBackend) {
	t.Helper()
	select {
	case <-b.slow:
	case <-time.After(10 * time.Second):
		t.Fatalf("the slow request did not reach %s", b.name)
	}
}
