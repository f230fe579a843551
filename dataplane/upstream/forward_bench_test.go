package upstream

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// The benchmarks compare Pool.Forward with httputil.ReverseProxy +
// http.Transport on the same path:
//
//	keep-alive client -> net/http server (proxy handler) -> backend
//
// all on 127.0.0.1, for a 64-byte response. The "serial" variants measure
// one request at a time (latency-bound); "parallel" keeps several client
// connections busy (throughput per core); "direct" calls the proxy handler
// without the front server and client against a raw backend that allocates
// nothing, so allocs/op are the proxy's own.
//
// Allocations of the client, front server and backend are counted too (they
// run in the test process) and are the same for both; compare differences.
//
// Besides wall-clock ns/op, each benchmark reports cpu-ns/op: CPU time (user +
// system) the whole process spent per request. That is the "per core" cost and
// is far less sensitive to scheduling noise than ns/op on a small machine.

const benchTimeout = 20 * time.Second // a typical per-request timeout; deadlines are part of the cost

var benchPayload = bytes.Repeat([]byte("x"), 64)

func benchBackend(b *testing.B) string {
	be := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{"64"}
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(benchPayload)
	})
	return be.addr()
}

// rawBenchBackend answers every request on a connection with a fixed 64-byte
// response, without allocating.
func rawBenchBackend(b *testing.B) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n" + string(benchPayload))
	rb := newRawBackend(b, func(c net.Conn, br *bufio.Reader, _ int) {
		for {
			for { // request header ends with an empty line; bench requests have no body
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
	return rb.addr()
}

// rpBufferPool gives ReverseProxy pooled copy buffers, as a tuned production
// deployment would; without it ReverseProxy allocates 32 KiB per response.
type rpBufferPool struct{}

func (rpBufferPool) Get() []byte  { return *copyBufPool.Get().(*[]byte) }
func (rpBufferPool) Put(b []byte) { copyBufPool.Put(&b) }

// newReverseProxy returns the baseline: httputil.ReverseProxy with a tuned
// http.Transport (enough idle connections per host, response header timeout
// like Forward's, no transparent gzip) and a buffer pool.
func newReverseProxy(addr string) *httputil.ReverseProxy {
	target := &url.URL{Scheme: "http", Host: addr}
	return &httputil.ReverseProxy{
		BufferPool: rpBufferPool{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   1024,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: benchTimeout,
			DisableCompression:    true,
		},
	}
}

var benchRequest = []byte("GET /bench/path?q=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")

// benchConn is a lean keep-alive HTTP/1.1 client on one connection.
type benchConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialBench(b *testing.B, addr string) *benchConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &benchConn{c: c, br: bufio.NewReader(c)}
}

// roundTrip sends the benchmark request and reads a Content-Length response.
func (bc *benchConn) roundTrip() error {
	if _, err := bc.c.Write(benchRequest); err != nil {
		return err
	}
	line, err := bc.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return &benchError{"bad status line: " + string(line)}
	}
	n := -1
	for {
		line, err = bc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && bytes.EqualFold(line[:15], []byte("Content-Length:")) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			if err != nil {
				return err
			}
		}
	}
	if n != len(benchPayload) {
		return &benchError{"unexpected Content-Length " + strconv.Itoa(n)}
	}
	_, err = bc.br.Discard(n)
	return err
}

type benchError struct{ s string }

func (e *benchError) Error() string { return e.s }

// runThroughFront drives the proxy handler h behind a real net/http server.
func runThroughFront(b *testing.B, h http.Handler) {
	front := httptest.NewServer(h)
	defer front.Close()
	runClient(b, front.Listener.Addr().String())
}

// runClient runs the serial and parallel client loops against addr.
func runClient(b *testing.B, addr string) {
	b.Run("serial", func(b *testing.B) {
		bc := dialBench(b, addr)
		defer bc.c.Close()
		if err := bc.roundTrip(); err != nil { // warm the pools
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := startCPU(b)
		for b.Loop() {
			if err := bc.roundTrip(); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report()
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4)
		cpu := startCPU(b)
		defer cpu.report()
		b.RunParallel(func(pb *testing.PB) {
			bc := dialBench(b, addr)
			defer bc.c.Close()
			for pb.Next() {
				if err := bc.roundTrip(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// cpuMeter measures process CPU time over a benchmark run.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

func startCPU(b *testing.B) cpuMeter {
	b.ResetTimer()
	return cpuMeter{b, processCPUTime()}
}

func (m cpuMeter) report() {
	if used := processCPUTime() - m.start; used > 0 && m.b.N > 0 {
		m.b.ReportMetric(float64(used.Nanoseconds())/float64(m.b.N), "cpu-ns/op")
	}
}

// discardWriter is a ResponseWriter that drops everything, for the direct
// benchmarks.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func runDirect(b *testing.B, serve func(w *discardWriter, r *http.Request)) {
	b.Run("direct", func(b *testing.B) {
		// A cancelable context, like a server request's, so the
		// cancellation hook is part of the cost.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := httptest.NewRequestWithContext(ctx, "GET", "http://app.example/bench/path?q=1", nil)
		r.Header.Set("User-Agent", "bench")
		r.Header.Set("Accept", "*/*")
		w := &discardWriter{h: http.Header{}}
		serve(w, r)
		b.ReportAllocs()
		cpu := startCPU(b)
		for b.Loop() {
			clear(w.h)
			w.code = 0
			serve(w, r)
			if w.code != 200 {
				b.Fatalf("status %d", w.code)
			}
		}
		cpu.report()
	})
}

func BenchmarkForward(b *testing.B) {
	p := NewPool(benchBackend(b), Options{MaxIdleConns: 1024})
	defer p.Close()
	runThroughFront(b, frontHandler(p, benchTimeout))

	raw := NewPool(rawBenchBackend(b), Options{})
	defer raw.Close()
	h := frontHandler(raw, benchTimeout)
	runDirect(b, func(w *discardWriter, r *http.Request) { h(w, r) })
}

// BenchmarkNoProxy is the reference for the two above: the same client
// talking to the same backend directly. Subtracting its cpu-ns/op from theirs
// leaves the cost of the proxy hop alone.
func BenchmarkNoProxy(b *testing.B) {
	runClient(b, benchBackend(b))
}

func BenchmarkReverseProxy(b *testing.B) {
	rp := newReverseProxy(benchBackend(b))
	defer rp.Transport.(*http.Transport).CloseIdleConnections()
	runThroughFront(b, rp)

	raw := newReverseProxy(rawBenchBackend(b))
	defer raw.Transport.(*http.Transport).CloseIdleConnections()
	runDirect(b, func(w *discardWriter, r *http.Request) { raw.ServeHTTP(w, r) })
}
