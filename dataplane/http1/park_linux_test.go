package http1

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"testing"
	"time"
)

// waitParked polls until the server holds want parked connections.
func waitParked(t *testing.T, s *Server, want int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for s.idle.parked() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections parked, want %d", s.idle.parked(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutinesBelow polls until fewer than n goroutines run.
func goroutinesBelow(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for runtime.NumGoroutine() >= n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want fewer than %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Idle connections past idleHandOff are parked: they hold no goroutine, each still serves its
// next request (and parks again), and their states read as if they had kept one.
func TestParkedHoldNoGoroutine(t *testing.T) {
	const n = 50
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record}
	r := start(t, s)
	base := runtime.NumGoroutine()

	cs := make([]*client, n)
	for i := range cs {
		cs[i] = dial(t, r.addr)
		cs[i].do(get(fmt.Sprint("/", i)))
	}
	waitParked(t, s, n)
	// Not one goroutine per connection: the parker's reader and a few of the runtime's.
	goroutinesBelow(t, base+5)

	for i, c := range cs {
		if _, body := c.do(get(fmt.Sprint("/again", i))); body != fmt.Sprint("GET /again", i) {
			t.Fatalf("conn %d after parking: %q", i, body)
		}
	}
	waitParked(t, s, n)
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle}
	if got := log.get(cs[0]); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
}

// A parked connection the client closes is closed at once, with its state, and leaves the parker.
func TestParkedClientCloses(t *testing.T) {
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record}
	r := start(t, s)
	c := dial(t, r.addr)
	c.do(get("/"))
	waitParked(t, s, 1)
	c.c.Close()
	got := log.waitFor(t, c, http.StateClosed)
	if got[len(got)-2] != http.StateIdle {
		t.Errorf("states %v, want Idle then Closed", got)
	}
	waitParked(t, s, 0)
}

// The idle timeout of a parked connection still counts from the end of its last response.
func TestParkedIdleTimeout(t *testing.T) {
	const idle = idleHandOff + 400*time.Millisecond
	s := &Server{Handler: echo, IdleTimeout: idle}
	r := start(t, s)
	c := dial(t, r.addr)
	c.do(get("/"))
	from := time.Now()
	waitParked(t, s, 1)
	c.expectClosed()
	if waited := time.Since(from); waited < idle-50*time.Millisecond {
		t.Errorf("closed after %v idle, want the idle timeout (%v)", waited, idle)
	}
	waitParked(t, s, 0)
}

// Shutdown and Close take parked connections back, close them, and stop the parker's goroutine.
func TestParkedShutdownAndClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(*Server) error
	}{
		{"Shutdown", func(s *Server) error {
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			return s.Shutdown(ctx)
		}},
		{"Close", (*Server).Close},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log stateLog
			s := &Server{Handler: echo, ConnState: log.record}
			r := start(t, s)
			a, b := dial(t, r.addr), dial(t, r.addr)
			a.do(get("/a"))
			b.do(get("/b"))
			waitParked(t, s, 2)
			if err := tc.stop(s); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			for _, c := range []*client{a, b} {
				c.expectClosed()
				log.waitFor(t, c, http.StateClosed)
			}
			waitParked(t, s, 0)
			// The parker's reader is gone too.
			select {
			case <-s.idle.done:
			case <-time.After(ioTimeout):
				t.Fatal("the parker's goroutine still runs")
			}
			if s.idle.park(&conn{s: s, waiter: &readWaiter{}}, 1) {
				t.Error("a stopped server parked a connection")
			}
		})
	}
}
