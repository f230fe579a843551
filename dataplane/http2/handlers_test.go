package http2_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// handlerGoroutines counts the goroutines in s's handler loop (their stacks show s as the
// receiver's argument).
func handlerGoroutines(s *srv.Server) int {
	frame := []byte(fmt.Sprintf("dataplane/http2.(*Server).handle(%p", s))
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], frame)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Handler goroutines outlive their streams, to run the next ones, and exit once none has been
// needed for a while (2-4 s): they are not kept for ever, and none is left after a burst.
func TestIdleHandlersExit(t *testing.T) {
	release := make(chan struct{})
	t.Parallel()
	s := &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})}
	ts := serve(t, s, false)
	cc, _ := ts.clientConn(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { get(t, cc, ts.url("/")) })
	}
	deadline := time.Now().Add(ioTimeout)
	for handlerGoroutines(s) < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handler goroutines for 8 streams in flight", handlerGoroutines(s))
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	wg.Wait()
	if _, body := get(t, cc, ts.url("/")); body != "ok" {
		t.Fatalf("a stream after the burst: %q", body)
	}
	if n := handlerGoroutines(s); n > 8 {
		t.Fatalf("%d handler goroutines after a stream once 8 were idle: want them reused", n)
	}
	deadline = time.Now().Add(3 * 4 * time.Second)
	for handlerGoroutines(s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle handler goroutines left 12 s after the last stream", handlerGoroutines(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
