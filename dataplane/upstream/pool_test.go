package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBackendIdleClose: the backend closes a keep-alive connection after its
// own idle timeout. The next request must not fail, whatever its method.
func TestBackendIdleClose(t *testing.T) {
	var posts atomic.Int32
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			posts.Add(1)
		}
		io.WriteString(w, "ok")
	}, func(s *httptest.Server) { s.Config.IdleTimeout = 50 * time.Millisecond }, false)
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	for i, method := range []string{"GET", "GET", "POST"} {
		if i > 0 {
			waitFor(t, "backend to close the idle connection", func() bool { return b.closed.Load() == int32(i) })
		}
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("payload")
		}
		w := newSpy()
		status, err := p.Forward(context.Background(), w, newOut(t, method, b.addr(), "/", body), time.Second)
		if err != nil || status != 200 || w.Body() != "ok" {
			t.Fatalf("%s #%d after idle close: status %d, err %v, body %q", method, i, status, err, w.Body())
		}
	}
	if n := b.accepted.Load(); n != 3 {
		t.Errorf("backend accepted %d connections, want 3", n)
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("backend saw %d POSTs, want 1", n)
	}
}

// TestLivenessProbe checks the checkout probe directly: once the backend has
// closed an idle connection, alive reports false.
func TestLivenessProbe(t *testing.T) {
	if !canProbe {
		t.Skip("no liveness probe on this platform")
	}
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	c := p.idle[0]
	p.mu.Unlock()
	if !c.alive() {
		t.Fatal("healthy idle connection reported dead")
	}
	b.CloseClientConnections()
	waitFor(t, "probe to notice the backend closed the connection", func() bool { return !c.alive() })
}

// TestStaleConnectionRetry: a reused connection dies after the request was
// sent and before any response byte (the race a probe cannot close). Safe
// requests are retried on a fresh connection; others fail without being resent.
func TestStaleConnectionRetry(t *testing.T) {
	tests := []struct {
		method    string
		body      string
		wantRetry bool
	}{
		{"GET", "", true},
		{"HEAD", "", true},
		{"OPTIONS", "", true},
		{"POST", "form=1", false},
		{"POST", "", false},
		{"DELETE", "", false},
		{"PUT", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+"/"+tt.body, func(t *testing.T) {
			var received sync.Map // "METHOD /path" -> *atomic.Int32
			count := func(m string) *atomic.Int32 {
				v, _ := received.LoadOrStore(m, new(atomic.Int32))
				return v.(*atomic.Int32)
			}
			rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, idx int) {
				for n := 0; ; n++ {
					req, _, err := readRequest(br)
					if err != nil {
						return
					}
					count(req.Method + " " + req.URL.Path).Add(1)
					if idx == 0 && n == 1 {
						return // read the second request, then hang up without a response
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			p := NewPool(rb.addr(), Options{})
			defer p.Close()

			if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", rb.addr(), "/warmup", nil), time.Second); err != nil {
				t.Fatal(err)
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			w := newSpy()
			status, err := p.Forward(context.Background(), w, newOut(t, tt.method, rb.addr(), "/", body), time.Second)
			if tt.wantRetry {
				if err != nil || status != 200 {
					t.Fatalf("status %d, err %v; want transparent retry", status, err)
				}
				if n := rb.accepted.Load(); n != 2 {
					t.Errorf("backend accepted %d connections, want 2", n)
				}
				if n := count(tt.method + " /").Load(); n != 2 {
					t.Errorf("backend saw %s %d times, want 2 (dropped + retried)", tt.method, n)
				}
				return
			}
			if !errors.Is(err, ErrBadResponse) || status != 0 {
				t.Fatalf("status %d, err %v; want ErrBadResponse", status, err)
			}
			w.assertUntouched(t)
			if n := count(tt.method + " /").Load(); n != 1 {
				t.Errorf("backend saw %s %d times, want exactly 1 (never resent)", tt.method, n)
			}
			if n := rb.accepted.Load(); n != 1 {
				t.Errorf("backend accepted %d connections, want 1", n)
			}
		})
	}
}

func TestMaxIdleConns(t *testing.T) {
	const n, maxIdle = 6, 2
	var inHandler atomic.Int32
	gate := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		inHandler.Add(1)
		<-gate
		io.WriteString(w, "ok")
	})
	p := NewPool(b.addr(), Options{MaxIdleConns: maxIdle})
	defer p.Close()

	results := make([]<-chan result, n)
	for i := range results {
		results[i] = forwardBG(context.Background(), p, newSpy(), newOut(t, "GET", b.addr(), "/", nil), 5*time.Second)
	}
	waitFor(t, "all requests to be in flight", func() bool { return inHandler.Load() == n })
	close(gate)
	for _, ch := range results {
		if r := await(t, ch); r.err != nil || r.status != 200 {
			t.Fatalf("status %d, err %v", r.status, r.err)
		}
	}
	if got := p.IdleConns(); got != maxIdle {
		t.Errorf("IdleConns = %d, want %d", got, maxIdle)
	}
	if got := b.accepted.Load(); got != n {
		t.Errorf("backend accepted %d connections, want %d", got, n)
	}
	waitFor(t, "surplus connections to be closed", func() bool { return b.closed.Load() == n-maxIdle })
}

