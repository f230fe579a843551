// Command prober-bench measures one worker's health checker (dataplane/health.Manager with the real
// prober, dataplane/probe.Run) probing many servers: the CPU it costs per 1,000 probes/s, how
// evenly each server's probes are spaced (no drift from the interval grid), and whether probes come
// in bursts (probes started per 10 ms window: the maximum against the mean).
//
// The servers are real HTTP servers on loopback, in a child process (this program, re-run with
// --serve) so that their CPU is not counted as the prober's: --listeners listeners on 127.0.91.x,
// each standing for servers/listeners servers (distinct backend settings names, so distinct probe
// targets, each probed on its own schedule with its own path). Every probe is a new TCP connection
// (probes send Connection: close), as a worker's are.
//
//	go run ./scripts/bench/prober --servers 10000 --interval 1s --duration 20s
//
// See scripts/bench-controlplane.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/probe"
)

func main() {
	serve := flag.Bool("serve", false, "internal: be the child serving the listeners, one address per line on stdin")
	servers := flag.Int("servers", 10000, "servers (probe targets) the worker probes")
	listeners := flag.Int("listeners", 100, "loopback HTTP listeners standing for the servers (127.0.91.1, .2, ...)")
	interval := flag.Duration("interval", time.Second, "probe interval of every server")
	duration := flag.Duration("duration", 20*time.Second, "measured window, after the first probes have spread (one interval plus 2 s)")
	window := flag.Duration("window", 10*time.Millisecond, "burst window")
	flag.Parse()
	if *serve {
		if err := serveChild(); err != nil {
			fmt.Fprintln(os.Stderr, "prober-bench (servers):", err)
			os.Exit(1)
		}
		return
	}
	if *servers < 1 || *listeners < 1 || *listeners > 250 || *interval <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "prober-bench: --servers >= 1, --listeners 1-250, --interval and --duration > 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *servers, *listeners, *interval, *duration, *window); err != nil {
		fmt.Fprintln(os.Stderr, "prober-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// serveChild listens on the addresses given on stdin (host:0), prints the bound addresses, then
// serves "ok" to every request until stdin closes.
func serveChild() error {
	sc := bufio.NewScanner(os.Stdin)
	var ls []net.Listener
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			break
		}
		l, err := net.Listen("tcp", line)
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().String())
	}
	fmt.Println()
	for _, l := range ls {
		go func() { _ = srv.Serve(l) }()
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it (or dies)
	return srv.Close()
}

