package probe

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRunHTTPHealthy(t *testing.T) {
	srv := startHTTP(t, okHandler("ok"))
	s := specFor(t, srv)
	before := time.Now()
	r := Run(context.Background(), s)
	wantHealthy(t, r)
	if r.Status != 200 {
		t.Errorf("Status = %d, want 200", r.Status)
	}
	if want := srv.Listener.Addr().String(); r.Addr != want {
		t.Errorf("Addr = %q, want %q", r.Addr, want)
	}
	if got := stageNames(r); got != "tcp,http,body" {
		t.Errorf("stages = %s, want tcp,http,body", got)
	}
	if st, _ := findStage(r, StageHTTP); st.Detail != "200 OK" {
		t.Errorf("http stage detail %q", st.Detail)
	}
	if st, _ := findStage(r, StageBody); st.Detail != "2 bytes read" {
		t.Errorf("body stage detail %q", st.Detail)
	}
	if r.At.Before(before) || r.Duration <= 0 || r.Duration > 5*time.Second {
		t.Errorf("At %v (probe started after %v), Duration %v", r.At, before, r.Duration)
	}
	var sum time.Duration
	for _, st := range r.Stages {
		sum += st.Duration
	}
	if sum > r.Duration {
		t.Errorf("stage durations %v exceed the probe's %v", sum, r.Duration)
	}
}

// TestRunRequest checks what the backend receives.
func TestRunRequest(t *testing.T) {
	type seen struct {
		method, uri, proto, host, ua string
		close                        bool
	}
	var mu sync.Mutex
	var got []seen
	srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.RequestURI, r.Proto, r.Host, r.UserAgent(), r.Close})
		mu.Unlock()
	}))
	_, port := hostPort(t, srv.Listener.Addr().String())
	tests := []struct {
		name       string
		hostHeader string
		path       string
		want       seen
	}{
		{"configured host and path", "app.example.com", "/health?deep=1",
			seen{"GET", "/health?deep=1", "HTTP/1.1", "app.example.com", UserAgent, true}},
		{"default host header is host:port", "", "/",
			seen{"GET", "/", "HTTP/1.1", "127.0.0.1:" + strconv.Itoa(port), UserAgent, true}},
		{"empty path is /", "h", "",
			seen{"GET", "/", "HTTP/1.1", "h", UserAgent, true}},
		{"unsafe bytes escaped or dropped", "h\r\nX-Evil: 1", "/a b\r\n",
			seen{"GET", "/a%20b%0D%0A", "HTTP/1.1", "hX-Evil:1", UserAgent, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			s := specFor(t, srv)
			s.HostHeader, s.Path = tt.hostHeader, tt.path
			wantHealthy(t, Run(context.Background(), s))
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("backend saw %+v, want one %+v", got, tt.want)
			}
		})
	}
}