func TestKeepAliveDisabled(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := NewPool(b.addr(), Options{MaxIdleConns: -1})
	defer p.Close()
	for range 3 {
		if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil {
			t.Fatal(err)
		}
		if p.IdleConns() != 0 {
			t.Fatal("connection pooled with MaxIdleConns < 0")
		}
	}
	if n := b.accepted.Load(); n != 3 {
		t.Errorf("backend accepted %d connections, want 3", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Run("expired on checkout", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		p := NewPool(b.addr(), Options{IdleTimeout: time.Hour})
		defer p.Close()
		for range 2 {
			if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil {
				t.Fatal(err)
			}
		}
		p.mu.Lock()
		p.idle[0].idleSince = time.Now().Add(-2 * time.Hour) // pretend it idled past IdleTimeout
		p.mu.Unlock()
		if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil {
			t.Fatal(err)
		}
		if n := b.accepted.Load(); n != 2 {
			t.Errorf("backend accepted %d connections, want 2 (expired conn replaced)", n)
		}
		waitFor(t, "expired connection to be closed", func() bool { return b.closed.Load() == 1 })
	})
	t.Run("swept in background", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		p := NewPool(b.addr(), Options{IdleTimeout: 50 * time.Millisecond})
		defer p.Close()
		for round := range 2 { // the sweep timer re-arms after emptying the list
			if _, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "idle list to be swept", func() bool { return p.IdleConns() == 0 })
			waitFor(t, "backend to see the close", func() bool { return b.closed.Load() == int32(round+1) })
		}
	})
}

