package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

const gatewayKey = "/fleetgate/v1/gateways/" + gatewayName

// etcdMember is one Debian etcd process.
type etcdMember struct {
	*proc
	name   string
	client string // http://ip:port
}

// startEtcdCluster starts one etcd member per IP, all in one cluster. With clientTLS (etcd's flags
// --cert-file, --key-file, ...), members serve their clients TLS only, on https:// URLs.
func startEtcdCluster(t *testing.T, bin string, ips []string, clientTLS ...string) []*etcdMember {
	t.Helper()
	type addr struct{ client, peer string }
	addrs := make([]addr, len(ips))
	scheme := "http"
	if len(clientTLS) > 0 {
		scheme = "https"
	}
	var initial []string
	for i, ip := range ips {
		addrs[i] = addr{fmt.Sprintf("%s://%s:%d", scheme, ip, freePort(t, ip)), fmt.Sprintf("http://%s:%d", ip, freePort(t, ip))}
		initial = append(initial, fmt.Sprintf("e%d=%s", i+1, addrs[i].peer))
	}
	token := fmt.Sprintf("e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	members := make([]*etcdMember, len(ips))
	for i := range ips {
		name := fmt.Sprintf("e%d", i+1)
		dir := filepath.Join(t.TempDir(), name)
		args := []string{"--name", name, "--data-dir", dir,
			"--listen-client-urls", addrs[i].client, "--advertise-client-urls", addrs[i].client,
			"--listen-peer-urls", addrs[i].peer, "--initial-advertise-peer-urls", addrs[i].peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token, "--log-level", "warn"}
		p := start(t, "etcd-"+name, bin, append(args, clientTLS...)...)
		members[i] = &etcdMember{proc: p, name: name, client: addrs[i].client}
	}
	return members
}

func endpointsOf(ms []*etcdMember) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.client
	}
	return out
}

func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	return etcdClientTLS(t, endpoints, nil)
}

// etcdClientTLS is etcdClient with TLS (nil: plaintext).
func etcdClientTLS(t *testing.T, endpoints []string, cfg *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitQuorum waits until a linearizable read through the endpoints succeeds.
func waitQuorum(t *testing.T, endpoints []string, timeout time.Duration) time.Duration {
	t.Helper()
	cli := etcdClient(t, endpoints)
	return eventually(t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(clientv3.WithRequireLeader(ctx), "/e2e/quorum")
		return err == nil
	}, "etcd %v has no quorum", endpoints)
}

