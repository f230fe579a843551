package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/sockio"
)

// socketModes runs f with connections as they come from the listener, and with each held by a
// SocketHolder (hl non-nil).
func socketModes(t *testing.T, f func(t *testing.T, listen func(net.Listener) net.Listener, hl func() *holdingListener)) {
	t.Run("socket", func(t *testing.T) {
		f(t, func(l net.Listener) net.Listener { return l }, func() *holdingListener { return nil })
	})
	t.Run("held", func(t *testing.T) {
		var hl *holdingListener
		f(t, func(l net.Listener) net.Listener {
			hl = &holdingListener{Listener: l}
			return hl
		}, func() *holdingListener { return hl })
	})
}

// startWith serves s on a loopback listener passed through wrap.
func startWith(t *testing.T, s *Server, wrap func(net.Listener) net.Listener) *running {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := wrap(l)
	if _, held := wl.(*holdingListener); held {
		s.detach = -1 // the socket leaves Go's poller as the connection parks
	}
	return startOn(t, s, wl, l.Addr().String())
}

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
	socketModes(t, testParkedHoldNoGoroutine)
}

func testParkedHoldNoGoroutine(t *testing.T, listen func(net.Listener) net.Listener, held func() *holdingListener) {
	const n = 50
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record}
	r := startWith(t, s, listen)
	base := runtime.NumGoroutine()

	cs := make([]*client, n)
	for i := range cs {
		cs[i] = dial(t, r.addr)
		cs[i].do(get(fmt.Sprint("/", i)))
	}
	waitParked(t, s, n)
	// Not one goroutine per connection: the parker's reader and a few of the runtime's.
	goroutinesBelow(t, base+5)
	if hl := held(); hl != nil {
		// Held sockets left Go's poller: their net.Conns are closed.
		for i, h := range hl.held {
			if err := h.Socket().SetDeadline(time.Time{}); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("conn %d parked: its socket's SetDeadline: %v, want net.ErrClosed", i, err)
			}
		}
	}

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
	if hl := held(); hl != nil {
		// Each woke once (a new socket) and parked again.
		if got := hl.swaps(); got != n {
			t.Errorf("%d sockets given back, want %d", got, n)
		}
	}
}

// A parked connection the client closes is closed at once, with its state, and leaves the parker.
func TestParkedClientCloses(t *testing.T) {
	socketModes(t, testParkedClientCloses)
}

func testParkedClientCloses(t *testing.T, listen func(net.Listener) net.Listener, held func() *holdingListener) {
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record}
	r := startWith(t, s, listen)
	c := dial(t, r.addr)
	c.do(get("/"))
	waitParked(t, s, 1)
	c.c.Close()
	got := log.waitFor(t, c, http.StateClosed)
	if got[len(got)-2] != http.StateIdle {
		t.Errorf("states %v, want Idle then Closed", got)
	}
	waitParked(t, s, 0)
	if hl := held(); hl != nil {
		// Closed by its client while parked: closed without going back to Go's poller.
		if _, ok := hl.held[0].Socket().(closedSocket); !ok {
			t.Errorf("the holder holds a %T after its client closed, want closedSocket", hl.held[0].Socket())
		}
	}
}

// The idle timeout of a parked connection still counts from the end of its last response.
func TestParkedIdleTimeout(t *testing.T) {
	socketModes(t, testParkedIdleTimeout)
}

func testParkedIdleTimeout(t *testing.T, listen func(net.Listener) net.Listener, held func() *holdingListener) {
	const idle = idleHandOff + 400*time.Millisecond
	s := &Server{Handler: echo, IdleTimeout: idle}
	r := startWith(t, s, listen)
	c := dial(t, r.addr)
	c.do(get("/"))
	from := time.Now()
	waitParked(t, s, 1)
	c.expectClosed()
	if waited := time.Since(from); waited < idle-50*time.Millisecond {
		t.Errorf("closed after %v idle, want the idle timeout (%v)", waited, idle)
	}
	waitParked(t, s, 0)
	if hl := held(); hl != nil {
		// Timed out while parked: closed without going back to Go's poller.
		if _, ok := hl.held[0].Socket().(closedSocket); !ok {
			t.Errorf("the holder holds a %T after the idle timeout, want closedSocket", hl.held[0].Socket())
		}
	}
}

