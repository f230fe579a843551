package agent_test

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
)

// Horizontal scaling under load: two workers serve traffic, a third and a fourth join (they get the
// configuration and take traffic), one leaves gracefully (taken out of the client rotation first,
// as a load balancer would), and no request fails; BackendHealth counts the workers at each step.
func TestHorizontalScalingUnderLoad(t *testing.T) {
	etcd := cptest.Etcd(t)
	cp := cptest.Start(t, etcd, "cp-a")
	a := startSwitchable(t, "127.0.0.81:0", "A")
	_, port, _ := net.SplitHostPort(a.addr)
	startSwitchable(t, "127.0.0.82:"+port, "B")
	var p int
	fmt.Sscan(port, &p)
	listen := freePort(t)
	binds := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	workers := map[string]*runningWorker{}
	for i, b := range binds[:2] {
		workers[b] = startWorker(t, cp.Addr, fmt.Sprint("dp-", i+1), b, "")
	}
	rev := cptest.Apply(t, cptest.Dial(t, cp.Addr), healthDoc(listen, p, 2, "127.0.0.81", "127.0.0.82"))
	for _, w := range workers {
		cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "%s did not apply", w.id)
	}
	countWorkers := func(n int) {
		t.Helper()
		cptest.Eventually(t, 15*time.Second, func() bool {
			h := backendHealth(t, cp.Addr)
			return len(h) == 2 && h["127.0.0.81:"+port].GetHealthyDataplanes() == int32(n) &&
				h["127.0.0.82:"+port].GetReportingDataplanes() == int32(n)
		}, "BackendHealth does not count %d workers: %v", n, backendHealth(t, cp.Addr))
	}
	countWorkers(2)

	// Load: clients spread requests over the workers in rotation.
	var mu sync.Mutex
	rotation := []string{binds[0], binds[1]}
	served := map[string]*atomic.Int64{}
	for _, b := range binds {
		served[b] = new(atomic.Int64)
	}
	var failures, total atomic.Int64
	var failMsg atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < 1_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				b := rotation[i%len(rotation)]
				mu.Unlock()
				body, code := get(b, listen, "/")
				total.Add(1)
				if code != 200 {
					failures.Add(1)
					failMsg.Store(fmt.Sprintf("%s: %d %q", b, code, body))
					continue
				}
				served[b].Add(1)
			}
		}()
	}
	for i, b := range binds[2:] {
		started := time.Now()
		w := startWorker(t, cp.Addr, fmt.Sprint("dp-", i+3), b, "")
		workers[b] = w
		cptest.Eventually(t, 10*time.Second, func() bool { return w.a.Applied() == rev }, "%s did not get the configuration", w.id)
		t.Logf("%s got the configuration %s after starting", w.id, time.Since(started).Round(time.Millisecond))
		mu.Lock()
		rotation = append(rotation, b)
		mu.Unlock()
		cptest.Eventually(t, 10*time.Second, func() bool { return served[b].Load() > 20 }, "%s takes no traffic", w.id)
		countWorkers(3 + i)
	}

	// dp-1 leaves gracefully: out of the rotation, then shut down.
	mu.Lock()
	rotation = rotation[1:]
	mu.Unlock()
	time.Sleep(100 * time.Millisecond) // requests already sent to it finish
	workers[binds[0]].stop()
	countWorkers(3)
	before := total.Load()
	cptest.Eventually(t, 10*time.Second, func() bool { return total.Load() > before+100 }, "traffic stalled after a worker left")
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed while scaling; last: %v", n, total.Load(), failMsg.Load())
	}
	t.Logf("%d requests served while scaling 2 -> 4 -> 3 workers", total.Load())
}