func TestRunHTTPClassification(t *testing.T) {
	const chunk = 4096 // the bufio.Reader size: matches past it span several reads
	big := func(n int, at int, s string) string {
		b := []byte(strings.Repeat("x", n))
		copy(b[at:], s)
		return string(b)
	}
	tests := []struct {
		name    string
		status  int
		body    string
		codes   []string
		match   string
		reason  string // "" healthy
		facts   []string
		wantSt  int
		noFlush bool
	}{
		{name: "200 default range", status: 200, body: "ok", wantSt: 200},
		{name: "399 default range", status: 399, wantSt: 399},
		{name: "404 status mismatch", status: 404, reason: ReasonStatusMismatch,
			facts: []string{"Expected:200-399 Received:404"}, wantSt: 404},
		{name: "500 status mismatch", status: 500, reason: ReasonStatusMismatch,
			facts: []string{"Expected:200-399 Received:500"}, wantSt: 500},
		{name: "401 in range list", status: 401, codes: []string{"200-299", "401"}, wantSt: 401},
		{name: "204 in range list", status: 204, codes: []string{"200-299", "401"}, wantSt: 204},
		{name: "500 outside range list", status: 500, codes: []string{"200-299", "401"}, reason: ReasonStatusMismatch,
			facts: []string{"Expected:200-299,401 Received:500"}, wantSt: 500},
		{name: "302 outside range list", status: 302, codes: []string{"200-299", "401"}, reason: ReasonStatusMismatch,
			facts: []string{"Expected:200-299,401 Received:302"}, wantSt: 302},
		{name: "body contains match", status: 200, body: "status: healthy\n", match: "healthy", wantSt: 200},
		{name: "body mismatch", status: 200, body: "status: degraded\n", match: "healthy", reason: ReasonBodyMismatch,
			facts: []string{`"healthy"`, "17 bytes"}, wantSt: 200},
		{name: "match beyond first read chunk", status: 200, body: big(40000, 3*chunk+100, "healthy"), match: "healthy", wantSt: 200},
		{name: "match ending at 64 KiB", status: 200, body: big(MaxBodyBytes+1000, MaxBodyBytes-7, "healthy"), match: "healthy", wantSt: 200},
		{name: "match straddling 64 KiB", status: 200, body: big(MaxBodyBytes+1000, MaxBodyBytes-3, "healthy"), match: "healthy",
			reason: ReasonBodyMismatch, facts: []string{`"healthy"`, "first 65536 bytes"}, wantSt: 200},
		{name: "match beyond 64 KiB", status: 200, body: big(MaxBodyBytes+10000, MaxBodyBytes+100, "healthy"), match: "healthy",
			reason: ReasonBodyMismatch, facts: []string{`"healthy"`, "first 65536 bytes"}, wantSt: 200},
		{name: "large body, no match string", status: 200, body: big(1<<20, 0, ""), wantSt: 200},
		{name: "content-length body", status: 200, body: big(30000, 29000, "healthy"), match: "healthy", wantSt: 200, noFlush: true},
		{name: "status mismatch wins over body", status: 503, body: "healthy", match: "nope", reason: ReasonStatusMismatch,
			facts: []string{"Expected:200-399 Received:503"}, wantSt: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.noFlush {
					w.Header().Set("Content-Length", strconv.Itoa(len(tt.body)))
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			s := specFor(t, srv)
			var err error
			if s.Match.Status, err = ParseStatusRanges(tt.codes); err != nil {
				t.Fatal(err)
			}
			s.Match.Body = tt.match
			r := Run(context.Background(), s)
			if tt.reason == "" {
				wantHealthy(t, r)
			} else {
				wantUnhealthy(t, r, tt.reason, tt.facts...)
			}
			if r.Status != tt.wantSt {
				t.Errorf("Status = %d, want %d", r.Status, tt.wantSt)
			}
		})
	}
}

// TestRunInterimResponse: a 103 Early Hints before the final status is skipped.
func TestRunInterimResponse(t *testing.T) {
	srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "ok")
	}))
	r := Run(context.Background(), specFor(t, srv))
	wantHealthy(t, r)
	if r.Status != 200 {
		t.Errorf("Status = %d", r.Status)
	}
}

func TestRunTCPConnectError(t *testing.T) {
	port := closedPort(t)
	r := Run(context.Background(), Spec{Protocol: "Http", Host: "127.0.0.1", Port: port, Path: "/", Timeout: 2 * time.Second})
	p := strconv.Itoa(port)
	wantUnhealthy(t, r, ReasonTCPConnect, "127.0.0.1", "port "+p, "refused")
	if r.Addr != "127.0.0.1:"+p {
		t.Errorf("Addr = %q", r.Addr)
	}
	if got := stageNames(r); got != "tcp" {
		t.Errorf("stages = %s", got)
	}
	if r.Status != 0 {
		t.Errorf("Status = %d", r.Status)
	}
}

