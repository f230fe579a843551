package proxy_test

import (
	"io"
	"net"
	"net/http"
	"strings"
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

// At a drain's deadline the requests still in flight to the server are cut: one still waiting for
// the response header gets a 502 saying so, one whose body is streaming is cut short. Requests
// that start afterwards (to the server that replaced it) are served.
func TestDrainDeadlineCutsRequests(t *testing.T) {
	started := make(chan string, 2)
	old := backend(t, "127.0.0.73", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "half")
			w.(http.Flusher).Flush()
		}
		started <- r.URL.Path
		<-r.Context().Done() // only the cut ends it
	})
	_, port, _ := net.SplitHostPort(old)
	l, err := net.Listen("tcp", "127.0.0.74:"+port)
	if err != nil {
		t.Fatal(err)
	}
	next := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "new") })}
	go next.Serve(l)
	t.Cleanup(func() { next.Close() })
	withDrain := func(addrs ...string) string {
		return strings.Replace(gateway(t, 20, addrs...), "requestTimeout: 20}",
			"requestTimeout: 20, connectionDraining: {enabled: true, drainTimeoutInSec: 1}}", 1)
	}
	p, url := front(t, withDrain(old))
	type answer struct {
		code int
		body string
		err  error
	}
	send := func(path string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Get(url + path)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- answer{resp.StatusCode, string(b), err}
		}()
		return ch
	}
	header, body := send("/header"), send("/body")
	for range 2 {
		<-started
	}
	gw, err := config.Decode([]byte(withDrain(l.Addr().String())))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if _, err := p.Apply(2, gw, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	wait := func(ch <-chan answer) answer {
		select {
		case a := <-ch:
			return a
		case <-time.After(15 * time.Second):
			t.Fatal("request not cut after the drain deadline")
			return answer{}
		}
	}
	if a := wait(header); a.code != http.StatusBadGateway || !strings.Contains(a.body, "was drained") {
		t.Errorf("request waiting for its header: %d %q (err %v), want 502 naming the drain", a.code, a.body, a.err)
	}
	// The gateway had begun the response (perhaps still in its buffer): the client sees it break off.
	if a := wait(body); a.err == nil {
		t.Errorf("streaming request: %d %q, want the response cut short", a.code, a.body)
	}
	cptest.Eventually(t, 5*time.Second, func() bool {
		reps := p.DrainReports()
		return len(reps) == 1 && reps[0].GetDone() && reps[0].GetCutConnections() == 2
	}, "drain report does not say 2 connections were cut: %v", p.DrainReports())
	if b, code := get(t, url+"/"); code != http.StatusOK || b != "new" {
		t.Errorf("request after the drain: %d %q, want 200 from the new server", code, b)
	}
}
