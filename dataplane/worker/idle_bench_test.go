//go:build linux

package worker_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleConnectionHeap measures the Go heap a worker keeps for each idle keep-alive client
// connection of a plain HTTP listener: idleConns connections each make one request through a Basic
// rule, then idle past the HTTP/1 server's park and detach delays (1.5 s). The clients are raw
// blocking sockets driven by system calls, so they add nothing to the heap measured; the origin is
// one small server whose few pooled connections are there before and after. heap-B/conn is the
// live heap after a GC with the connections open, less the live heap before they were opened,
// per connection. (RSS against nginx and HAProxy: BENCH=memory scripts/bench.sh.)
func BenchmarkIdleConnectionHeap(b *testing.B) {
	const idleConns = 2000
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	b.Cleanup(origin.Close)
	originPort := portOf(origin.Listener.Addr())
	w := startWorker(b)
	port := freePort(b)
	apply(b, w, 1, gatewayDoc(b, "Http", port, originPort, ""))
	// Warm up the worker: its pools, the origin connection and the server's parker.
	fds := openIdle(b, port, 64)
	closeAll(fds)
	time.Sleep(500 * time.Millisecond)

	var perConn []float64
	for b.Loop() {
		before := liveHeap()
		fds := openIdle(b, port, idleConns)
		time.Sleep(1500 * time.Millisecond)
		after := liveHeap()
		if n := stillOpen(fds); n < idleConns {
			closeAll(fds)
			b.Fatalf("the worker holds %d of the %d connections, want all", n, idleConns)
		}
		closeAll(fds)
		perConn = append(perConn, float64(int64(after)-int64(before))/idleConns)
		time.Sleep(500 * time.Millisecond) // the worker closes them
	}
	slices.Sort(perConn)
	b.Logf("%.0f", perConn)
	b.ReportMetric(perConn[len(perConn)/2], "heap-B/conn")
}

// stillOpen is the number of fds whose peer has not closed the connection: a non-blocking peek
// finds nothing to read, rather than the end of the stream.
func stillOpen(fds []int) int {
	var b [1]byte
	n := 0
	for _, fd := range fds {
		if _, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT); err == syscall.EAGAIN {
			n++
		}
	}
	return n
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// openIdle opens n connections to 127.0.0.1:port with system calls (blocking sockets outside Go's
// poller, no heap per connection), sends one GET on each and reads its answer.
func openIdle(tb testing.TB, port, n int) []int {
	tb.Helper()
	req := []byte("GET /idle HTTP/1.1\r\nHost: gw.test\r\n\r\n")
	var buf [4096]byte
	fds := make([]int, 0, n)
	tv := syscall.Timeval{Sec: 10}
	for range n {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			closeAll(fds)
			tb.Fatal(err)
		}
		fds = append(fds, fd)
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
		syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv)
		if err := connect(fd, port); err != nil {
			closeAll(fds)
			tb.Fatalf("connect: %v", err)
		}
		if _, err := retry(func() (int, error) { return syscall.Write(fd, req) }); err != nil {
			closeAll(fds)
			tb.Fatalf("write: %v", err)
		}
		// One read holds the whole small answer; read on until its body ("ok") has come.
		got := 0
		for !bytes.HasSuffix(buf[:got], []byte("\r\n\r\nok")) {
			m, err := retry(func() (int, error) { return syscall.Read(fd, buf[got:]) })
			if err != nil || m <= 0 {
				closeAll(fds)
				tb.Fatalf("read: %d %v after %q", m, err, buf[:got])
			}
			got += m
		}
		if !bytes.HasPrefix(buf[:got], []byte("HTTP/1.1 200")) {
			closeAll(fds)
			tb.Fatalf("answer %q", buf[:got])
		}
	}
	return fds
}

// connect connects fd to 127.0.0.1:port, through the interruptions of Go's preemption signals.
func connect(fd, port int) error {
	sa := &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	for range 1000 {
		switch err := syscall.Connect(fd, sa); err {
		case nil, syscall.EISCONN:
			return nil
		case syscall.EINTR, syscall.EALREADY:
			time.Sleep(time.Millisecond)
		default:
			return err
		}
	}
	return syscall.ETIMEDOUT
}

// retry runs a read or write again while a signal interrupts it.
func retry(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != syscall.EINTR {
			return n, err
		}
	}
}

func closeAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}