// Parked connections' idle timeouts share one timer (parkTimers): each still closes when its own
// timeout has passed since its last response, never before, so in the order of their last
// requests, and a connection woken and parked again gets its timeout anew.
func TestParkedIdleTimeoutsInOrder(t *testing.T) {
	socketModes(t, func(t *testing.T, listen func(net.Listener) net.Listener, _ func() *holdingListener) {
		const (
			idle    = idleHandOff + 600*time.Millisecond
			stagger = 200 * time.Millisecond
		)
		s := &Server{Handler: echo, IdleTimeout: idle}
		r := startWith(t, s, listen)
		clients := make([]*client, 3)
		last := make([]time.Time, 3)
		for i := range clients {
			clients[i] = dial(t, r.addr)
			clients[i].do(get("/"))
			last[i] = time.Now()
			time.Sleep(stagger)
		}
		waitParked(t, s, 3)
		// The first connection asks again: its timeout starts over, after the others'.
		clients[0].do(get("/again"))
		last[0] = time.Now()
		closed := make(chan int, 3)
		at := make([]time.Time, 3)
		for i, c := range clients {
			go func() {
				c.expectClosed()
				at[i] = time.Now()
				closed <- i
			}()
		}
		var order []int
		for range clients {
			select {
			case i := <-closed:
				order = append(order, i)
			case <-time.After(ioTimeout):
				t.Fatalf("closed so far: %v; want all three closed by their idle timeout", order)
			}
		}
		if want := []int{1, 2, 0}; !slices.Equal(order, want) {
			t.Errorf("closed in the order %v, want %v", order, want)
		}
		for i := range clients {
			if waited := at[i].Sub(last[i]); waited < idle-50*time.Millisecond {
				t.Errorf("connection %d closed %v after its last response, want the idle timeout (%v)", i, waited, idle)
			}
		}
		waitParked(t, s, 0)
	})
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
			socketModes(t, func(t *testing.T, listen func(net.Listener) net.Listener, _ func() *holdingListener) {
				testParkedStop(t, tc.name, tc.stop, listen)
			})
		})
	}
}

func testParkedStop(t *testing.T, name string, stop func(*Server) error, listen func(net.Listener) net.Listener) {
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record}
	r := startWith(t, s, listen)
	a, b := dial(t, r.addr), dial(t, r.addr)
	a.do(get("/a"))
	b.do(get("/b"))
	waitParked(t, s, 2)
	if err := stop(s); err != nil {
		t.Fatalf("%s: %v", name, err)
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
}

// splitConn delays the rest of its next write after the first k bytes, once armed.
type splitConn struct {
	net.Conn
	k     atomic.Int32
	delay time.Duration
}

func (c *splitConn) Write(b []byte) (int, error) {
	k := int(c.k.Swap(0))
	if k <= 0 || k >= len(b) {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:k])
	if err != nil {
		return n, err
	}
	time.Sleep(c.delay)
	m, err := c.Conn.Write(b[k:])
	return n + m, err
}

// TLS connections are parked too, once a read of the next request has timed out: the TLS
// connection then holds no complete record. A record split across the hand-off (part of it read
// into the TLS connection's buffer before it parks, the rest sent after) still completes.
func TestParkedTLS(t *testing.T) {
	socketModes(t, testParkedTLS)
}

