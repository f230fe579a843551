// Command origin is the benchmark rig's backend: a small net/http server answering fixed bodies.
//
//	/64  -> 64 bytes     /16k -> 16 KiB     /N or /Nk (up to 16 MiB) -> N bytes or N KiB
//	/    -> "ok" (readiness)
//
// Only the last path segment counts, so /r50/64 answers as /64 does (the path-map benchmark routes on
// the leading segments). Every answer carries Content-Length. --listen takes a comma-separated list of
// addresses, served by the one process (the affinity benchmark's pool has two servers). Set GOMAXPROCS in the environment (or --procs) to pin its
// parallelism; scripts/bench.sh runs it with GOMAXPROCS=1 on the load generator's core.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

const maxBody = 16 << 20

type body struct {
	data []byte
	clen []string // precomputed Content-Length header value
}

var (
	bodiesMu sync.RWMutex
	bodies   = map[string]*body{}
	ctype    = []string{"application/octet-stream"}
)

func newBody(n int) *body {
	return &body{data: bytes.Repeat([]byte{'x'}, n), clen: []string{strconv.Itoa(n)}}
}

// parseSize turns "64", "16k", "1m" into a byte count.
func parseSize(s string) (int, bool) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"), strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n*mult > maxBody {
		return 0, false
	}
	return n * mult, true
}

func lookup(path string) *body {
	bodiesMu.RLock()
	b := bodies[path]
	bodiesMu.RUnlock()
	if b != nil {
		return b
	}
	n, ok := parseSize(strings.TrimPrefix(path, "/"))
	if !ok {
		return nil
	}
	b = newBody(n)
	bodiesMu.Lock()
	if len(bodies) < 64 { // bounded cache of sizes
		bodies[path] = b
	}
	bodiesMu.Unlock()
	return b
}

func handler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.URL.Path == "/" {
		h["Content-Length"] = []string{"3"}
		w.Write([]byte("ok\n"))
		return
	}
	p := r.URL.Path
	b := lookup(p[strings.LastIndexByte(p, '/'):])
	if b == nil {
		http.NotFound(w, r)
		return
	}
	// Direct map writes: the keys are already canonical, the values precomputed.
	h["Content-Type"] = ctype
	h["Content-Length"] = b.clen
	if r.Method == http.MethodHead {
		return
	}
	w.Write(b.data)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:19000", "address(es) to listen on, comma-separated")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: leave as set by the environment)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	for _, p := range []string{"/64", "/16k"} {
		lookup(p)
	}
	addrs := strings.Split(*listen, ",")
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		srv := &http.Server{
			Addr:              a,
			Handler:           http.HandlerFunc(handler),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          log.New(os.Stderr, "origin: ", 0),
		}
		go func() { errc <- srv.ListenAndServe() }()
	}
	fmt.Fprintf(os.Stderr, "origin: listening on %s (GOMAXPROCS=%d)\n", *listen, runtime.GOMAXPROCS(0))
	fmt.Fprintln(os.Stderr, "origin:", <-errc)
	os.Exit(1)
}
