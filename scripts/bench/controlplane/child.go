package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fleetgate/fleetgate/controlplane/pki"
)

// child is a control plane started by the bench: bin/controlplane with an embedded etcd in a temp
// dir, on free loopback ports.
type child struct {
	cmd     *exec.Cmd
	pid     int
	dir     string
	logPath string
	addr    string // gRPC
	etcd    string // etcd client URL
	pkiDir  string // with TLS: the PKI the child serves from ("": --insecure)
	pprof   string // address of its --pprof-address endpoint ("": none)
	creds   credentials.TransportCredentials
	exited  chan struct{}
	waitErr error
}

// clientCreds are the transport credentials of a client of the control plane: plaintext when
// pkiDir is "" (a control plane run with --insecure), else TLS trusting pkiDir's CA and presenting
// its holder's certificate (pki.AdminName, pki.DataPlaneName).
func clientCreds(pkiDir, holder string) (credentials.TransportCredentials, error) {
	if pkiDir == "" {
		return insecure.NewCredentials(), nil
	}
	cfg, err := pki.ClientTLS(pki.FilesFromDir(pkiDir, holder))
	if err != nil {
		return nil, fmt.Errorf("TLS (%s): %w", pkiDir, err)
	}
	return credentials.NewTLS(cfg), nil
}