// TestRunBrokenBackends: backends that accept the connection but do not
// speak HTTP properly.
func TestRunBrokenBackends(t *testing.T) {
	readRequest := func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				return
			}
		}
	}
	tests := []struct {
		name   string
		serve  func(net.Conn)
		reason string
		facts  []string
	}{
		{"closes before response", func(c net.Conn) { readRequest(c) },
			ReasonTCPConnect, []string{"closed the connection before", "EOF"}},
		{"not HTTP", func(c net.Conn) { readRequest(c); io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n") },
			ReasonStatusMismatch, []string{"Expected:200-399 Received:none", "malformed HTTP"}},
		{"truncated body", func(c net.Conn) {
			readRequest(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhealthy")
		}, ReasonTCPConnect, []string{"middle of the response body", "7 bytes read"}},
		{"bad chunked body", func(c net.Conn) {
			readRequest(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhealthy\r\n0\r\n\r\n")
		}, ReasonBodyMismatch, []string{"could not be read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, p := rawServer(t, tt.serve)
			r := Run(context.Background(), Spec{Protocol: "Http", Host: h, Port: p, Path: "/", Timeout: 2 * time.Second})
			wantUnhealthy(t, r, tt.reason, tt.facts...)
		})
	}
}

func TestRunDNS(t *testing.T) {
	srv := startHTTP(t, okHandler("ok"))
	_, port := hostPort(t, srv.Listener.Addr().String())
	dns := startDNS(t, map[string]net.IP{"backend.fleetgate.test.": net.IPv4(127, 0, 0, 1)}, false)
	res := testResolver(dns)

	t.Run("resolved", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "backend.fleetgate.test", Port: port, Path: "/", Timeout: 5 * time.Second, Resolver: res})
		wantHealthy(t, r)
		if want := "127.0.0.1:" + strconv.Itoa(port); r.Addr != want {
			t.Errorf("Addr = %q, want %q", r.Addr, want)
		}
		if got := stageNames(r); got != "dns,tcp,http,body" {
			t.Errorf("stages = %s", got)
		}
		if st := r.Stages[0]; st.Detail != "127.0.0.1" {
			t.Errorf("dns stage detail %q", st.Detail)
		}
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "missing.fleetgate.test", Port: port, Path: "/", Timeout: 5 * time.Second, Resolver: res})
		wantUnhealthy(t, r, ReasonDNS, `"missing.fleetgate.test"`, "no such host")
		if r.Addr != "" || stageNames(r) != "dns" {
			t.Errorf("Addr %q, stages %s", r.Addr, stageNames(r))
		}
	})
	t.Run("resolver error, custom Resolver", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "x.fleetgate.test", Port: port, Timeout: 5 * time.Second,
			Resolver: resolverFunc(func(ctx context.Context, host string) ([]string, error) { return nil, errors.New("server misbehaving") })})
		wantUnhealthy(t, r, ReasonDNS, `"x.fleetgate.test"`, "server misbehaving")
	})
	t.Run("no addresses", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "x.fleetgate.test", Port: port, Timeout: 5 * time.Second,
			Resolver: resolverFunc(func(ctx context.Context, host string) ([]string, error) { return nil, nil })})
		wantUnhealthy(t, r, ReasonDNS, `"x.fleetgate.test"`, "no addresses")
	})
	t.Run("no host", func(t *testing.T) {
		wantUnhealthy(t, Run(context.Background(), Spec{Protocol: "Http", Port: port}), ReasonDNS, "no host")
	})
}

type resolverFunc func(ctx context.Context, host string) ([]string, error)

func (f resolverFunc) LookupHost(ctx context.Context, host string) ([]string, error) {
	return f(ctx, host)
}

