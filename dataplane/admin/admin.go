// Package admin is a data-plane worker's admin endpoint: liveness, readiness and Prometheus metrics,
// on an address of its own, apart from the traffic listeners.
package admin

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves:
//   - /healthz: 200 while the process serves (liveness);
//   - /readyz: 200 once a configuration is applied, 503 before (readiness: "has applied a config");
//   - /metrics: the registry in Prometheus' text format.
func Handler(version func() int64, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if v := version(); v > 0 {
			fmt.Fprintf(w, "ready: serving configuration version %d\n", v)
			return
		}
		http.Error(w, "not ready: no configuration applied yet", http.StatusServiceUnavailable)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
