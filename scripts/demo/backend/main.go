// Command backend is the demo's sample backend server: it answers every request with its name and the
// path it was asked for, and serves /health for probes.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.10:9001", "address to serve on")
	name := flag.String("name", "backend", "name in every answer")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s: %s %s (Host %s, X-Forwarded-For %s)\n", *name, r.Method, r.URL.Path, r.Host, r.Header.Get("X-Forwarded-For"))
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
