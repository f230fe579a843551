package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- backends ----

type backendMode int

const (
	modeEcho  backendMode = iota // answers "name=N host=H path=P" at once
	modeSlow                     // answers /health at once, everything else after delay
	modeReset                    // answers /health; everything else: headers, part of the body, then RST
)

// span is a time a backend was down; to is zero while it still is.
type span struct{ from, to time.Time }

// backend is a real HTTP server on a loopback address that can be taken down and up again.
type backend struct {
	t     *testing.T
	name  string
	addr  string
	mode  backendMode
	delay time.Duration

	served atomic.Int64 // requests answered, /health excluded

	mu    sync.Mutex
	srv   *http.Server
	downs []span
}

func newBackend(t *testing.T, name, addr string, mode backendMode) *backend {
	t.Helper()
	b := &backend{t: t, name: name, addr: addr, mode: mode, delay: 3 * time.Second}
	if err := b.setUp(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.setUp(false) })
	return b
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		_, _ = io.WriteString(w, "ok")
		return
	}
	b.served.Add(1)
	switch b.mode {
	case modeSlow:
		select {
		case <-time.After(b.delay):
		case <-r.Context().Done():
			return
		}
	case modeReset:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("no hijacker")
		}
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 65536\r\n\r\n")
		_, _ = buf.WriteString(strings.Repeat("x", 1024))
		_ = buf.Flush()
		time.Sleep(20 * time.Millisecond)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
		return
	}
	fmt.Fprintf(w, "name=%s host=%s path=%s\n", b.name, r.Host, r.URL.Path)
}

var echoRE = regexp.MustCompile(`^name=(\S+) host=\S* path=(\S*)\n$`)

// echoed is "NAME PATH" of a modeEcho answer, or the body as it is when it is not one.
func echoed(body string) string {
	if m := echoRE.FindStringSubmatch(body); m != nil {
		return m[1] + " " + m[2]
	}
	return body
}

// setUp starts or stops serving. Down means connections refused: the listener and every open
// connection are closed, as when the process dies.
func (b *backend) setUp(up bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !up {
		if b.srv == nil {
			return nil
		}
		b.downs = append(b.downs, span{from: time.Now()})
		_ = b.srv.Close()
		b.srv = nil
		return nil
	}
	if b.srv != nil {
		return nil
	}
	var (
		l   net.Listener
		err error
	)
	for range 50 { // the port may take a moment to be free again
		if l, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("backend %s up again: %w", b.name, err)
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go func(srv *http.Server) { _ = srv.Serve(l) }(b.srv)
	if n := len(b.downs); n > 0 && b.downs[n-1].to.IsZero() {
		b.downs[n-1].to = time.Now()
	}
	return nil
}

// flap takes the backend down and up every period (+-25%, so that its phase against the probes'
// fixed grid varies) until the returned function is called, which leaves it up.
func (b *backend) flap(period time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		up := true
		for {
			select {
			case <-done:
				_ = b.setUp(true)
				return
			case <-time.After(period*3/4 + rand.N(period/2)):
				up = !up
				if err := b.setUp(up); err != nil {
					b.t.Error(err)
				}
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	b.t.Cleanup(stop)
	return stop
}

// downSpans returns the times the backend was down.
func (b *backend) downSpans() []span {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]span(nil), b.downs...)
}

// wasDown reports whether the backend was down at some moment within [from-slack, to+slack].
func (b *backend) wasDown(from, to time.Time, slack time.Duration) bool {
	from, to = from.Add(-slack), to.Add(slack)
	for _, s := range b.downSpans() {
		end := s.to
		if end.IsZero() {
			end = time.Now()
		}
		if !s.from.After(to) && !end.Before(from) {
			return true
		}
	}
	return false
}

// ---- traffic ----

// target is a worker's listener.
type target struct{ id, base string }

// sample is one request that failed.
type sample struct {
	start, end time.Time
	target     string
	status     int    // 0: the client saw a transport error
	body       string // the body, or the client's error
}

// traffic sends GET requests through workers at a steady pace and counts the answers.
type traffic struct {
	mu         sync.Mutex
	total      int
	failed     int
	byTarget   map[string]int
	byServer   map[string]int
	lastMarker map[string]int // per target, the marker of the last answer
	failures   []sample       // the first 200,000
	maxLatency time.Duration

	stopc   chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
}

// startTraffic runs conns clients per target, each sending GET path and waiting pace between
// requests, until stop (or 30 minutes, whichever comes first).
func startTraffic(t *testing.T, targets []target, conns int, pace time.Duration, path string) *traffic {
	tr := &traffic{byTarget: map[string]int{}, byServer: map[string]int{}, lastMarker: map[string]int{}, stopc: make(chan struct{})}
	hardStop := time.Now().Add(30 * time.Minute)
	for _, tg := range targets {
		for range conns {
			tr.wg.Add(1)
			go func() {
				defer tr.wg.Done()
				transport := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
				defer transport.CloseIdleConnections()
				// Generous: the machine may be shared and slow; a request that takes this long failed.
				client := &http.Client{Timeout: 20 * time.Second, Transport: transport}
				for time.Now().Before(hardStop) {
					select {
					case <-tr.stopc:
						return
					default:
					}
					tr.one(client, tg, path)
					select {
					case <-tr.stopc:
						return
					case <-time.After(pace):
					}
				}
			}()
		}
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *traffic) one(c *http.Client, tg target, path string) {
	start := time.Now()
	status, body := 0, ""
	resp, err := c.Get(tg.base + path)
	if err == nil {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		status, body = resp.StatusCode, string(b)
		if rerr != nil {
			status, body = 0, "reading the body: "+rerr.Error()
		}
	} else {
		body = err.Error()
	}
	end := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.total++
	tr.byTarget[tg.id]++
	tr.maxLatency = max(tr.maxLatency, end.Sub(start))
	if status == 200 {
		if m := nameRE.FindStringSubmatch(body); m != nil {
			tr.byServer[m[1]]++
		}
		if m := markerOf(body); m >= 0 {
			tr.lastMarker[tg.id] = m
		}
		return
	}
	tr.failed++
	if len(tr.failures) < 200000 {
		tr.failures = append(tr.failures, sample{start: start, end: end, target: tg.id, status: status, body: strings.TrimSpace(body)})
	}
}

var (
	nameRE         = regexp.MustCompile(`^name=(\S+) `)
	failedServerRE = regexp.MustCompile(`backend server (\S+) `)
)

// stop ends the traffic and waits for the requests in flight.
func (tr *traffic) stop() {
	if tr.stopped.Swap(true) {
		return
	}
	close(tr.stopc)
	tr.wg.Wait()
}

// counts returns the requests sent and failed so far.
func (tr *traffic) counts() (total, failed int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.total, tr.failed
}

func (tr *traffic) failureList() []sample {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]sample(nil), tr.failures...)
}