// TestRunTimeout: the probe deadline hit in any stage is
// backend-server-timeout, and Run returns soon after it.
func TestRunTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	const bound = 2 * time.Second // correctness bound, not a performance assertion

	slow := startHTTP(t, sleepHandler(5*time.Second))
	slowBody := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "status: ")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(5 * time.Second):
			io.WriteString(w, "healthy")
		case <-r.Context().Done():
		}
	}))
	// Accepts and reads, never answers: the TLS handshake hangs.
	silentHost, silentPort := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	blackhole := testResolver(startDNS(t, nil, true))
	stubborn := resolverFunc(func(ctx context.Context, host string) ([]string, error) {
		time.Sleep(5 * time.Second) // ignores ctx
		return []string{"127.0.0.1"}, nil
	})

	tests := []struct {
		name  string
		spec  func() Spec
		stage string
		facts []string
	}{
		{"slow response header", func() Spec { return specFor(t, slow) }, StageHTTP,
			[]string{"within the probe timeout of 300ms", "waiting for the response header", slow.Listener.Addr().String()}},
		{"slow body", func() Spec { s := specFor(t, slowBody); s.Match.Body = "healthy"; return s }, StageBody,
			[]string{"300ms", "reading the response body"}},
		{"slow body, no match string", func() Spec { return specFor(t, slowBody) }, StageBody,
			[]string{"300ms", "reading the response body"}},
		{"slow TLS handshake", func() Spec {
			return Spec{Protocol: "Https", Host: silentHost, Port: silentPort, HostHeader: "backend.test"}
		}, StageTLS, []string{"300ms", "TLS handshake"}},
		{"unanswered DNS", func() Spec {
			return Spec{Protocol: "Http", Host: "slow.fleetgate.test", Port: 80, Resolver: blackhole}
		}, StageDNS, []string{"300ms", `resolving "slow.fleetgate.test"`}},
		{"resolver ignoring ctx", func() Spec {
			return Spec{Protocol: "Http", Host: "slow.fleetgate.test", Port: 80, Resolver: stubborn}
		}, StageDNS, []string{"300ms", `resolving "slow.fleetgate.test"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.spec()
			s.Timeout = timeout
			start := time.Now()
			r := Run(context.Background(), s)
			elapsed := time.Since(start)
			wantUnhealthy(t, r, ReasonTimeout, tt.facts...)
			if elapsed > bound {
				t.Errorf("Run took %v with Timeout %v", elapsed, timeout)
			}
			if r.Duration < timeout-10*time.Millisecond {
				t.Errorf("Duration %v is shorter than the timeout %v", r.Duration, timeout)
			}
			if last := r.Stages[len(r.Stages)-1]; last.Name != tt.stage {
				t.Errorf("timed out in stage %s (%s), want %s", last.Name, stageNames(r), tt.stage)
			}
		})
	}
}

// TestRunReturnsWithinTimeout is the bound the health checker relies on: a
// 300ms probe against a handler that sleeps 5s returns within about 1s.
func TestRunReturnsWithinTimeout(t *testing.T) {
	srv := startHTTP(t, sleepHandler(5*time.Second))
	s := specFor(t, srv)
	s.Timeout = 300 * time.Millisecond
	start := time.Now()
	r := Run(context.Background(), s)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Run returned after %v", d)
	}
	wantUnhealthy(t, r, ReasonTimeout, "300ms")
}

func TestRunParentContext(t *testing.T) {
	srv := startHTTP(t, sleepHandler(5*time.Second))
	t.Run("earlier parent deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		r := Run(ctx, specFor(t, srv)) // Timeout 5s
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Run returned after %v", d)
		}
		wantUnhealthy(t, r, ReasonTimeout, "waiting for the response header")
	})
	t.Run("deadline already passed: connect stage", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		r := Run(ctx, specFor(t, srv))
		wantUnhealthy(t, r, ReasonTimeout, "timed out connecting", srv.Listener.Addr().String())
		if got := stageNames(r); got != "tcp" {
			t.Errorf("stages = %s", got)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		r := Run(ctx, specFor(t, srv))
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Run returned after %v", d)
		}
		wantUnhealthy(t, r, ReasonTimeout, "canceled")
	})
}

func TestHints(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons {
		h := Hint(r)
		if h == "" || strings.Contains(h, "\n") || seen[h] {
			t.Errorf("Hint(%q) = %q: want a distinct one-line hint", r, h)
		}
		seen[h] = true
	}
	if len(Reasons) != 10 {
		t.Errorf("%d reasons", len(Reasons))
	}
	if Hint("") != "" || Hint("nope") != "" {
		t.Error("hint for unknown reason")
	}
	if !strings.Contains(Hint(ReasonStatusMismatch), "match.statusCodes") {
		t.Error(Hint(ReasonStatusMismatch))
	}
}

func TestRunAddressing(t *testing.T) {
	srv := startHTTP(t, okHandler("ok"))
	_, port := hostPort(t, srv.Listener.Addr().String())
	t.Run("invalid port", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "127.0.0.1", Port: 70000, Timeout: time.Second})
		wantUnhealthy(t, r, ReasonTCPConnect, "127.0.0.1", "port 70000", "invalid port")
	})
	t.Run("default port", func(t *testing.T) {
		// Whatever listens there (usually nothing), the address dialled is :80 / :443.
		for proto, want := range map[string]string{"Http": "127.0.0.1:80", "Https": "127.0.0.1:443"} {
			r := Run(context.Background(), Spec{Protocol: proto, Host: "127.0.0.1", Timeout: time.Second})
			if r.Addr != want {
				t.Errorf("%s: Addr = %q, want %q", proto, r.Addr, want)
			}
		}
	})
	t.Run("resolver answer is not an IP", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "x.fleetgate.test", Port: port, Timeout: time.Second,
			Resolver: resolverFunc(func(context.Context, string) ([]string, error) { return []string{"elsewhere.test"}, nil })})
		wantUnhealthy(t, r, ReasonDNS, `"x.fleetgate.test"`, `"elsewhere.test", not an IP address`)
	})
	t.Run("custom resolver, first address dialled", func(t *testing.T) {
		r := Run(context.Background(), Spec{Protocol: "Http", Host: "x.fleetgate.test", Port: port, Timeout: time.Second,
			Resolver: resolverFunc(func(context.Context, string) ([]string, error) { return []string{"127.0.0.1", "127.0.0.2"}, nil })})
		wantHealthy(t, r)
		if st := r.Stages[0]; st.Name != StageDNS || st.Detail != "127.0.0.1,127.0.0.2" {
			t.Errorf("dns stage %+v", st)
		}
		if want := "127.0.0.1:" + strconv.Itoa(port); r.Addr != want {
			t.Errorf("Addr = %q, want %q", r.Addr, want)
		}
	})
}

func TestStripPort(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "backend.test": "backend.test", "backend.test:8443": "backend.test",
		"[::1]": "::1", "[::1]:443": "::1", "::1": "::1", "[bad": "[bad",
	} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
}
