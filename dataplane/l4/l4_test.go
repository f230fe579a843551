package l4

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/health"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// copyModes runs a test with splicing on (where supported) and off; fn passes mode to startProxy.
func copyModes(t *testing.T, fn func(t *testing.T, mode func(*Proxy))) {
	modes := []bool{false}
	if spliceSupported {
		modes = []bool{true, false}
	}
	for _, splice := range modes {
		name := "buffered"
		if splice {
			name = "splice"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, func(p *Proxy) { p.splice = splice })
		})
	}
}

// bulk sends size random bytes through an echo connection while reading them back concurrently.
func bulk(t *testing.T, c net.Conn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %d bytes back: %v", size, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes echoed differ from the bytes sent")
	}
}

func TestTcpEcho(t *testing.T) {
	copyModes(t, func(t *testing.T, mode func(*Proxy)) {
		lns := listenPair(t, 1)
		be := startBackend(t, "echo", lns[0], nil, echo)
		g, ports := startProxy(t, 1, mode)
		g.apply(t, newGateway().
			pool("pool", be).
			settings(tcpSettings("tcp", be.port(), 0)).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").
			build(t), nil)
		for range 3 {
			c := dialTCP(t, ports[0])
			if got := greeting(t, c); got != "echo" {
				t.Fatalf("greeting %q", got)
			}
			roundTrip(t, c, "hello, layer 4")
			bulk(t, c, 4<<20)
			roundTrip(t, c, "still there")
			c.Close()
		}
	})
}

// tlsGateway: two Tls listeners on one port, picked by SNI: a.test -> a plain echo server, b.test ->
// a TLS echo server whose certificate is signed by a trusted root (b-settings) or not (c.w.test via
// the wildcard listener, with settings trusting the system roots only).
func tlsGateway(t *testing.T) (*gateway, int32, *backend, *backend) {
	p := getPKI(t)
	plainLn := listenPair(t, 1)
	tlsLn := listenPair(t, 2)
	plain := startBackend(t, "plain", plainLn[0], nil, echo)
	backendCert := issue(t, "backend", []string{"127.0.0.2", "backend.test"}, false, p.backendCA)
	secure := startBackend(t, "secure", tlsLn[0], backendCert, echo)
	g, ports := startProxy(t, 1)
	port := ports[0]
	g.apply(t, newGateway().
		cert(t, "cert-a", p.a).cert(t, "cert-b", p.b).cert(t, "cert-w", p.wild).
		root("backend-ca", p.backendCA).
		pool("plain", plain).
		pool("secure", secure).
		settings(tcpSettings("to-plain", plain.port(), 0)).
		settings(&fgv1.BackendSettings{Name: "to-secure", Port: secure.port(), Protocol: "Tls", TrustedRootCertificates: []string{"backend-ca"}}).
		settings(&fgv1.BackendSettings{Name: "to-secure-by-name", Port: secure.port(), Protocol: "Tls", TrustedRootCertificates: []string{"backend-ca"}, HostName: "backend.test"}).
		settings(&fgv1.BackendSettings{Name: "to-secure-untrusted", Port: secure.port(), Protocol: "Tls"}).
		listener(&fgv1.Listener{Name: "a", Protocol: "Tls", Port: port, SslCertificate: "cert-a", HostNames: []string{"a.test"}}, "plain", "to-plain").
		listener(&fgv1.Listener{Name: "b", Protocol: "Tls", Port: port, SslCertificate: "cert-b", HostNames: []string{"b.test"}}, "secure", "to-secure").
		listener(&fgv1.Listener{Name: "w", Protocol: "Tls", Port: port, SslCertificate: "cert-w", HostNames: []string{"*.w.test"}}, "secure", "to-secure-untrusted").
		listener(&fgv1.Listener{Name: "named", Protocol: "Tls", Port: port, SslCertificate: "cert-w", HostNames: []string{"named.w.test"}}, "secure", "to-secure-by-name").
		build(t), nil)
	return g, port, plain, secure
}