func (tr *traffic) marker(id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.lastMarker[id]
}

// servedBy returns the answers per backend name.
func (tr *traffic) servedBy() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]int{}
	for k, v := range tr.byServer {
		out[k] = v
	}
	return out
}

// requireNoFailure fails the test with the first failures, if any.
func (tr *traffic) requireNoFailure(t *testing.T, what string) {
	t.Helper()
	total, failed := tr.counts()
	if failed == 0 {
		return
	}
	fs := tr.failureList()
	var b strings.Builder
	for i, f := range fs {
		if i == 10 {
			break
		}
		fmt.Fprintf(&b, "\n  %s +%s via %s: %d %q", f.start.Format("15:04:05.000"), ms(f.end.Sub(f.start)), f.target, f.status, f.body)
	}
	t.Errorf("%s: %d of %d requests failed:%s", what, failed, total, b.String())
}

// explain sorts failures into those a down backend explains and the others. A failure is explained
// when the gateway named a server of a flapping backend (502 "backend server A could not be
// reached") or the client saw a transport error, and that backend was down during the request.
func explain(fs []sample, slack time.Duration, flappers ...*backend) (explained, unexplained []sample) {
	for _, f := range fs {
		ok := false
		for _, b := range flappers {
			switch {
			case f.status == http.StatusBadGateway:
				m := failedServerRE.FindStringSubmatch(f.body)
				ok = m != nil && m[1] == b.addr && b.wasDown(f.start, f.end, slack)
			case f.status == 0:
				ok = b.wasDown(f.start, f.end, slack)
			}
			if ok {
				break
			}
		}
		if ok {
			explained = append(explained, f)
		} else {
			unexplained = append(unexplained, f)
		}
	}
	return explained, unexplained
}

func describe(fs []sample, n int) string {
	var b strings.Builder
	for i, f := range fs {
		if i == n {
			fmt.Fprintf(&b, "\n  ... %d more", len(fs)-n)
			break
		}
		fmt.Fprintf(&b, "\n  %s +%s via %s: %d %q", f.start.Format("15:04:05.000"), ms(f.end.Sub(f.start)), f.target, f.status, f.body)
	}
	return b.String()
}

// ---- config churn ----

// churn applies g with a new marker every period through server until stopped.
type churn struct {
	stopc chan struct{}
	done  chan struct{}
	once  sync.Once
}

func startChurn(t *testing.T, ap *applier, server string, g gwSpec, every time.Duration) *churn {
	c := &churn{stopc: make(chan struct{}), done: make(chan struct{})}
	hardStop := time.Now().Add(30 * time.Minute)
	go func() {
		defer close(c.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for time.Now().Before(hardStop) {
			select {
			case <-c.stopc:
				return
			case <-tick.C:
			}
			g.marker++
			ap.apply(server, g, "--timeout", "20s")
		}
	}()
	t.Cleanup(c.stop)
	return c
}

// stop ends the churn after the apply in progress.
func (c *churn) stop() {
	c.once.Do(func() { close(c.stopc) })
	<-c.done
}

// detection returns, for each time the backend was down, how long the worker took to mark it
// Unhealthy (none when it came back first).
func detection(downs []span, flips []flip) []time.Duration {
	var out []time.Duration
	for _, d := range downs {
		if d.to.IsZero() {
			continue
		}
		for _, fl := range flips {
			if fl.health == "Unhealthy" && !fl.at.Before(d.from) && !fl.at.After(d.to) {
				out = append(out, fl.at.Sub(d.from))
				break
			}
		}
	}
	return out
}
