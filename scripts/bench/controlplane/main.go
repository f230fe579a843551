// Command controlplane-bench loads a Fleetgate control plane with simulated data-plane workers over
// real gRPC and measures config push latency, backend-health convergence and transition latency,
// BackendHealth call latency, steady-state etcd writes, and the control plane's CPU and memory.
//
// Without --controlplane it starts bin/controlplane itself (embedded etcd in a temp dir, free
// loopback ports), so that it can read that process's CPU and memory from /proc. Every address is on
// loopback; backend server addresses are configuration only and never dialled.
//
//	go run ./scripts/bench/controlplane --workers 100 --servers 100 --rounds 5
//
// See scripts/bench-controlplane.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

type options struct {
	cpAddr, etcdEP, gateway, cpBin, cpLogLevel, perfDir string
	heapDir                                             string
	pkiDir                                              string
	tls                                                 bool
	workers, servers, rounds, perConn, bhCalls          int
	serverSizes                                         []int
	replicas, maxViews, bhDetailCalls                   int
	cpAddrs                                             []string // every replica's gRPC address
	steady, hbPeriod, waitTimeout                       time.Duration
	seed                                                uint64
	keep                                                bool
}

func main() {
	var o options
	flag.StringVar(&o.cpAddr, "controlplane", "", "control plane gRPC address (loopback); empty: start --cp-bin with an embedded etcd in a temp dir")
	flag.StringVar(&o.etcdEP, "etcd", "", "etcd client URL of an external --controlplane, to count writes (optional)")
	flag.StringVar(&o.cpBin, "cp-bin", "bin/controlplane", "control-plane binary to start when --controlplane is empty")
	flag.StringVar(&o.cpLogLevel, "cp-log-level", "info", "--log-level of the started control plane")
	flag.StringVar(&o.gateway, "gateway", "bench-cp", "gateway name")
	flag.IntVar(&o.workers, "workers", 1000, "simulated data-plane workers (N)")
	serversFlag := flag.String("servers", "1000", "backend servers in the pool (M); a comma-separated list runs the bench once per size, each with a fresh control plane, and ends with a table of all")
	flag.IntVar(&o.replicas, "replicas", 1, "control-plane replicas sharing the etcd (the first one's embedded etcd); the workers are split evenly between them, BackendHealth is asked of the first")
	flag.IntVar(&o.maxViews, "max-views", 1_000_000, "at most this many worker views of a server: with more workers x servers, only max-views/servers workers (spread over the replicas) send health views")
	flag.IntVar(&o.bhDetailCalls, "bh-detail-calls", 5, "BackendHealth calls asking for every worker's view (BackendHealthRequest.dataplanes)")
	flag.IntVar(&o.rounds, "rounds", 20, "config pushes and health flips measured")
	flag.IntVar(&o.perConn, "workers-per-conn", 100, "worker streams sharing one gRPC connection")
	flag.IntVar(&o.bhCalls, "bh-calls", 50, "BackendHealth calls for the latency measurement")
	flag.DurationVar(&o.steady, "steady", 20*time.Second, "steady-state window (heartbeats only)")
	flag.DurationVar(&o.hbPeriod, "heartbeat", time.Second, "heartbeat period of every worker")
	flag.DurationVar(&o.waitTimeout, "wait-timeout", 3*time.Minute, "give up on one convergence after this long")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the random worker/server choice for health flips")
	flag.StringVar(&o.perfDir, "perf-dir", "", "record the started control plane with `perf record` per phase into this dir and print its hottest symbols")
	flag.StringVar(&o.heapDir, "heap-profile-dir", "", "start the control plane with --pprof-address and save its heap profile (after a GC) into this dir once every health view is loaded: heap-SERVERS-rN.pb.gz per replica (read with go tool pprof)")
	flag.BoolVar(&o.keep, "keep", false, "keep the started control plane's temp dir (data and log)")
	// The default measures the control plane's own work: TLS handshakes and record encryption of
	// the workers' streams and of the operators' calls are not measured unless --tls is given.
	flag.BoolVar(&o.tls, "tls", false, "TLS with client certificates, as in production (a started control plane gets a PKI made with `controlplane certs init`; an external one needs --pki-dir); default: the started control plane runs --insecure")
	flag.StringVar(&o.pkiDir, "pki-dir", "", "with --tls and --controlplane: PKI directory whose ca.crt, admin.crt/.key and shared dataplane.crt/.key the bench uses")
	flag.Parse()
	for _, f := range strings.Split(*serversFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "controlplane-bench: --servers: want sizes >= 1, comma-separated:", *serversFlag)
			os.Exit(2)
		}
		o.serverSizes = append(o.serverSizes, n)
	}
	o.servers = o.serverSizes[0]
	if o.replicas < 1 || o.replicas > 1 && o.cpAddr != "" {
		fmt.Fprintln(os.Stderr, "controlplane-bench: --replicas must be >= 1, and 1 with --controlplane")
		os.Exit(2)
	}
	if o.replicas > 1 { // connections alternate between replicas: at least one per replica
		o.perConn = max(1, min(o.perConn, (o.workers+o.replicas-1)/o.replicas))
	}
	if o.workers < 1 || o.servers < 1 || o.rounds < 1 {
		fmt.Fprintln(os.Stderr, "controlplane-bench: --workers, --servers and --rounds must be >= 1")
		os.Exit(2)
	}
	if o.pkiDir != "" && (!o.tls || o.cpAddr == "") || o.tls && o.cpAddr != "" && o.pkiDir == "" {
		fmt.Fprintln(os.Stderr, "controlplane-bench: --pki-dir goes with --tls and --controlplane (a started control plane gets its own PKI)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var all []*results
	failed := false
	for _, m := range o.serverSizes {
		om := o
		om.servers = m
		res, err := run(ctx, om)
		if res != nil {
			res.print(os.Stdout)
			all = append(all, res)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "controlplane-bench:", err)
			failed = true
			if ctx.Err() != nil {
				break
			}
		}
	}
	if len(all) > 1 || o.replicas > 1 {
		printSummary(os.Stdout, all)
	}
	if failed {
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// bench is one run.
type bench struct {
	o    options
	ctx  context.Context
	cp   *child   // nil with an external control plane
	cps  []*child // every replica started (cp first)
	pids []string
	pid  string
	acks *recvTracker // per worker, when its entry in etcd showed each applied version
	etcd *clientv3.Client
	ops  fgv1.ConfigServiceClient
	res  *results
}

func run(ctx context.Context, o options) (*results, error) {
	b := &bench{o: o, ctx: ctx, res: &results{o: o, perf: map[string]string{}}}
	if o.cpAddr == "" {
		logf("starting %s (embedded etcd, temp dir)", o.cpBin)
		cp, err := startChild(ctx, o.cpBin, o.cpLogLevel, 0, o.tls, o.heapDir != "", nil)
		if err != nil {
			return nil, err
		}
		b.cp, b.pid = cp, strconv.Itoa(cp.pid)
		b.cps, b.pids = []*child{cp}, []string{b.pid}
		o.cpAddr, o.etcdEP, o.pkiDir = cp.addr, cp.etcd, cp.pkiDir
		o.cpAddrs = []string{cp.addr}
		b.res.cpMode = fmt.Sprintf("started by the bench: pid %d, gRPC %s, embedded etcd %s, log %s (removed at exit unless --keep)", cp.pid, cp.addr, cp.etcd, cp.logPath)
		defer func() {
			logf("stopping the control plane")
			for i := len(b.cps) - 1; i >= 0; i-- {
				b.cps[i].stop(o.keep)
				if o.keep {
					logf("kept %s", b.cps[i].dir)
				}
			}
		}()
		for i := 1; i < o.replicas; i++ {
			logf("starting replica %d of %d on the same etcd", i+1, o.replicas)
			c, err := startChild(ctx, o.cpBin, o.cpLogLevel, 0, o.tls, o.heapDir != "", cp)
			if err != nil {
				return b.res, err
			}
			b.cps, b.pids = append(b.cps, c), append(b.pids, strconv.Itoa(c.pid))
			o.cpAddrs = append(o.cpAddrs, c.addr)
			b.res.cpMode += fmt.Sprintf("; replica %d: pid %d, gRPC %s, on the same etcd", i+1, c.pid, c.addr)
		}
		b.o, b.res.o = o, o
		if o.perfDir != "" {
			if err := os.MkdirAll(o.perfDir, 0o755); err != nil {
				return nil, err
			}
		}
	} else {
		b.res.cpMode = "external at " + o.cpAddr + " (no CPU/RSS figures)"
		o.cpAddrs = []string{o.cpAddr}
		b.o, b.res.o = o, o
	}
	if o.etcdEP != "" {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{o.etcdEP}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return b.res, fmt.Errorf("etcd client: %w", err)
		}
		defer cli.Close()
		b.etcd = cli
		b.acks = newRecvTracker(o.workers)
	}
	if o.tls {
		b.res.cpMode += "; TLS with client certificates (admin.crt, the shared dataplane.crt)"
	} else {
		b.res.cpMode += "; plaintext (--insecure): TLS costs not measured (--tls measures them)"
	}
	opsCreds, err := clientCreds(o.pkiDir, pki.AdminName)
	if err != nil {
		return b.res, err
	}
	opsConn, err := grpc.NewClient(o.cpAddr, grpc.WithTransportCredentials(opsCreds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return b.res, err
	}
	defer opsConn.Close()
	b.ops = fgv1.NewConfigServiceClient(opsConn)
	bhConn, err := grpc.NewClient(o.cpAddr, grpc.WithTransportCredentials(opsCreds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return b.res, err
	}
	defer bhConn.Close()
	poller := &bhPoller{conn: bhConn, gateway: o.gateway}

	// Phase 0: the gateway.
	gw, addrs := buildGateway(o.gateway, o.servers, 0)
	var rev int64
	if err := b.phase("apply", func() error {
		resp, err := b.ops.ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: gw})
		if err != nil {
			return fmt.Errorf("ApplyGateway: %w", err)
		}
		rev = resp.GetRevision()
		b.res.gatewayBytes = proto.Size(resp.GetGateway())
		return nil
	}); err != nil {
		return b.res, err
	}
	defer func() {
		if b.cp == nil { // an external control plane keeps running: leave it as it was
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := b.ops.DeleteGateway(dctx, &fgv1.DeleteGatewayRequest{Name: o.gateway}); err != nil {
				logf("delete gateway %s: %v", o.gateway, err)
			}
		}
	}()

	// Phase 1: connect N workers; each receives the snapshot and ACKs it.
	dpCreds, err := clientCreds(o.pkiDir, pki.DataPlaneName)
	if err != nil {
		return b.res, err
	}
	fs, err := newFleetSim(o.cpAddrs, o.gateway, o.workers, o.perConn, dpCreds)
	if err != nil {
		return b.res, err
	}
	defer fs.close()
	if b.acks != nil {
		stopAcks := b.watchAcks(fs)
		defer stopAcks()
	}
	if err := b.phase("connect", func() error {
		logf("connecting %d workers (%d per connection)", o.workers, o.perConn)
		t0 := time.Now()
		if err := fs.connect(o.perConn); err != nil {
			return err
		}
		times, got, err := fs.recv.wait(rev, o.waitTimeout, ctx.Done())
		if err != nil {
			return fmt.Errorf("initial snapshot: %d/%d workers received version %d: %w (%v)", got, o.workers, rev, err, fs.err())
		}
		b.res.connectRecv = latest(times).Sub(t0)
		acked, _, err := b.waitAcks(rev, t0)
		if err != nil {
			return fmt.Errorf("initial ACKs: %w", err)
		}
		b.res.connectAck = acked
		logf("all %d workers connected and received version %d in %s; all ACKs recorded after %s",
			o.workers, rev, fmtDur(b.res.connectRecv), fmtDur(acked))
		return nil
	}); err != nil {
		return b.res, err
	}

	// Phase 2: config push rounds.
	pushErr := b.phase("push", func() error {
		for r := 1; r <= o.rounds; r++ {
			gw, _ := buildGateway(o.gateway, o.servers, r)
			t0 := time.Now()
			resp, err := b.ops.ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: gw})
			t1 := time.Now()
			if err != nil {
				return fmt.Errorf("round %d: ApplyGateway: %w", r, err)
			}
			if !resp.GetChanged() {
				return fmt.Errorf("round %d: ApplyGateway reported no change", r)
			}
			rev = resp.GetRevision()
			b.res.applyRPC = append(b.res.applyRPC, t1.Sub(t0))
			times, got, err := fs.recv.wait(rev, o.waitTimeout, ctx.Done())
			if err != nil {
				return fmt.Errorf("round %d: %d/%d workers received version %d: %w (%v)", r, got, o.workers, rev, err, fs.err())
			}
			for _, t := range times {
				b.res.perWorkerStart = append(b.res.perWorkerStart, t.Sub(t0))
				d := t.Sub(t1)
				if d < 0 { // the watch beat the unary answer
					b.res.recvEarly++
					d = 0
				}
				b.res.perWorker = append(b.res.perWorker, d)
			}
			all := max(latest(times).Sub(t1), 0)
			b.res.allRecv = append(b.res.allRecv, all)
			b.res.allRecvStart = append(b.res.allRecvStart, latest(times).Sub(t0))
			acked, each, err := b.waitAcks(rev, t1)
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			b.res.allAck = append(b.res.allAck, acked)
			b.res.perWorkerAck = append(b.res.perWorkerAck, each...)
			logf("push round %d/%d: version %d received by all %d workers after %s, all ACKs recorded after %s",
				r, o.rounds, rev, o.workers, fmtDur(all), fmtDur(acked))
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	})
	if pushErr != nil {
		b.res.pushErr = pushErr.Error()
		logf("config push: %v", pushErr)
		if ctx.Err() != nil {
			return b.res, ctx.Err()
		}
	}

	// Phase 3: health views: initial convergence. With more than --max-views worker views in all,
	// only some workers (spread evenly, so over every replica) send one.
	hw := min(o.workers, max(1, o.maxViews/o.servers))
	reporters := make([]int, hw)
	for i := range reporters {
		reporters[i] = i * o.workers / hw
	}
	b.res.healthWorkers = hw
	b.res.reportBytes = proto.Size(healthReportOf(rev, "settings1", addrs))
	fs.startHeartbeats(o.hbPeriod)
	loadErr := b.phase("health-load", func() error {
		logf("%d workers send a full health view of %d servers (~%s each)", hw, o.servers, fmtBytes(int64(b.res.reportBytes)))
		t0 := time.Now()
		if err := fs.sendFullReports(reporters, rev, "settings1", addrs); err != nil {
			return err
		}
		b.res.reportsSent = time.Since(t0)
		deadline := t0.Add(o.waitTimeout)
		match, total := 0, 0
		lastCheck := time.Now()
		for time.Now().Before(deadline) {
			// A check: the control plane writes again a view whose write to etcd failed (each is
			// bounded to 1 s), so none should stay missing. Every 5 s the bench lists the views in
			// etcd, counts those still missing and sends them again, as a change would (before
			// the retry, 40-48% of 1,000 views at 1,000 servers went missing for good).
			if b.etcd != nil && time.Since(lastCheck) >= 5*time.Second {
				lastCheck = time.Now()
				missing, err := b.missingViews(fs, reporters)
				if err != nil {
					return err
				}
				if len(missing) > 0 {
					logf("%d of %d health views not in etcd after %s: sending them again", len(missing), hw, fmtDur(time.Since(t0)))
					b.res.viewsResent += len(missing)
					if err := fs.sendFullReports(missing, rev, "settings1", addrs); err != nil {
						return err
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
			var err error
			match, total, err = poller.count(ctx, "Healthy", int32(hw))
			if err != nil {
				return fmt.Errorf("BackendHealth: %w", err)
			}
			if total == o.servers && match == o.servers {
				b.res.healthInit = time.Since(t0)
				logf("BackendHealth shows all %d servers Healthy on %d workers after %s (%d calls, last response %s)",
					o.servers, hw, fmtDur(b.res.healthInit), poller.calls, fmtBytes(int64(poller.size)))
				return nil
			}
			if err := fs.err(); err != nil {
				return err
			}
		}
		return fmt.Errorf("after %s only %d/%d servers show Healthy with healthy_dataplanes == %d (%v)", o.waitTimeout, match, total, hw, fs.err())
	})
	b.res.memLoaded, b.res.hwmLoaded = b.mem()
	b.heapProfiles()
	if loadErr != nil {
		b.res.healthErr = loadErr.Error()
		logf("health load: %v", loadErr)
		return b.res, loadErr
	}

	// Phase 4: health transitions.
	rng := rand.New(rand.NewPCG(o.seed, 0x5eed))
	bad := "Partial"
	if hw == 1 {
		bad = "Unhealthy"
	}
	b.res.badWord = bad
	flipErr := b.phase("flips", func() error {
		for r := 1; r <= o.rounds; r++ {
			wi, si := reporters[rng.IntN(hw)], rng.IntN(o.servers)
			addr := addrs[si]
			key := fleet.HealthKey(o.gateway, fs.workers[wi].id)
			stored := b.watchKey(key)
			t0 := time.Now()
			if err := fs.flip(wi, si, false); err != nil {
				return fmt.Errorf("flip %d: %w", r, err)
			}
			seen, inCache, last, err := poller.waitFor(ctx, addr, bad, o.waitTimeout)
			if err != nil {
				return fmt.Errorf("flip %d (%s on %s -> Unhealthy): BackendHealth never showed %s (last %q): %w", r, addr, fs.workers[wi].id, bad, last, err)
			}
			down := seen.Sub(t0)
			b.res.toBad = append(b.res.toBad, down)
			b.res.inCache = append(b.res.inCache, max(inCache.Sub(t0), 0))
			b.res.stored = append(b.res.stored, stored.wait(t0)...)

			stored = b.watchKey(key)
			t0 = time.Now()
			if err := fs.flip(wi, si, true); err != nil {
				return fmt.Errorf("flip %d back: %w", r, err)
			}
			seen, inCache, last, err = poller.waitFor(ctx, addr, "Healthy", o.waitTimeout)
			if err != nil {
				return fmt.Errorf("flip %d (%s on %s -> Healthy): BackendHealth never showed Healthy (last %q): %w", r, addr, fs.workers[wi].id, last, err)
			}
			up := seen.Sub(t0)
			b.res.toHealthy = append(b.res.toHealthy, up)
			b.res.inCache = append(b.res.inCache, max(inCache.Sub(t0), 0))
			b.res.stored = append(b.res.stored, stored.wait(t0)...)
			logf("flip %d/%d: %s on %s: %s visible after %s, Healthy again after %s", r, o.rounds, addr, fs.workers[wi].id, bad, fmtDur(down), fmtDur(up))
		}
		return nil
	})
	b.res.flipCalls = poller.callDur
	if flipErr != nil {
		b.res.flipErr = flipErr.Error()
		logf("health flips: %v", flipErr)
		if ctx.Err() != nil {
			return b.res, ctx.Err()
		}
	}

	// Phase 5: BackendHealth latency with N x M views loaded.
	bhErr := b.phase("backendhealth", func() error {
		buf := &rawMsg{}
		for i := 0; i < o.bhCalls; i++ {
			t0 := time.Now()
			raw, err := backendHealthRaw(ctx, bhConn, o.gateway, false, buf)
			if err != nil {
				return fmt.Errorf("BackendHealth call %d: %w", i+1, err)
			}
			b.res.bhLat = append(b.res.bhLat, time.Since(t0))
			b.res.bhSize = len(raw)
		}
		// Every worker's view of every server, as gatewayctl asks.
		for i := 0; i < o.bhDetailCalls; i++ {
			t0 := time.Now()
			raw, err := backendHealthRaw(ctx, bhConn, o.gateway, true, buf)
			if err != nil {
				return fmt.Errorf("BackendHealth call %d with every view: %w", i+1, err)
			}
			b.res.bhDetailLat = append(b.res.bhDetailLat, time.Since(t0))
			b.res.bhDetailSize = len(raw)
		}
		// What a client decoding the whole answer pays on top (gatewayctl does).
		if o.bhDetailCalls > 0 {
			t0 := time.Now()
			var full fgv1.BackendHealthResponse
			if err := proto.Unmarshal(buf.b, &full); err != nil {
				return fmt.Errorf("decode BackendHealth: %w", err)
			}
			b.res.bhDecode = time.Since(t0)
		}
		// A client with gRPC's default 4 MiB receive limit, asking the default.
		defConn, err := grpc.NewClient(o.cpAddr, grpc.WithTransportCredentials(opsCreds))
		if err != nil {
			return err
		}
		defer defConn.Close()
		if resp, err := fgv1.NewConfigServiceClient(defConn).BackendHealth(ctx, &fgv1.BackendHealthRequest{Gateway: o.gateway}); err != nil {
			st := status.Convert(err)
			b.res.bhDefaultLimit = fmt.Sprintf("FAILS: %s: %s", st.Code(), st.Message())
		} else {
			b.res.bhDefaultLimit = fmt.Sprintf("ok (the summary, %s)", fmtBytes(int64(proto.Size(resp))))
		}
		logf("BackendHealth: %d calls, p50 %s, response %s; with every view: %d calls, p50 %s, response %s", o.bhCalls, fmtDur(pct(b.res.bhLat, 50)),
			fmtBytes(int64(b.res.bhSize)), o.bhDetailCalls, fmtDur(pct(b.res.bhDetailLat, 50)), fmtBytes(int64(b.res.bhDetailSize)))
		return nil
	})
	if bhErr != nil {
		b.res.bhErr = bhErr.Error()
	}

	// Phase 6: steady state.
	steadyErr := b.phase("steady", func() error {
		logf("steady state: %s of heartbeats only", o.steady)
		hb0 := fs.heartbeats.Load()
		select {
		case <-time.After(o.steady):
		case <-ctx.Done():
			return ctx.Err()
		}
		b.res.steadyHeartbeats = fs.heartbeats.Load() - hb0
		return fs.err()
	})
	if steadyErr != nil {
		b.res.steadyErr = steadyErr.Error()
	}
	// Views still fresh (heartbeats kept them)?
	if match, total, err := poller.count(ctx, "Healthy", int32(hw)); err == nil {
		b.res.freshAfter = fmt.Sprintf("%d/%d servers Healthy on all %d reporting workers", match, total, hw)
	} else {
		b.res.freshAfter = "BackendHealth: " + err.Error()
	}
	b.res.memEnd, b.res.hwmEnd = b.mem()
	if err := fs.err(); err != nil {
		b.res.notes = append(b.res.notes, "worker streams: "+err.Error())
	}
	for _, c := range b.cps {
		if err := c.alive(); err != nil {
			return b.res, err
		}
	}
	return b.res, nil
}

// heapProfiles saves every started replica's heap profile into --heap-profile-dir.
func (b *bench) heapProfiles() {
	if b.o.heapDir == "" {
		return
	}
	if err := os.MkdirAll(b.o.heapDir, 0o755); err != nil {
		logf("heap profile: %v", err)
		return
	}
	for i, c := range b.cps {
		path := filepath.Join(b.o.heapDir, fmt.Sprintf("heap-%d-r%d.pb.gz", b.o.servers, i+1))
		if err := c.heapProfile(b.ctx, path); err != nil {
			logf("heap profile of replica %d: %v", i+1, err)
			continue
		}
		logf("heap profile of replica %d: %s", i+1, path)
		b.res.notes = append(b.res.notes, fmt.Sprintf("heap profile of replica %d with every view loaded: %s (go tool pprof -top -sample_index=inuse_space %s)", i+1, path, path))
	}
}

// waitAcks waits until every worker's applied_version is at least rev: with the bench's etcd
// client, as each worker's entry in etcd shows it (per worker, from the watch watchAcks started),
// else by polling ListDataPlanes. It returns the time from t0 until all did, and with etcd each
// worker's time from t0.
func (b *bench) waitAcks(rev int64, t0 time.Time) (time.Duration, []time.Duration, error) {
	if b.acks != nil {
		times, got, err := b.acks.wait(rev, b.o.waitTimeout, b.ctx.Done())
		if err != nil {
			return 0, nil, fmt.Errorf("%d/%d workers' entries in etcd show applied_version %d: %w", got, b.o.workers, rev, err)
		}
		each := make([]time.Duration, len(times))
		for i, t := range times {
			each[i] = max(t.Sub(t0), 0)
		}
		return max(latest(times).Sub(t0), 0), each, nil
	}
	deadline := time.Now().Add(b.o.waitTimeout)
	n := 0
	for time.Now().Before(deadline) {
		resp, err := b.ops.ListDataPlanes(b.ctx, &fgv1.ListDataPlanesRequest{Gateway: b.o.gateway})
		if err != nil {
			return 0, nil, fmt.Errorf("ListDataPlanes: %w", err)
		}
		n = 0
		for _, dp := range resp.GetDataplanes() {
			if dp.GetAppliedVersion() >= rev {
				n++
			}
		}
		if n >= b.o.workers {
			return time.Since(t0), nil, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, nil, fmt.Errorf("after %s only %d/%d workers show applied_version %d in ListDataPlanes", b.o.waitTimeout, n, b.o.workers, rev)
}

// watchAcks follows the workers' entries in etcd (written by the replica holding each stream when
// the worker ACKs) and records when each worker's entry first showed each applied version.
func (b *bench) watchAcks(fs *fleetSim) (stop func()) {
	index := make(map[string]int, len(fs.workers))
	for _, w := range fs.workers {
		index[w.id] = w.i
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	wch := b.etcd.Watch(ctx, store.DataPlanePrefix+b.o.gateway+"/", clientv3.WithPrefix())
	go func() {
		defer close(done)
		for wr := range wch {
			now := time.Now()
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				var dp fgv1.DataPlane
				if proto.Unmarshal(ev.Kv.Value, &dp) != nil {
					continue
				}
				if i, ok := index[dp.GetId()]; ok && dp.GetAppliedVersion() > 0 {
					b.acks.record(i, dp.GetAppliedVersion(), now)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// missingViews lists the reporters whose health view is not in etcd.
func (b *bench) missingViews(fs *fleetSim, reporters []int) ([]int, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	resp, err := b.etcd.Get(ctx, fleet.HealthKey(b.o.gateway, ""), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list health views: %w", err)
	}
	have := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = true
	}
	var out []int
	for _, wi := range reporters {
		if !have[fleet.HealthKey(b.o.gateway, fs.workers[wi].id)] {
			out = append(out, wi)
		}
	}
	return out, nil
}

// keyWatch sees the next write of one etcd key.
type keyWatch struct {
	cancel context.CancelFunc
	at     chan time.Time
}

// watchKey starts watching key from the current revision on; nil without an etcd endpoint.
func (b *bench) watchKey(key string) *keyWatch {
	if b.etcd == nil {
		return nil
	}
	rev := b.etcdRev()
	if rev < 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(b.ctx)
	w := &keyWatch{cancel: cancel, at: make(chan time.Time, 1)}
	wch := b.etcd.Watch(ctx, key, clientv3.WithRev(rev+1))
	go func() {
		for wr := range wch {
			if len(wr.Events) > 0 {
				w.at <- time.Now()
				return
			}
		}
	}()
	return w
}

// wait returns how long after t0 the key was written (nothing if it was not within 5 s, or no watch).
func (w *keyWatch) wait(t0 time.Time) []time.Duration {
	if w == nil {
		return nil
	}
	defer w.cancel()
	select {
	case at := <-w.at:
		return []time.Duration{at.Sub(t0)}
	case <-time.After(5 * time.Second):
		return nil
	}
}

// phase runs fn and records its wall time, the control plane's CPU, the bench's own CPU and etcd
// writes (revision delta).
func (b *bench) phase(name string, fn func() error) error {
	ps := phaseStat{name: name, writes: -1, cpCPU: -1}
	rev0 := b.etcdRev()
	cpu0, cpuErr := b.cpCPU()
	self0, _ := procCPU("self")
	perf := startPerf(b.o.perfDir, name, pidOf(b.cp))
	t0 := time.Now()
	err := fn()
	ps.wall = time.Since(t0)
	if p := perf.stop(12); p != "" {
		b.res.perf[name] = p
	}
	if cpu1, err1 := b.cpCPU(); cpuErr == nil && err1 == nil && b.pid != "" {
		ps.cpCPU = cpu1 - cpu0
	}
	self1, _ := procCPU("self")
	ps.benchCPU = self1 - self0
	if rev1 := b.etcdRev(); rev0 >= 0 && rev1 >= 0 {
		ps.writes = rev1 - rev0
	}
	if err != nil {
		ps.err = err.Error()
	}
	b.res.phases = append(b.res.phases, ps)
	if name == "steady" && ps.writes >= 0 {
		b.res.steadyWrites, b.res.steadyWall = ps.writes, ps.wall
	}
	return err
}

func pidOf(c *child) int {
	if c == nil {
		return 0
	}
	return c.pid
}

// etcdRev is etcd's current revision (any Get carries it in its header), -1 if unknown.
func (b *bench) etcdRev() int64 {
	if b.etcd == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	resp, err := b.etcd.Get(ctx, "/fleetgate-bench/revision-probe")
	if err != nil {
		return -1
	}
	return resp.Header.Revision
}

// cpCPU is the CPU time of every replica started.
func (b *bench) cpCPU() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range b.pids {
		d, err := procCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// mem is the memory of the replicas started: the largest one's (with one replica, its own).
func (b *bench) mem() (rss, hwm int64) {
	if b.pid == "" {
		return -1, -1
	}
	for _, pid := range b.pids {
		r, h, err := procMem(pid)
		if err != nil {
			return -1, -1
		}
		rss, hwm = max(rss, r), max(hwm, h)
	}
	return rss, hwm
}

// buildGateway is one Basic rule from listener port 80 to a pool of m servers under settings1
// (port 8080). Server addresses are loopback-looking 127.10.x.y strings: configuration only, never
// dialled (the workers are simulated). round varies the request timeout, so that every round is a
// real change.
func buildGateway(name string, m, round int) (*fgv1.Gateway, []string) {
	pool := &fgv1.BackendAddressPool{Name: "pool1"}
	addrs := make([]string, m)
	const port = 8080
	for i := 0; i < m; i++ {
		a := &fgv1.BackendAddress{IpAddress: fmt.Sprintf("127.10.%d.%d", i/250, i%250+1)}
		pool.BackendAddresses = append(pool.BackendAddresses, a)
		addrs[i] = config.ServerAddress(a, port)
	}
	return &fgv1.Gateway{
		Name:                name,
		HttpListeners:       []*fgv1.HttpListener{{Name: "listener1", Protocol: "Http", Port: 80}},
		BackendAddressPools: []*fgv1.BackendAddressPool{pool},
		BackendHttpSettingsCollection: []*fgv1.BackendHttpSettings{{
			Name: "settings1", Port: port, Protocol: "Http", RequestTimeout: proto.Int32(int32(20 + round%80000)),
		}},
		RequestRoutingRules: []*fgv1.RequestRoutingRule{{
			Name: "rule1", RuleType: "Basic", Priority: proto.Int32(100), HttpListener: "listener1",
			BackendAddressPool: "pool1", BackendHttpSettings: "settings1",
		}},
	}, addrs
}

// healthReportOf is one worker's full view, for sizing.
func healthReportOf(version int64, settings string, addrs []string) *fgv1.HealthReport {
	rep := &fgv1.HealthReport{Version: version}
	now := time.Now()
	for _, a := range addrs {
		rep.Servers = append(rep.Servers, &fgv1.ServerHealthReport{
			Settings: settings, Address: a, Health: "Healthy", IntervalSeconds: 30, LastProbe: timestamppb.New(now),
		})
	}
	return rep
}

func latest(ts []time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}