func TestTlsListener(t *testing.T) {
	p := getPKI(t)
	g, port, plain, secure := tlsGateway(t)
	roots := poolOf(p.gwCA)
	for _, tt := range []struct {
		sni, wantCN, wantBackend string
	}{
		{"a.test", "a.test", "plain"},
		{"b.test", "b.test", "secure"},
		{"B.Test", "b.test", "secure"},
		{"named.w.test", "*.w.test", "secure"}, // hostName backend.test is sent and verified
	} {
		t.Run(tt.sni, func(t *testing.T) {
			c, err := dialTLS(t, port, tt.sni, roots)
			if err != nil {
				t.Fatalf("TLS handshake with the gateway: %v", err)
			}
			if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tt.wantCN {
				t.Errorf("gateway certificate %q, want %q", cn, tt.wantCN)
			}
			if v := c.ConnectionState().Version; v < tls.VersionTLS12 {
				t.Errorf("TLS version %x", v)
			}
			if got := greeting(t, c); got != tt.wantBackend {
				t.Fatalf("reached %q, want %q", got, tt.wantBackend)
			}
			roundTrip(t, c, "over TLS")
			bulk(t, c, 1<<20)
		})
	}
	t.Run("untrusted backend CA", func(t *testing.T) {
		before := secure.accepted.Load()
		c, err := dialTLS(t, port, "c.w.test", roots)
		if err != nil {
			t.Fatalf("TLS handshake with the gateway: %v", err)
		}
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "*.w.test" {
			t.Errorf("gateway certificate %q, want the wildcard's", cn)
		}
		wantClosed(t, c, 5*time.Second)
		if secure.accepted.Load() == before {
			t.Error("the backend was never dialled")
		}
	})
	t.Run("old TLS refused", func(t *testing.T) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		_, err := tls.DialWithDialer(d, "tcp", g.ports[port].Addr().String(), &tls.Config{ServerName: "a.test", RootCAs: roots, MaxVersion: tls.VersionTLS11})
		if err == nil {
			t.Fatal("a TLS 1.1 client was served")
		}
	})
	if plain.accepted.Load() == 0 {
		t.Error("the plain backend saw no connection")
	}
}

// TestTlsFallbackListener: a listener without host names takes the SNI nobody else claims, and
// clients sending none.
func TestTlsFallbackListener(t *testing.T) {
	p := getPKI(t)
	lns := listenPair(t, 1, 2)
	one := startBackend(t, "one", lns[0], nil, echo)
	two := startBackend(t, "two", lns[1], nil, echo)
	g, ports := startProxy(t, 1)
	g.apply(t, newGateway().
		cert(t, "a", p.a).cert(t, "def", p.def).
		pool("one", one).pool("two", two).
		settings(tcpSettings("tcp", one.port(), 0)).
		listener(&fgv1.Listener{Name: "a", Protocol: "Tls", Port: ports[0], SslCertificate: "a", HostNames: []string{"a.test"}}, "one", "tcp").
		listener(&fgv1.Listener{Name: "any", Protocol: "Tls", Port: ports[0], SslCertificate: "def"}, "two", "tcp").
		build(t), nil)
	roots := poolOf(p.gwCA)
	c, err := dialTLS(t, ports[0], "default.test", roots)
	if err != nil {
		t.Fatal(err)
	}
	if got := greeting(t, c); got != "two" {
		t.Fatalf("reached %q, want two", got)
	}
	c, err = dialTLS(t, ports[0], "a.test", roots)
	if err != nil {
		t.Fatal(err)
	}
	if got := greeting(t, c); got != "one" {
		t.Fatalf("reached %q, want one", got)
	}
}