func testParkedTLS(t *testing.T, listen func(net.Listener) net.Listener, held func() *holdingListener) {
	cert, pool := testCert(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var log stateLog
	s := &Server{Handler: echo, ConnState: log.record, detach: -1}
	r := startOn(t, s, tls.NewListener(listen(l), &tls.Config{Certificates: []tls.Certificate{cert}}), l.Addr().String())

	raw, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	split := &splitConn{Conn: raw, delay: idleHandOff + 300*time.Millisecond}
	tc := tls.Client(split, &tls.Config{RootCAs: pool, ServerName: "example.test"})
	tc.SetDeadline(time.Now().Add(ioTimeout))
	t.Cleanup(func() { tc.Close() })
	c := &client{t: t, c: tc, br: bufio.NewReader(tc)}

	if _, body := c.do(get("/a")); body != "GET /a" {
		t.Fatalf("first request: %q", body)
	}
	waitParked(t, s, 1)
	if _, body := c.do(get("/b")); body != "GET /b" {
		t.Fatalf("after parking: %q", body)
	}

	// Five bytes of the next record's header now, the rest after the hand-off.
	waitParked(t, s, 1)
	split.k.Store(5)
	done := make(chan string, 1)
	go func() {
		_, body := c.do(get("/c"))
		done <- body
	}()
	time.Sleep(idleHandOff + 100*time.Millisecond)
	if got := s.idle.parked(); got != 1 {
		t.Errorf("%d connections parked with part of a record read, want 1", got)
	}
	select {
	case body := <-done:
		if body != "GET /c" {
			t.Errorf("record split across the hand-off: %q", body)
		}
	case <-time.After(ioTimeout):
		t.Fatal("no answer to a record split across the hand-off")
	}
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle}
	if got := log.waitFor(t, c, http.StateIdle); !slices.Equal(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if hl := held(); hl != nil && hl.swaps() < 2 {
		// Under TLS too, the socket left Go's poller each time it parked.
		t.Errorf("%d sockets given back under TLS, want 2 or more", hl.swaps())
	}
}

// A held socket leaves Go's poller only once its connection has been parked for a while
// (detachAfter): a connection that wakes before keeps its socket. Both kinds serve on.
func TestParkedDetachAfter(t *testing.T) {
	const after = 300 * time.Millisecond
	s := &Server{Handler: echo, detach: after}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := &holdingListener{Listener: l}
	r := startOn(t, s, hl, l.Addr().String())
	c := dial(t, r.addr)
	c.do(get("/a"))
	waitParked(t, s, 1)
	if err := hl.held[0].Socket().SetDeadline(time.Time{}); err != nil {
		t.Fatalf("just parked, the socket is closed (%v): want it left in Go's poller for %v", err, after)
	}
	if _, body := c.do(get("/b")); body != "GET /b" || hl.swaps() != 0 {
		t.Fatalf("woken before %v: %q, %d sockets given back, want GET /b and none", after, body, hl.swaps())
	}
	waitParked(t, s, 1)
	deadline := time.Now().Add(ioTimeout)
	for hl.held[0].Socket().SetDeadline(time.Time{}) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("parked for %v, the socket is still in Go's poller", ioTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Out of the poller, the holder keeps the socket's addresses and nothing else of Go's.
	if cs, ok := hl.held[0].Socket().(closedSocket); !ok || cs.RemoteAddr().String() != c.c.LocalAddr().String() ||
		cs.LocalAddr().String() != r.addr {
		t.Fatalf("detached, the holder holds %T %v -> %v, want a closedSocket %v -> %v", hl.held[0].Socket(),
			hl.held[0].Socket().RemoteAddr(), hl.held[0].Socket().LocalAddr(), c.c.LocalAddr(), r.addr)
	}
	if _, body := c.do(get("/c")); body != "GET /c" || hl.swaps() != 1 {
		t.Fatalf("woken after %v: %q, %d sockets given back, want GET /c and one", after, body, hl.swaps())
	}
}

// Once detachCrowd connections are parked, a connection parking leaves Go's poller at once rather
// than after detachAfter: the crowd's poll descriptors are not made in the first place.
func TestParkedCrowdDetachesAtOnce(t *testing.T) {
	const crowd = 4
	s := &Server{Handler: echo, detach: time.Hour, crowd: crowd}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl := &holdingListener{Listener: l}
	r := startOn(t, s, hl, l.Addr().String())
	var clients []*client
	for i := range crowd + 2 {
		c := dial(t, r.addr)
		c.do(get("/"))
		waitParked(t, s, i+1)
		clients = append(clients, c)
	}
	for i, h := range hl.held {
		_, detached := h.Socket().(closedSocket)
		if want := i >= crowd; detached != want {
			t.Errorf("connection %d parked with %d others: out of Go's poller %v, want %v", i, i, detached, want)
		}
	}
	// Detached or not, each is served on.
	for i, c := range clients {
		if _, body := c.do(get(fmt.Sprintf("/%d", i))); body != fmt.Sprintf("GET /%d", i) {
			t.Errorf("connection %d: %q after parking", i, body)
		}
	}
}

// Where the parker cannot take a connection, a new goroutine takes the wait once and keeps it until
// the idle timeout (no hand-off every idleHandOff).
func TestHandOffWithoutParker(t *testing.T) {
	const idle = idleHandOff + 500*time.Millisecond
	s := &Server{Handler: echo, IdleTimeout: idle}
	s.idle.closed = true // as when epoll is not to be had
	r := start(t, s)
	c := dial(t, r.addr)
	c.do(get("/a"))
	time.Sleep(idleHandOff + 100*time.Millisecond)
	if _, body := c.do(get("/b")); body != "GET /b" {
		t.Fatalf("after the hand-off: %q", body)
	}
	from := time.Now()
	c.expectClosed()
	if waited := time.Since(from); waited < idle-50*time.Millisecond {
		t.Errorf("closed after %v idle, want the idle timeout (%v)", waited, idle)
	}
	if s.idle.parked() != 0 || s.idle.ep != nil {
		t.Error("the closed parker took a connection")
	}
}

// Many clients whose connections park, wake, time out and close at random, while the server runs
// and then shuts down: every answer is right, and nothing is left parked or running. Run with
// -race, this exercises wake, expiry, client close and Shutdown against one another.
func TestParkerChurn(t *testing.T) {
	socketModes(t, func(t *testing.T, listen func(net.Listener) net.Listener, _ func() *holdingListener) {
		testParkerChurn(t, listen)
	})
}

func testParkerChurn(t *testing.T, listen func(net.Listener) net.Listener) {
	const (
		clients = 40
		rounds  = 12
		idle    = idleHandOff + 150*time.Millisecond
	)
	s := &Server{Handler: echo, IdleTimeout: idle}
	r := startWith(t, s, listen)
	errs := make(chan error, clients)
	for i := range clients {
		go func() {
			errs <- churn(r.addr, i, rounds, idle)
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitParked(t, s, 0)
	select {
	case <-s.idle.done:
	case <-time.After(ioTimeout):
		t.Fatal("the parker's goroutine still runs")
	}
}

// churn is one client of TestParkerChurn: requests after pauses shorter than the hand-off, longer
// than it (parked) and longer than the idle timeout (closed: it dials again), and some closes of
// its own.
func churn(addr string, id, rounds int, idle time.Duration) error {
	pauses := []time.Duration{0, idleHandOff / 2, idleHandOff + 30*time.Millisecond, idle + 50*time.Millisecond}
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for n := range rounds {
		pause := pauses[(id+n)%len(pauses)]
		time.Sleep(pause)
		if c != nil && (pause > idle || (id+n)%7 == 0) {
			c.Close() // timed out by the server, or our own close
			c = nil
		}
		if c == nil {
			var err error
			if c, err = net.Dial("tcp", addr); err != nil {
				return err
			}
			br = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(ioTimeout))
		path := fmt.Sprintf("/c%d/r%d", id, n)
		if _, err := c.Write([]byte(get(path))); err != nil {
			return fmt.Errorf("client %d round %d: %w", id, n, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("client %d round %d (pause %v): %w", id, n, pause, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "GET "+path {
			return fmt.Errorf("client %d round %d: %q, %v", id, n, b, err)
		}
	}
	return nil
}

// sockioListener gives its connections as package sockio's, whose read deadlines move lazily.
type sockioListener struct{ net.Listener }

func (l sockioListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return sockio.Wrap(c), nil
}

// A socket whose read deadline moves lazily ends the idle wait (a read, from the third request on)
// at the deadline of the request before, and the wait goes on: the connection still parks at its
// own deadline, holding no buffer, and serves its next request.
func TestParkedAfterEarlyDeadline(t *testing.T) {
	s := &Server{Handler: echo, handOff: 80 * time.Millisecond}
	r := startWith(t, s, func(l net.Listener) net.Listener { return sockioListener{l} })
	c := dial(t, r.addr)
	c.do(get("/1"))
	time.Sleep(40 * time.Millisecond) // the next wait's deadline is noted; the socket keeps this one
	if _, body := c.do(get("/2")); body != "GET /2" {
		t.Fatalf("second request: %q", body)
	}
	waitParked(t, s, 1)
	s.mu.Lock()
	s.idle.mu.Lock() // the parker's: it starts the goroutine that serves the next request
	for pc := range s.conns {
		if pc.x != nil {
			t.Errorf("a parked connection holds its exchange (a %d-byte buffer)", pc.x.br.Size())
		}
	}
	s.idle.mu.Unlock()
	s.mu.Unlock()
	if _, body := c.do(get("/3")); body != "GET /3" {
		t.Fatalf("request after parking: %q", body)
	}
}
