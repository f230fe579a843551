// Command reverseproxy is the benchmark rig's baseline: the standard library's httputil.ReverseProxy
// over a default http.Transport, with only MaxIdleConnsPerHost raised (to 256) so that 64 concurrent
// clients do not churn upstream connections.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.6:18084", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:19000", "upstream base URL")
	flag.Parse()

	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		fmt.Fprintf(os.Stderr, "reverseproxy: bad --upstream %q\n", *upstream)
		os.Exit(2)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	if tr.MaxIdleConns < 256 {
		tr.MaxIdleConns = 256
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: tr,
		ErrorLog:  log.New(os.Stderr, "reverseproxy: ", 0),
	}
	srv := &http.Server{
		Addr:              *listen,
		Handler:           rp,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	fmt.Fprintf(os.Stderr, "reverseproxy: %s -> %s (GOMAXPROCS=%d)\n", *listen, target, runtime.GOMAXPROCS(0))
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "reverseproxy:", err)
		os.Exit(1)
	}
}