// TestHalfClose: the client's CloseWrite reaches the backend as EOF, which still answers, and the
// answer reaches the client.
func TestHalfClose(t *testing.T) {
	copyModes(t, func(t *testing.T, mode func(*Proxy)) {
		p := getPKI(t)
		plainLn, tlsLn := listenPair(t, 1), listenPair(t, 2)
		plain := startBackend(t, "plain", plainLn[0], nil, drainThenReply)
		secure := startBackend(t, "secure", tlsLn[0], issue(t, "backend", []string{"127.0.0.2"}, false, p.backendCA), drainThenReply)
		g, ports := startProxy(t, 2, mode)
		g.apply(t, newGateway().
			cert(t, "a", p.a).root("ca", p.backendCA).
			pool("plain", plain).pool("secure", secure).
			settings(tcpSettings("tcp", plain.port(), 0)).
			settings(&fgv1.BackendSettings{Name: "tls", Port: secure.port(), Protocol: "Tls", TrustedRootCertificates: []string{"ca"}}).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "plain", "tcp").
			listener(&fgv1.Listener{Name: "tls", Protocol: "Tls", Port: ports[1], SslCertificate: "a"}, "secure", "tls").
			build(t), nil)

		payload := strings.Repeat("half-close ", 10000)
		check := func(t *testing.T, c net.Conn, want string) {
			if _, err := io.WriteString(c, payload); err != nil {
				t.Fatal(err)
			}
			closeWrite(c)
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the answer after CloseWrite: %v", err)
			}
			if string(got) != want {
				t.Fatalf("answer %q, want %q", got, want)
			}
		}
		t.Run("Tcp to Tcp", func(t *testing.T) {
			check(t, dialTCP(t, ports[0]), "plain read 110000 bytes\n")
		})
		t.Run("Tls to Tls", func(t *testing.T) {
			c, err := dialTLS(t, ports[1], "a.test", poolOf(p.gwCA))
			if err != nil {
				t.Fatal(err)
			}
			check(t, c, "secure read 110000 bytes\n")
		})
	})
}