func run(ctx context.Context, n, listeners int, interval, duration, window time.Duration) error {
	// The servers.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, self, "--serve")
	child.Stderr = os.Stderr
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := child.StdinPipe()
	if err != nil {
		return err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { in.Close(); _ = child.Wait() }()
	for i := range listeners {
		fmt.Fprintf(in, "127.0.91.%d:0\n", i+1)
	}
	fmt.Fprintln(in)
	var addrs []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "" {
		addrs = append(addrs, sc.Text())
	}
	if len(addrs) != listeners {
		return fmt.Errorf("server child bound %d of %d listeners", len(addrs), listeners)
	}

	// The targets: server i is listener i%listeners under settings s<i>, path /p<i>.
	targets := make([]health.Target, n)
	for i := range targets {
		addr := addrs[i%listeners]
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		settings := "s" + strconv.Itoa(i)
		targets[i] = health.Target{
			Key:         health.Key{Settings: settings, Address: addr},
			Spec:        probe.Spec{Protocol: "Http", Host: host, Port: p, Path: "/p" + strconv.Itoa(i), Timeout: interval, Match: probe.Match{}},
			Interval:    interval,
			Threshold:   3,
			Fingerprint: "bench",
		}
	}
	// Every probe's start time, per server (enough room for the whole run; the rest are counted).
	perServer := int((interval+2*time.Second+duration+interval)/interval) + 4
	starts := make([][]int64, n)
	counts := make([]atomic.Int32, n)
	for i := range starts {
		starts[i] = make([]int64, perServer)
	}
	var failed atomic.Int64
	var firstFail atomic.Value
	t0 := time.Now()
	byPath := make(map[string]int, n)
	for i, t := range targets {
		byPath[t.Spec.Path] = i
	}
	// The real prober, noting when each probe starts.
	prober := health.ProberFunc(func(ctx context.Context, s probe.Spec) probe.Result {
		i := byPath[s.Path]
		if k := counts[i].Add(1) - 1; int(k) < perServer {
			starts[i][k] = int64(time.Since(t0))
		}
		res := probe.Run(ctx, s)
		if !res.Healthy && failed.Add(1) == 1 {
			firstFail.Store(s.Path + ": " + res.Reason + ": " + res.Message)
		}
		return res
	})
	mgr := health.NewManager(prober, slog.New(slog.NewTextHandler(io.Discard, nil)))
	logf("probing %d servers (%d loopback listeners in a child process) every %s", n, listeners, interval)
	mgr.Update(1, targets)
	defer mgr.Close()

	// Warm-up: the first probes spread over up to min(interval, 2 s); measure after it.
	warm := min(interval, health.MaxFirstProbeDelay) + interval
	select {
	case <-time.After(warm):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu0, _ := procCPU("self")
	ccpu0, _ := procCPU(strconv.Itoa(child.Process.Pid))
	fail0 := failed.Load()
	m0 := time.Now()
	select {
	case <-time.After(duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	m1 := time.Now()
	cpu1, _ := procCPU("self")
	ccpu1, _ := procCPU(strconv.Itoa(child.Process.Pid))
	fails := failed.Load() - fail0
	from, to := int64(m0.Sub(t0)), int64(m1.Sub(t0))

	// Probes started in the window, spacing, grid drift, bursts.
	var probes int
	var gaps []float64   // |gap - interval|, ms
	var drifts []float64 // max |start_k - (start_0 + k*interval)| per server, ms
	buckets := make([]int, int((to-from)/int64(window))+1)
	for i := range starts {
		c := min(int(counts[i].Load()), perServer)
		s := starts[i][:c]
		var in []int64
		for _, at := range s {
			if at >= from && at < to {
				in = append(in, at)
				buckets[(at-from)/int64(window)]++
			}
		}
		probes += len(in)
		worst := 0.0
		for k := 1; k < len(in); k++ {
			gaps = append(gaps, math.Abs(float64(in[k]-in[k-1]-int64(interval)))/1e6)
			worst = max(worst, math.Abs(float64(in[k]-in[0]-int64(k)*int64(interval)))/1e6)
		}
		if len(in) > 1 {
			drifts = append(drifts, worst)
		}
	}
	buckets = buckets[:len(buckets)-1] // the last one is partial
	secs := m1.Sub(m0).Seconds()
	rate := float64(probes) / secs
	cpu := (cpu1 - cpu0).Seconds()
	ccpu := (ccpu1 - ccpu0).Seconds()
	mean := float64(probes) / (secs / window.Seconds())
	bmax := slices.Max(append([]int{0}, buckets...))

	w := os.Stdout
	fmt.Fprintf(w, "\n## Prober bench: one worker probing %d servers every %s\n\n", n, interval)
	fmt.Fprintf(w, "- dataplane/health.Manager with the real prober (probe.Run: a new TCP connection and an HTTP/1.1 GET per probe) against %d real HTTP listeners on 127.0.91.x in a child process (%d servers each)\n", listeners, (n+listeners-1)/listeners)
	fmt.Fprintf(w, "- machine: %d CPUs (shared by the prober, the servers and anything else); %s; measured %.1f s after a %s warm-up\n\n", runtime.NumCPU(), runtime.Version(), secs, warm)
	fmt.Fprintf(w, "| Measure | value |\n|---|---:|\n")
	fmt.Fprintf(w, "| probes started | %d (%.0f/s; %d failed) |\n", probes, rate, fails)
	fmt.Fprintf(w, "| **prober CPU per 1,000 probes/s** | %.3f cores (%.0f ms CPU per 1,000 probes) |\n", cpu/secs/(rate/1000), 1e6*cpu/float64(max(probes, 1)))
	fmt.Fprintf(w, "| prober CPU in all | %.2f cores |\n", cpu/secs)
	fmt.Fprintf(w, "| servers' CPU (child process) | %.2f cores |\n", ccpu/secs)
	fmt.Fprintf(w, "| **spacing of a server's probes**: \\|gap − %s\\|, p50 / p99 / max | %s / %s / %s |\n", interval, ms(pctF(gaps, 50)), ms(pctF(gaps, 99)), ms(pctF(gaps, 100)))
	fmt.Fprintf(w, "| **drift from the interval grid** (per server, worst start vs first + k×interval), p50 / p99 / max | %s / %s / %s |\n", ms(pctF(drifts, 50)), ms(pctF(drifts, 99)), ms(pctF(drifts, 100)))
	fmt.Fprintf(w, "| **probes started per %s window**: mean / p99 / max | %.1f / %d / %d (max %.2fx the mean) |\n", window, mean, pctI(buckets, 99), bmax, float64(bmax)/max(mean, 1e-9))
	if fails > 0 {
		fmt.Fprintf(w, "\nFirst failure: %v\n", firstFail.Load())
	}
	fmt.Fprintln(w)
	if probes == 0 {
		return errors.New("no probe started in the measured window")
	}
	return nil
}

func ms(v float64) string { return fmt.Sprintf("%.2f ms", v) }

func pctF(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(max(int(math.Ceil(p/100*float64(len(s))))-1, 0), len(s)-1)]
}

func pctI(v []int, p float64) int {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(max(int(math.Ceil(p/100*float64(len(s))))-1, 0), len(s)-1)]
}

// procCPU is utime+stime of a process from /proc/PID/stat (USER_HZ 100).
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / 100, nil
}