func TestConcurrentForward(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Query().Get("i"), body)
	})
	const maxIdle = 8
	p := NewPool(b.addr(), Options{MaxIdleConns: maxIdle})
	defer p.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			for i := range 40 {
				method, body := "GET", ""
				var rd io.Reader
				if i%3 == 0 {
					method, body = "POST", fmt.Sprintf("g%d", g)
					rd = strings.NewReader(body)
				}
				id := fmt.Sprintf("%d-%d", g, i)
				w := newSpy()
				status, err := p.Forward(context.Background(), w, newOut(t, method, b.addr(), "/?i="+id, rd), 5*time.Second)
				if want := method + " " + id + " " + body; err != nil || status != 200 || w.Body() != want {
					errs <- fmt.Errorf("%s %s: status %d, err %v, body %q want %q", method, id, status, err, w.Body(), want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := p.IdleConns(); n > maxIdle || n == 0 {
		t.Errorf("IdleConns = %d, want 1..%d", n, maxIdle)
	}
}

func TestCancel(t *testing.T) {
	entered := make(chan string, 4)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			io.WriteString(w, "start")
			w.(http.Flusher).Flush()
		}
		entered <- r.URL.Path
		<-r.Context().Done() // never finishes on its own
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()

	for _, tt := range []struct {
		path       string
		wantStatus int
	}{{"/header", 0}, {"/body", 200}} {
		t.Run(tt.path, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := newSpy()
			ch := forwardBG(ctx, p, w, newOut(t, "GET", b.addr(), tt.path, nil), 0)
			if got := <-entered; got != tt.path {
				t.Fatalf("backend entered %s", got)
			}
			if tt.wantStatus != 0 {
				waitFor(t, "first body bytes", func() bool { return w.Body() == "start" })
			}
			cancel()
			start := time.Now()
			r := await(t, ch)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Forward took %v to notice cancellation", d)
			}
			if !errors.Is(r.err, ErrCanceled) || !errors.Is(r.err, context.Canceled) || r.status != tt.wantStatus {
				t.Fatalf("status %d, err %v; want %d + ErrCanceled", r.status, r.err, tt.wantStatus)
			}
			if tt.wantStatus == 0 {
				w.assertUntouched(t)
			}
			if p.IdleConns() != 0 {
				t.Error("aborted connection was pooled")
			}
		})
	}

	// An already-canceled context does not contact the backend.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := b.accepted.Load()
	w := newSpy()
	if _, err := p.Forward(ctx, w, newOut(t, "GET", b.addr(), "/", nil), 0); !errors.Is(err, ErrCanceled) {
		t.Fatalf("err %v; want ErrCanceled", err)
	}
	w.assertUntouched(t)
	if b.accepted.Load() != before {
		t.Error("backend contacted with a canceled context")
	}
}

// An idle pooled connection holds nothing of the exchange it served: not the outgoing request
// (which a proxy builds from its client's request, pooled buffers and all), nor the response.
func TestIdleConnHoldsNoRequest(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	freed := make(chan struct{})
	out := newOut(t, "GET", b.addr(), "/", nil)
	runtime.AddCleanup(out, func(ch chan struct{}) { close(ch) }, freed)
	w := newSpy()
	if status, err := p.Forward(context.Background(), w, out, time.Second); err != nil || status != 200 {
		t.Fatalf("status %d, err %v", status, err)
	}
	out = nil
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle connections after the exchange, want 1", idle)
	}
	for range 50 {
		runtime.GC()
		select {
		case <-freed:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Error("the outgoing request of an exchange is still reachable from the idle connection")
}

// A backend connection reuses its response header map from one response to the next: nothing of
// one response's header shows in the next one's, however many fields it had.
func TestResponseHeaderNotCarriedOver(t *testing.T) {
	var n atomic.Int32
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("X-First", "1")
		case 2:
			for i := range 40 { // more fields than a reused map keeps
				w.Header().Set(fmt.Sprintf("X-Many-%d", i), "v")
			}
		}
		io.WriteString(w, "ok")
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	var got []http.Header
	for range 3 {
		w := newSpy()
		if status, err := p.Forward(context.Background(), w, newOut(t, "GET", b.addr(), "/", nil), time.Second); err != nil || status != 200 {
			t.Fatalf("status %d, err %v", status, err)
		}
		got = append(got, w.Header())
	}
	if n := b.accepted.Load(); n != 1 {
		t.Fatalf("%d backend connections, want the one reused", n)
	}
	if got[0].Get("X-First") != "1" || len(got[1].Values("X-Many-39")) != 1 {
		t.Fatalf("responses' headers %v and %v, want X-First in the first, X-Many-* in the second", got[0], got[1])
	}
	if _, ok := got[1]["X-First"]; ok {
		t.Errorf("the second response has X-First, from the first")
	}
	for k := range got[2] {
		if k == "X-First" || strings.HasPrefix(k, "X-Many-") {
			t.Errorf("the third response has %s, from an earlier one", k)
		}
	}
	if got[0].Get("X-First") != "1" {
		t.Errorf("the first response's header changed after later ones: %v", got[0])
	}
}