// TestIdleTimeout: a connection with no byte either way for the settings' timeout is closed; one
// busy in a single direction is not.
func TestIdleTimeout(t *testing.T) {
	copyModes(t, func(t *testing.T, mode func(*Proxy)) {
		p := getPKI(t)
		lns := listenPair(t, 1, 2)
		echoBe := startBackend(t, "echo", lns[0], nil, echo)
		sinkBe := startBackend(t, "sink", lns[1], nil, sink)
		talker := listenPair(t, 3)
		// talker sends a byte every 200 ms for 2.5 s, then a newline, reading nothing.
		talkerBe := startBackend(t, "talker", talker[0], nil, func(b *backend, c net.Conn) {
			for range 12 {
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			io.WriteString(c, "\n")
			io.Copy(io.Discard, c)
		})
		g, ports := startProxy(t, 5, mode)
		g.apply(t, newGateway().
			cert(t, "a", p.a).
			pool("echo", echoBe).pool("sink", sinkBe).pool("talker", talkerBe).
			settings(tcpSettings("s1", echoBe.port(), 1)).
			settings(tcpSettings("s2", talkerBe.port(), 1)).
			listener(&fgv1.Listener{Name: "echo", Protocol: "Tcp", Port: ports[0]}, "echo", "s1").
			listener(&fgv1.Listener{Name: "sink", Protocol: "Tcp", Port: ports[1]}, "sink", "s1").
			listener(&fgv1.Listener{Name: "talker", Protocol: "Tcp", Port: ports[2]}, "talker", "s2").
			listener(&fgv1.Listener{Name: "echo-tls", Protocol: "Tls", Port: ports[3], SslCertificate: "a"}, "echo", "s1").
			listener(&fgv1.Listener{Name: "talker-tls", Protocol: "Tls", Port: ports[4], SslCertificate: "a"}, "talker", "s2").
			build(t), nil)

		quiet := func(t *testing.T, c net.Conn) {
			greeting(t, c)
			roundTrip(t, c, "x")
			start := time.Now()
			wantClosed(t, c, 4*time.Second)
			if d := time.Since(start); d < 900*time.Millisecond {
				t.Errorf("closed after %s, before the 1 s idle timeout", d)
			}
		}
		t.Run("quiet Tcp", func(t *testing.T) {
			t.Parallel()
			quiet(t, dialTCP(t, ports[0]))
		})
		t.Run("quiet Tls", func(t *testing.T) {
			t.Parallel()
			c, err := dialTLS(t, ports[3], "a.test", poolOf(p.gwCA))
			if err != nil {
				t.Fatal(err)
			}
			quiet(t, c)
		})
		t.Run("busy client to backend", func(t *testing.T) {
			t.Parallel()
			c := dialTCP(t, ports[1])
			for i := range 12 {
				if _, err := c.Write([]byte{'.'}); err != nil {
					t.Fatalf("write after %d ms of traffic: %v", 200*i, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			// Still open: the backend still gets bytes, and the client no EOF.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
				t.Fatalf("connection ended while busy: %v", err)
			}
		})
		busyBackend := func(t *testing.T, c net.Conn) {
			line, err := readLine(c)
			if err != nil {
				t.Fatalf("connection ended while busy, after %q: %v", line, err)
			}
			if line != strings.Repeat(".", 12) {
				t.Fatalf("got %q", line)
			}
			// And once quiet both ways, it ends.
			wantClosed(t, c, 4*time.Second)
		}
		t.Run("busy backend to client", func(t *testing.T) {
			t.Parallel()
			busyBackend(t, dialTCP(t, ports[2]))
		})
		// The quiet direction's read deadline fires on the *tls.Conn, which must stay usable.
		t.Run("busy backend to Tls client", func(t *testing.T) {
			t.Parallel()
			c, err := dialTLS(t, ports[4], "a.test", poolOf(p.gwCA))
			if err != nil {
				t.Fatal(err)
			}
			busyBackend(t, c)
		})
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFailover: a server that does not accept connections is skipped after a failed dial; one
// whose probe says it is unhealthy is skipped without a dial.
func TestFailover(t *testing.T) {
	lns := listenPair(t, 1, 2)
	a := startBackend(t, "a", lns[0], nil, echo)
	b := startBackend(t, "b", lns[1], nil, echo)
	g, ports := startProxy(t, 1)
	build := func() *fgv1.Gateway {
		return newGateway().
			pool("pool", a, b).
			settings(tcpSettings("tcp", a.port(), 0)).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").
			build(t)
	}
	g.apply(t, build(), nil)
	seen := map[string]int{}
	for range 4 {
		seen[greeting(t, dialTCP(t, ports[0]))]++
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Fatalf("round-robin over two servers: %v", seen)
	}

	t.Run("unhealthy skipped without a dial", func(t *testing.T) {
		tr := health.NewTracker(1)
		tr.Observe(health.Outcome{OK: false, Reason: "tcp-connect-error", At: time.Now()})
		g.apply(t, build(), func(k health.Key) *health.Tracker {
			if k.Address == a.addr && k.Settings == "tcp" {
				return tr
			}
			return nil
		})
		before := a.accepted.Load()
		for range 4 {
			if got := greeting(t, dialTCP(t, ports[0])); got != "b" {
				t.Fatalf("reached %q, want b", got)
			}
		}
		if n := a.accepted.Load() - before; n != 0 {
			t.Fatalf("the unhealthy server got %d connections", n)
		}
		// Healthy again: it takes connections again.
		tr.Observe(health.Outcome{OK: true, At: time.Now()})
		seen := map[string]int{}
		for range 4 {
			seen[greeting(t, dialTCP(t, ports[0]))]++
		}
		if seen["a"] == 0 {
			t.Fatalf("the recovered server got no connection: %v", seen)
		}
	})

	t.Run("dial failure falls back", func(t *testing.T) {
		g.apply(t, build(), nil)
		a.stop() // no longer listening: connections are refused
		for range 6 {
			if got := greeting(t, dialTCP(t, ports[0])); got != "b" {
				t.Fatalf("reached %q, want b", got)
			}
		}
	})

	t.Run("no usable server", func(t *testing.T) {
		b.stop()
		start := time.Now()
		wantClosed(t, dialTCP(t, ports[0]), 2*time.Second)
		if d := time.Since(start); d > time.Second {
			t.Errorf("closed after %s", d)
		}
	})
}

// TestNoServer: connections to listeners with nowhere to go are closed at once.
func TestNoServer(t *testing.T) {
	lns := listenPair(t, 1)
	a := startBackend(t, "a", lns[0], nil, echo)
	g, ports := startProxy(t, 4)
	tr := health.NewTracker(1)
	tr.Observe(health.Outcome{OK: false, At: time.Now()})
	g.apply(t, newGateway().
		pool("pool", a).pool("empty").
		settings(tcpSettings("tcp", a.port(), 0)).
		listener(&fgv1.Listener{Name: "unhealthy", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").
		listener(&fgv1.Listener{Name: "empty", Protocol: "Tcp", Port: ports[1]}, "empty", "tcp").
		listener(&fgv1.Listener{Name: "no-rule", Protocol: "Tcp", Port: ports[2]}, "", "").
		build(t), func(health.Key) *health.Tracker { return tr })
	for i, port := range ports {
		start := time.Now()
		wantClosed(t, dialTCP(t, port), 2*time.Second)
		if d := time.Since(start); d > time.Second {
			t.Errorf("port %d (#%d): closed after %s", port, i, d)
		}
	}
	if n := a.accepted.Load(); n != 0 {
		t.Errorf("the unhealthy server got %d connections", n)
	}
}

// TestDraining: a long-lived connection to a server removed from its pool keeps working while new
// connections go elsewhere; re-adding the server cancels the drain; an operator's drain with a 1 s
// deadline cuts it.
func TestDraining(t *testing.T) {
	lns := listenPair(t, 1, 2)
	a := startBackend(t, "a", lns[0], nil, echo)
	b := startBackend(t, "b", lns[1], nil, echo)
	g, ports := startProxy(t, 1)
	gw := func(servers ...*backend) *fgv1.Gateway {
		return newGateway().
			pool("pool", servers...).
			settings(tcpSettings("tcp", a.port(), 0)).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").
			build(t)
	}
	g.apply(t, gw(a, b), nil)
	long := dialTCP(t, ports[0])
	long.SetDeadline(time.Now().Add(30 * time.Second))
	if got := greeting(t, long); got != "a" {
		t.Fatalf("first connection reached %q, want a", got)
	}
	roundTrip(t, long, "before")
	drainSignal(g.p) // forget earlier signals

	// Removal.
	g.apply(t, gw(b), nil)
	for range 3 {
		if got := greeting(t, dialTCP(t, ports[0])); got != "b" {
			t.Fatalf("after removing a, reached %q", got)
		}
	}
	roundTrip(t, long, "during the drain")
	reps := g.p.DrainReports()
	if len(reps) != 1 {
		t.Fatalf("drain reports %v", reps)
	}
	r := reps[0]
	if r.GetPool() != "pool" || r.GetSettings() != "tcp" || r.GetAddress() != a.addr || r.GetAdmin() || r.GetDone() ||
		r.GetActiveConnections() != 1 || r.GetInflightRequests() != 0 {
		t.Fatalf("drain report %v", r)
	}
	if d := r.GetDeadline().AsTime().Sub(r.GetStartedAt().AsTime()); d != 30*time.Second {
		t.Fatalf("removal drain timeout %s, want 30s", d)
	}
	if !drainSignal(g.p) {
		t.Error("no DrainChanged signal after the removal")
	}

	// Re-adding cancels the drain.
	g.apply(t, gw(a, b), nil)
	if reps := g.p.DrainReports(); len(reps) != 0 {
		t.Fatalf("re-adding a did not cancel its drain: %v", reps)
	}
	roundTrip(t, long, "after re-adding")

	// An operator's drain, 1 s.
	g.apply(t, gw(a, b), nil, adminDrain("pool", a.ip(), 1))
	for range 3 {
		if got := greeting(t, dialTCP(t, ports[0])); got != "b" {
			t.Fatalf("during the operator's drain of a, reached %q", got)
		}
	}
	roundTrip(t, long, "before the deadline")
	reps = g.p.DrainReports()
	if len(reps) != 1 || !reps[0].GetAdmin() || reps[0].GetActiveConnections() != 1 || reps[0].GetDone() {
		t.Fatalf("operator drain reports %v", reps)
	}
	if d := reps[0].GetDeadline().AsTime().Sub(reps[0].GetStartedAt().AsTime()); d != time.Second {
		t.Fatalf("operator drain deadline %s after its start, want 1s", d)
	}
	wantClosed(t, long, 3*time.Second)
	var final *fgv1.DrainReport
	eventually(t, 2*time.Second, func() bool {
		reps := g.p.DrainReports()
		if len(reps) == 1 && reps[0].GetDone() {
			final = reps[0]
			return true
		}
		return false
	}, "the operator's drain did not end")
	if final.GetCutConnections() != 1 || !final.GetAdmin() || final.GetActiveConnections() != 0 {
		t.Fatalf("final drain report %v", final)
	}
	eventually(t, 2*time.Second, func() bool { return a.open.Load() == 0 }, "the backend side of the cut connection is still open")

	// Undrained: a serves again.
	g.apply(t, gw(a, b), nil)
	if reps := g.p.DrainReports(); len(reps) != 0 {
		t.Fatalf("undrain left reports %v", reps)
	}
	seen := map[string]int{}
	for range 4 {
		seen[greeting(t, dialTCP(t, ports[0]))]++
	}
	if seen["a"] == 0 {
		t.Fatalf("a got no connection after its drain was lifted: %v", seen)
	}
}

// TestDrainFinishes: a removal drain whose connections close ends by itself, clean.
func TestDrainFinishes(t *testing.T) {
	lns := listenPair(t, 1, 2)
	a := startBackend(t, "a", lns[0], nil, echo)
	b := startBackend(t, "b", lns[1], nil, echo)
	g, ports := startProxy(t, 1)
	gw := func(servers ...*backend) *fgv1.Gateway {
		return newGateway().
			pool("pool", servers...).
			settings(tcpSettings("tcp", a.port(), 0)).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").
			build(t)
	}
	g.apply(t, gw(a, b), nil)
	c := dialTCP(t, ports[0])
	greeting(t, c)
	g.apply(t, gw(b), nil)
	if reps := g.p.DrainReports(); len(reps) != 1 || reps[0].GetActiveConnections() != 1 {
		t.Fatalf("drain reports %v", reps)
	}
	c.Close()
	eventually(t, 3*time.Second, func() bool {
		reps := g.p.DrainReports()
		return len(reps) == 1 && reps[0].GetDone() && reps[0].GetCutConnections() == 0
	}, "the drain did not finish when its connection closed")
}

// drainSignal reports whether DrainChanged has a signal pending (waiting up to 500 ms).
func drainSignal(p *Proxy) bool {
	select {
	case <-p.DrainChanged():
		return true
	case <-time.After(500 * time.Millisecond):
		return false
	}
}

// TestShutdown: Shutdown waits for open connections and closes them when its context ends.
func TestShutdown(t *testing.T) {
	lns := listenPair(t, 1)
	a := startBackend(t, "a", lns[0], nil, echo)
	p := New(testLogger(t))
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln, port) }()
	if err := p.Apply(1, newGateway().
		pool("pool", a).
		settings(tcpSettings("tcp", a.port(), 0)).
		listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: port}, "pool", "tcp").
		build(t), nil, nil); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, port)
	greeting(t, c)
	ln.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with an open connection: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("Shutdown returned after %s, before its context ended", d)
	}
	wantClosed(t, c, 2*time.Second)
	eventually(t, 2*time.Second, func() bool { return a.open.Load() == 0 }, "the backend connection is still open")
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown with nothing open: %v", err)
	}
}

// TestApplyErrors: configurations the proxy cannot serve are refused, and the previous one stays.
func TestApplyErrors(t *testing.T) {
	p := New(testLogger(t))
	defer p.Close()
	noCert := &fgv1.Gateway{
		Listeners: []*fgv1.Listener{{Name: "l", Protocol: "Tls", Port: 9443, SslCertificate: "missing"}},
	}
	if err := p.Apply(1, noCert, nil, nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Apply with an unknown certificate: %v", err)
	}
	mixed := &fgv1.Gateway{
		SslCertificates: []*fgv1.SslCertificate{{Name: "a", Data: getPKI(t).a.keyPairPEM(t)}},
		Listeners: []*fgv1.Listener{
			{Name: "t", Protocol: "Tcp", Port: 9000},
			{Name: "s", Protocol: "Tls", Port: 9000, SslCertificate: "a", HostNames: []string{"a.test"}},
		},
	}
	if err := p.Apply(2, mixed, nil, nil); err == nil {
		t.Fatal("Apply with Tcp and Tls listeners on one port succeeded")
	}
	if v := p.Version(); v != 0 {
		t.Fatalf("version %d after failed applies", v)
	}
}

// panicListener's connections panic when they read "PANIC".
type panicListener struct{ net.Listener }

func (l panicListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return panicConn{c}, nil
}

type panicConn struct{ net.Conn }

func (c panicConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if bytes.Contains(p[:n], []byte("PANIC")) {
		panic("test panic in Read")
	}
	return n, err
}

// recordHandler keeps the messages logged.
type recordHandler struct {
	mu   *sync.Mutex
	msgs *[]string
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.msgs = append(*h.msgs, r.Message)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// TestPanicRecovered: a panic in a connection's handler closes that connection, is logged, and
// leaves the proxy serving.
func TestPanicRecovered(t *testing.T) {
	lns := listenPair(t, 1)
	a := startBackend(t, "a", lns[0], nil, echo)
	var mu sync.Mutex
	var msgs []string
	p := New(slog.New(recordHandler{&mu, &msgs}))
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	served := make(chan struct{})
	go func() {
		defer close(served)
		p.Serve(panicListener{ln}, port)
	}()
	t.Cleanup(func() { // after the client connections' cleanups closed them
		ln.Close()
		<-served
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	if err := p.Apply(1, newGateway().
		pool("pool", a).
		settings(tcpSettings("tcp", a.port(), 0)).
		listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: port}, "pool", "tcp").
		build(t), nil, nil); err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, port)
	greeting(t, c)
	io.WriteString(c, "PANIC")
	wantClosed(t, c, 5*time.Second)
	eventually(t, 2*time.Second, func() bool { return a.open.Load() == 0 }, "the backend side of the panicking connection is still open")
	mu.Lock()
	logged := strings.Join(msgs, "\n")
	mu.Unlock()
	if !strings.Contains(logged, "panic in layer-4 connection handler") {
		t.Errorf("panic not logged; log:\n%s", logged)
	}
	c = dialTCP(t, port)
	greeting(t, c)
	roundTrip(t, c, "still serving")
}

// TestAdminDrainBookkeeping: an operator's drain listed again is the same drain; without a timeout
// it lasts 30 s; when its server then leaves the pool it becomes a removal drain.
func TestAdminDrainBookkeeping(t *testing.T) {
	p := New(testLogger(t))
	defer p.Close()
	gw := func(ips ...string) *fgv1.Gateway {
		pool := &fgv1.BackendAddressPool{Name: "pool"}
		for _, ip := range ips {
			pool.BackendAddresses = append(pool.BackendAddresses, &fgv1.BackendAddress{IpAddress: ip})
		}
		b := newGateway().settings(tcpSettings("tcp", 9000, 0)).
			listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: 9000}, "pool", "tcp")
		b.gw.BackendAddressPools = []*fgv1.BackendAddressPool{pool}
		return b.build(t)
	}
	ad := []*fgv1.AdminDrain{{Pool: "pool", Address: "127.0.0.71"}}
	if err := p.Apply(1, gw("127.0.0.71", "127.0.0.72"), nil, ad); err != nil {
		t.Fatal(err)
	}
	reps := p.DrainReports()
	if len(reps) != 1 || !reps[0].GetAdmin() || reps[0].GetAddress() != "127.0.0.71:9000" {
		t.Fatalf("reports %v", reps)
	}
	started := reps[0].GetStartedAt().AsTime()
	if d := reps[0].GetDeadline().AsTime().Sub(started); d != 30*time.Second {
		t.Fatalf("operator drain without timeout lasts %s, want 30s", d)
	}
	time.Sleep(10 * time.Millisecond)
	if err := p.Apply(2, gw("127.0.0.71", "127.0.0.72"), nil, ad); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 1 || !reps[0].GetStartedAt().AsTime().Equal(started) {
		t.Fatalf("listing the drain again restarted it: %v", reps)
	}
	if err := p.Apply(3, gw("127.0.0.72"), nil, ad); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 1 || reps[0].GetAdmin() {
		t.Fatalf("after the drained server left its pool: %v", reps)
	}
	if err := p.Apply(4, gw("127.0.0.71", "127.0.0.72"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if reps := p.DrainReports(); len(reps) != 0 {
		t.Fatalf("re-adding the server left drains %v", reps)
	}
}
