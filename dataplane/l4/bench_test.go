package l4

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// countingSink reads to EOF through a large buffer, then answers with the byte count (8 bytes).
func countingSink(_ *backend, c net.Conn) {
	buf := make([]byte, 256<<10)
	var n uint64
	for {
		m, err := c.Read(buf)
		n += uint64(m)
		if err != nil {
			break
		}
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], n)
	c.Write(out[:])
}

// BenchmarkThroughput compares one connection's throughput to a sink server directly and through
// the proxy's Tcp listener (spliced where the kernel can, and through buffers). The proxy
// sub-benchmarks report their rate as a fraction of the latest direct one (x-direct), and every
// sub-benchmark the CPU time of the whole process per 64 KiB (cpu-ns/op): the proxy's cost is the
// difference from direct.
func BenchmarkThroughput(b *testing.B) {
	lns := listenPair(b, 1)
	be := startBackend(b, "sink", lns[0], nil, countingSink)
	gw := newGateway().
		pool("pool", be).
		settings(tcpSettings("tcp", be.port(), 0))

	const chunk = 64 << 10
	data := make([]byte, chunk)
	var directRate float64
	run := func(b *testing.B, addr string) float64 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(chunk)
		b.ResetTimer()
		cpu0 := processCPUTime()
		for range b.N {
			if _, err := c.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		// Every byte counted by the sink, through the half-close.
		c.(*net.TCPConn).CloseWrite()
		var ack [8]byte
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			b.Fatalf("sink's count: %v", err)
		}
		b.StopTimer()
		if cpu := processCPUTime() - cpu0; cpu > 0 {
			// CPU of the whole process (client, sink and proxy): the proxy's share is the difference.
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		}
		if got := binary.BigEndian.Uint64(ack[:]); got != uint64(b.N)*chunk {
			b.Fatalf("sink counted %d bytes, sent %d", got, uint64(b.N)*chunk)
		}
		return float64(b.N) * chunk / b.Elapsed().Seconds()
	}
	b.Run("direct", func(b *testing.B) {
		directRate = run(b, be.addr)
	})
	for _, mode := range []struct {
		name   string
		splice bool
	}{{"proxy", spliceSupported}, {"proxy-buffered", false}} {
		b.Run(mode.name, func(b *testing.B) {
			g, ports := startProxy(b, 1, func(p *Proxy) { p.splice = mode.splice })
			g.apply(b, gw.listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").build(b), nil)
			gw.gw.Listeners, gw.gw.RoutingRules = nil, nil
			rate := run(b, g.ports[ports[0]].Addr().String())
			if directRate > 0 {
				b.ReportMetric(rate/directRate, "x-direct")
			}
		})
	}
}

// BenchmarkPingPong measures the round trip of a small message through an echo server, directly and
// through the proxy: the per-message latency the proxy adds, in both copy modes.
func BenchmarkPingPong(b *testing.B) {
	lns := listenPair(b, 1)
	be := startBackend(b, "echo", lns[0], nil, echo)
	gw := newGateway().
		pool("pool", be).
		settings(tcpSettings("tcp", be.port(), 0))
	msg := make([]byte, 64)
	run := func(b *testing.B, addr string) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		greeting(b, c)
		buf := make([]byte, len(msg))
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	}
	b.Run("direct", func(b *testing.B) { run(b, be.addr) })
	for _, mode := range []struct {
		name   string
		splice bool
	}{{"proxy", spliceSupported}, {"proxy-buffered", false}} {
		b.Run(mode.name, func(b *testing.B) {
			g, ports := startProxy(b, 1, func(p *Proxy) { p.splice = mode.splice })
			g.apply(b, gw.listener(&fgv1.Listener{Name: "tcp", Protocol: "Tcp", Port: ports[0]}, "pool", "tcp").build(b), nil)
			gw.gw.Listeners, gw.gw.RoutingRules = nil, nil
			run(b, g.ports[ports[0]].Addr().String())
		})
	}
}