// freePort asks the kernel for a free loopback port. The listener is closed again, so another
// process could take the port before the child binds it; good enough for a bench.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startChild starts the control plane. Without useTLS it runs with --insecure (plaintext, no
// authentication); with useTLS it uses a PKI the bench makes first with `controlplane certs init`
// in the temp dir (returned as child.pkiDir), whose admin.crt and dataplane.crt the bench's clients
// present.
//
// With first set, the child is another replica of first's control plane: it uses first's etcd
// (--etcd-endpoints), encryption key and PKI instead of starting its own. With pprof, it serves
// net/http/pprof on another free loopback port (child.pprof).
func startChild(ctx context.Context, bin, logLevel string, leaseTTL int, useTLS, pprof bool, first *child) (*child, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("control-plane binary: %w (build it with: go build -o bin/ ./controlplane/cmd/controlplane)", err)
	}
	dir, err := os.MkdirTemp("", "fleetgate-bench-cp-")
	if err != nil {
		return nil, err
	}
	var ports [3]string
	n := len(ports)
	if first != nil {
		n = 1
	}
	for i := range n {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	c := &child{dir: dir, logPath: filepath.Join(dir, "controlplane.log"), addr: ports[0], etcd: "http://" + ports[1], exited: make(chan struct{})}
	replica := "bench-replica"
	if first != nil {
		c.etcd, replica = first.etcd, "bench-replica-2"
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--listen", ports[0],
		"--data-dir", filepath.Join(dir, "data"),
		"--replica", replica,
		"--log-level", logLevel,
	}
	if first == nil {
		args = append(args, "--etcd-client-addr", ports[1], "--etcd-peer-addr", ports[2])
	} else {
		args = append(args, "--etcd-endpoints", first.etcd, "--encryption-key-file", filepath.Join(first.dir, "data", "encryption.key"))
	}
	if leaseTTL > 0 {
		args = append(args, "--lease-ttl", strconv.Itoa(leaseTTL))
	}
	if pprof {
		if c.pprof, err = freePort(); err != nil {
			return nil, err
		}
		args = append(args, "--pprof-address", c.pprof)
	}
	if useTLS && first != nil {
		c.pkiDir = first.pkiDir
		args = append(args, "--pki-dir", c.pkiDir)
	} else if useTLS {
		c.pkiDir = filepath.Join(dir, "pki")
		if out, err := exec.CommandContext(ctx, bin, "certs", "init", "--dir", c.pkiDir).CombinedOutput(); err != nil {
			logf.Close()
			return nil, fmt.Errorf("%s certs init: %w\n%s", bin, err, out)
		}
		args = append(args, "--pki-dir", c.pkiDir)
	} else {
		args = append(args, "--insecure")
	}
	if c.creds, err = clientCreds(c.pkiDir, pki.AdminName); err != nil {
		logf.Close()
		return nil, err
	}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// The child dies with the bench, even when the bench is killed.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c.pid = c.cmd.Process.Pid
	go func() {
		c.waitErr = c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	if err := c.waitServing(ctx, 90*time.Second); err != nil {
		c.stop(false)
		return nil, fmt.Errorf("%w\n--- control-plane log tail (%s) ---\n%s", err, c.logPath, tail(c.logPath, 30))
	}
	return c, nil
}

// waitServing polls the gRPC health service until the control plane reports SERVING.
func (c *child) waitServing(ctx context.Context, timeout time.Duration) error {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(c.creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("control plane exited during start-up: %v", c.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			// Our child listens before it starts etcd, so a child that lost the port race has exited
			// by now; make sure the answer was not some other process's.
			time.Sleep(200 * time.Millisecond)
			if err := c.alive(); err != nil {
				return err
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("control plane at %s not serving after %s", c.addr, timeout)
}

// heapProfile saves the child's heap profile (after a GC) to path.
func (c *child) heapProfile(ctx context.Context, path string) error {
	if c.pprof == "" {
		return errors.New("no pprof endpoint")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.pprof+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// alive reports an early exit of the child.
func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("control plane (pid %d) exited: %v\n--- log tail (%s) ---\n%s", c.pid, c.waitErr, c.logPath, tail(c.logPath, 30))
	default:
		return nil
	}
}

// stop sends SIGTERM, waits for a graceful stop, then kills. The temp dir goes unless keep.
func (c *child) stop(keep bool) {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if !keep {
		_ = os.RemoveAll(c.dir)
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procCPU is utime+stime of a process (all threads), from /proc/PID/stat. The kernel reports them
// in USER_HZ clock ticks, which is 100 on Linux.
func procCPU(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15 stime
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// procMem reads VmRSS and VmHWM (bytes) from /proc/PID/status.
func procMem(pid string) (rss, hwm int64, err error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		fs := strings.Fields(v) // "123456 kB"
		if len(fs) >= 1 {
			kb, _ := strconv.ParseInt(fs[0], 10, 64)
			*dst = kb * 1024
		}
	}
	return rss, hwm, sc.Err()
}

// perfRecorder samples the child's stacks with `perf record` during one phase, when --perf-dir is
// set and perf is installed: the profile hint for whatever turns out slow.
type perfRecorder struct {
	cmd  *exec.Cmd
	out  string
	done chan struct{}
}

func startPerf(dir, phase string, pid int) *perfRecorder {
	if dir == "" || pid == 0 {
		return nil
	}
	path, err := exec.LookPath("perf")
	if err != nil {
		return nil
	}
	out := filepath.Join(dir, phase+".perf.data")
	cmd := exec.Command(path, "record", "-q", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", out)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil
	}
	p := &perfRecorder{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	time.Sleep(300 * time.Millisecond) // let it attach
	return p
}

// stop ends the recording and summarises it: the hottest symbols by self time, then the inclusive
// time of the control plane's own functions and of a few telling frames (gRPC encode/decode, proto
// unmarshal, GC, page faults, etcd).
func (p *perfRecorder) stop(top int) string {
	if p == nil {
		return ""
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	self := perfLines(p.out, false, 1, top, nil)
	incl := perfLines(p.out, true, 2, 16, func(sym string) bool {
		if strings.Contains(sym, "fleetgate/fleetgate/gen/") {
			return false
		}
		for _, k := range []string{"fleetgate/fleetgate/controlplane", "grpc.encode", "grpc.recv", "proto.UnmarshalOptions.unmarshal",
			"runtime.gcBgMarkWorker", "asm_exc_page_fault", "(*EtcdServer).apply", "mvcc.(*", "wal.(*WAL).sync"} {
			if strings.Contains(sym, k) {
				return true
			}
		}
		return false
	})
	if self == "" && incl == "" {
		return "" // too short a phase for any sample
	}
	return "self time:\n" + self + "\ninclusive (children) time, selected frames:\n" + incl
}

// perfLines runs perf report and keeps "pct [x] symbol" (children: "total self [x] symbol").
func perfLines(data string, children bool, limit float64, top int, keep func(string) bool) string {
	args := []string{"report", "-i", data, "--stdio", "--sort", "symbol", "-g", "none", "--percent-limit", fmt.Sprint(limit)}
	if children {
		args = append(args, "--children")
	} else {
		args = append(args, "--no-children")
	}
	out, err := exec.Command("perf", args...).Output()
	if err != nil {
		return "  perf report: " + err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		n := 3
		if children {
			n = 4
		}
		if len(f) < n {
			continue
		}
		sym := f[n-1]
		if keep != nil && !keep(sym) {
			continue
		}
		lines = append(lines, "  "+strings.Join(f[:n], "  "))
		if len(lines) == top {
			break
		}
	}
	return strings.Join(lines, "\n")
}