// leaderIndex returns the index of the member that is the raft leader.
func leaderIndex(t *testing.T, ms []*etcdMember) int {
	t.Helper()
	cli := etcdClient(t, endpointsOf(ms))
	for range 50 {
		for i, m := range ms {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, m.client)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.GetMemberId() {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no etcd member says it is the leader")
	return -1
}

// storedMarker decodes the marker of a stored gateway value (its settings' hostName).
func storedMarker(val []byte) (int, error) {
	st := &fgv1.StoredGateway{}
	if err := proto.Unmarshal(val, st); err != nil {
		return -1, err
	}
	for _, s := range st.GetGateway().GetBackendHttpSettingsCollection() {
		if s.GetName() == "settings1" {
			return markerOf("host=" + s.GetHostName()), nil
		}
	}
	return -1, fmt.Errorf("no settings1 in the stored gateway")
}

// checkAcksInEtcd reads etcd's history: every acknowledged apply must be the gateway's value at the
// revision gatewayctl reported. It returns how many were checked.
func checkAcksInEtcd(t *testing.T, endpoints []string, acks []ack) int {
	t.Helper()
	cli := etcdClient(t, endpoints)
	for _, a := range acks {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, gatewayKey, clientv3.WithRev(a.revision))
		cancel()
		if err != nil {
			t.Errorf("acknowledged apply of marker %d at revision %d: read etcd at that revision: %v", a.marker, a.revision, err)
			continue
		}
		if len(resp.Kvs) != 1 {
			t.Errorf("LOST: acknowledged apply of marker %d at revision %d: no gateway at that revision", a.marker, a.revision)
			continue
		}
		kv := resp.Kvs[0]
		m, err := storedMarker(kv.Value)
		if err != nil || m != a.marker || kv.ModRevision != a.revision {
			t.Errorf("LOST: acknowledged apply of marker %d at revision %d: etcd holds marker %d written at revision %d (%v)",
				a.marker, a.revision, m, kv.ModRevision, err)
		}
	}
	return len(acks)
}

// gatewayAt returns the marker and modification revision of the gateway as of revision rev.
func gatewayAt(t *testing.T, endpoints []string, rev int64) (int, int64) {
	t.Helper()
	cli := etcdClient(t, endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, gatewayKey, clientv3.WithRev(rev))
	if err != nil {
		t.Fatalf("read gateway at revision %d: %v", rev, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("read gateway at revision %d: %d values", rev, len(resp.Kvs))
	}
	m, err := storedMarker(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return m, resp.Kvs[0].ModRevision
}

// checkStored checks that `gatewayctl get` shows the last acknowledged apply.
func checkStored(t *testing.T, server string, last ack) {
	t.Helper()
	r := ctl(t, server, "get", gatewayName, "-o", "yaml")
	want := fmt.Sprintf("# revision: %d\n", last.revision)
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, markerHost(last.marker)) {
		t.Errorf("LOST: gatewayctl get does not show the last acknowledged apply (marker %d, revision %d): exit %d\n%s%s",
			last.marker, last.revision, r.code, tail(r.stdout, 50), r.stderr)
	}
}

// The etcd cluster loses its leader, then its quorum, then gets both members back.
func TestFaultEtcdMemberAndQuorumLoss(t *testing.T) {
	faultTest(t)
	bin := etcdBinary(t)
	const n = "127.0.61."
	members := startEtcdCluster(t, bin, []string{n + "1", n + "2", n + "3"})
	endpoints := endpointsOf(members)
	waitQuorum(t, endpoints, 30*time.Second)

	cpAddr := fmt.Sprintf("%s5:%d", n, freePort(t, n+"5"))
	startControlPlane(t, "cp", cpAddr, strings.Join(endpoints, ","), "--lease-ttl", "5")
	waitServing(t, cpAddr, 30*time.Second)
	bport := freePort(t, n+"31")
	newBackend(t, "A", fmt.Sprintf("%s31:%d", n, bport), modeEcho)
	newBackend(t, "B", fmt.Sprintf("%s32:%d", n, bport), modeEcho)
	web := freePort(t, n+"21")
	workers := []*worker{startWorker(t, "dp-1", cpAddr, n+"21"), startWorker(t, "dp-2", cpAddr, n+"22")}

	ap := newApplier(t)
	g := gwSpec{web: web, bport: bport, pool: []string{n + "31", n + "32"}, marker: 1}
	ap.mustApply(cpAddr, g)
	for _, w := range workers {
		waitMarker(t, w, web, 1, 20*time.Second)
	}
	var targets []target
	for _, w := range workers {
		targets = append(targets, target{w.id, fmt.Sprintf("http://%s:%d", w.bind, web)})
	}
	tr := startTraffic(t, targets, 2, 10*time.Millisecond, "/traffic")
	time.Sleep(500 * time.Millisecond)

	// 1. The leader dies: the two others elect a new one; applies go on.
	leader := leaderIndex(t, members)
	members[leader].kill()
	var applyTimes, reachTimes []time.Duration
	for m := 2; m <= 4; m++ {
		g.marker = m
		k := ap.mustApply(cpAddr, g)
		applyTimes = append(applyTimes, k.took)
		var slowest time.Duration
		for _, w := range workers {
			slowest = max(slowest, waitMarker(t, w, web, m, 15*time.Second))
		}
		reachTimes = append(reachTimes, slowest)
	}
	lastBeforeOutage := ap.last()
	if slowest := slices.Max(reachTimes); slowest > 3*time.Second {
		gap(t, "after the etcd leader's death an acknowledged apply took %s to reach both workers: a worker's Connect "+
			"stream writes to etcd inline (its health view, its version), with no timeout of its own, and while such a write waits out the "+
			"leader election (etcd's request timeout, ~7 s) the stream cannot send the new snapshot", ms(slowest))
	}

	// 2. A second member dies: no quorum. An apply fails within its timeout, clearly; workers serve on.
	second := (leader + 1) % 3
	survivor := 3 - leader - second
	members[second].kill()
	g.marker = 5
	_, failed, ok := ap.apply(cpAddr, g, "--timeout", "5s")
	if ok || failed.code != 1 {
		t.Fatalf("apply without etcd quorum: exit %d, want 1\n%s%s", failed.code, failed.stdout, failed.stderr)
	}
	if failed.took > 15*time.Second { // 5 s, and room for a loaded machine to start gatewayctl
		t.Errorf("apply without quorum took %s: more than its --timeout 5s allows", ms(failed.took))
	}
	lower := strings.ToLower(failed.stderr)
	clear := strings.Contains(lower, "etcd") && strings.Contains(lower, "unavailable")
	if !clear {
		gap(t, "apply without etcd quorum waits out the caller's whole --timeout and then says %q: no Unavailable "+
			"\"configuration store (etcd) is unavailable\" (the store's etcd calls should fail fast, e.g. clientv3.WithRequireLeader)",
			strings.TrimSpace(failed.stderr))
	}
	getDuring := ctl(t, cpAddr, "--timeout", "3s", "get", gatewayName)
	outage := time.Now()
	time.Sleep(3 * time.Second) // traffic meets no control plane change
	for _, w := range workers {
		if got := tr.marker(w.id); got != lastBeforeOutage.marker {
			t.Errorf("during the quorum loss %s serves marker %d, want the last acknowledged %d", w.id, got, lastBeforeOutage.marker)
		}
	}
	totalDuring, failedDuring := tr.counts()

	// 3. Both members come back with their data: quorum returns, applies succeed again and reach the
	// workers, with no restart of the control plane or the workers.
	restartAt := time.Now()
	members[leader].proc = members[leader].restart()
	members[second].proc = members[second].restart()
	quorumBack := waitQuorum(t, endpoints, 30*time.Second)
	g.marker = 6
	attempts := 0
	var k ack
	for {
		attempts++
		var r ctlResult
		if k, r, ok = ap.apply(cpAddr, g, "--timeout", "3s"); ok {
			break
		}
		if time.Since(restartAt) > 30*time.Second {
			t.Fatalf("no apply succeeded within 30 s of the members' restart (%d attempts); last: exit %d %s", attempts, r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	applyBack := time.Since(restartAt)
	var reachAfter time.Duration
	for _, w := range workers {
		reachAfter = max(reachAfter, waitMarker(t, w, web, 6, 20*time.Second))
	}
	time.Sleep(500 * time.Millisecond)
	tr.stop()
	tr.requireNoFailure(t, "traffic through the etcd faults")

	// No acknowledged apply lost; the failed one left nothing behind.
	checkStored(t, cpAddr, k)
	checked := checkAcksInEtcd(t, endpoints, ap.acked())
	if m, rev := gatewayAt(t, endpoints, k.revision-1); rev != lastBeforeOutage.revision || m != lastBeforeOutage.marker {
		t.Errorf("between the last apply before the outage (revision %d) and the first after it (%d), etcd holds marker %d "+
			"written at revision %d: the failed apply was stored", lastBeforeOutage.revision, k.revision, m, rev)
	}
	eventually(t, 15*time.Second, func() bool {
		r := ctl(t, cpAddr, "dataplanes", gatewayName)
		return r.code == 0 && strings.Count(r.stdout, "InSync") == 2
	}, "gatewayctl dataplanes does not show both workers InSync after the outage")

	total, fails := tr.counts()
	summary(t, "etcd: leader loss, quorum loss, recovery", [][2]string{
		{"members killed", fmt.Sprintf("e%d (leader), then e%d; e%d kept running", leader+1, second+1, survivor+1)},
		{"applies with 2/3 members (gatewayctl time)", durations(applyTimes)},
		{"  apply -> both workers serve it", durations(reachTimes)},
		{"apply with 1/3 members", fmt.Sprintf("exit %d after %s: %s", failed.code, ms(failed.took), strings.TrimSpace(failed.stderr))},
		{"  clear Unavailable (etcd) message", fmt.Sprint(clear)},
		{"get with 1/3 members (--timeout 3s)", fmt.Sprintf("exit %d after %s", getDuring.code, ms(getDuring.took))},
		{"requests during the quorum loss", fmt.Sprintf("%d sent by %s, %d failed", totalDuring, outage.Format("15:04:05"), failedDuring)},
		{"restart -> quorum", ms(quorumBack)},
		{"restart -> first apply acknowledged", fmt.Sprintf("%s (%d attempt(s))", ms(applyBack), attempts)},
		{"  apply -> both workers serve it", ms(reachAfter)},
		{"acknowledged applies checked in etcd history", fmt.Sprintf("%d, none lost", checked)},
		{"requests through the workers", fmt.Sprintf("%d, %d failed", total, fails)},
	})
}

func durations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = ms(d)
	}
	return strings.Join(parts, ", ")
}
