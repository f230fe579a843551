// Package metrics holds a data-plane worker's Prometheus metrics: requests by listener, rule, pool,
// server and status class, upstream latency, client connections, probe results and latency by
// reason code, and the applied configuration version. Per-request updates touch pre-resolved
// children only.
package metrics

import (
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics of one worker.
type Metrics struct {
	Registry *prometheus.Registry

	requests        *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	connections     prometheus.Gauge
	probes          *prometheus.CounterVec
	probeLatency    *prometheus.HistogramVec
	configVersion   prometheus.Gauge

	routes sync.Map // routeKey -> *route
}

// New registers the worker's metrics (and the Go runtime's) in a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_requests_total",
			Help: "Requests answered, by listener, rule, pool, server and status class (2xx, 5xx...).",
		}, []string{"listener", "rule", "pool", "server", "code"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetgate_upstream_duration_seconds",
			Help:    "Time from forwarding a request to the end of the backend's response, by pool and server.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"pool", "server"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetgate_client_connections",
			Help: "Client connections open on the worker's listeners.",
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_probes_total",
			Help: "Health probes run, by settings, server and result (healthy, or the failure's reason code).",
		}, []string{"settings", "server", "result"}),
		probeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetgate_probe_duration_seconds",
			Help:    "Health probe duration by result.",
			Buckets: prometheus.ExponentialBuckets(.0005, 4, 10),
		}, []string{"result"}),
		configVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetgate_config_version",
			Help: "Version (etcd revision) of the configuration the worker serves.",
		}),
	}
	m.Registry.MustRegister(m.requests, m.upstreamLatency, m.connections, m.probes, m.probeLatency, m.configVersion,
		// The live heap and GOGC show what the GC pacer (dataplane/gcpace) does.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/(heap/live|gogc):`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type routeKey struct {
	listener, rule, pool, server string
}

// route is the resolved children of one (listener, rule, pool, server). A status class's series is
// made on its first request, so that scrapes show no zero series for classes never seen.
type route struct {
	codes   [6]atomic.Pointer[prometheus.Counter] // index: status/100 (0: no response)
	latency prometheus.Observer
}

// Request records one answered request. code 0 means none was sent (the client went away).
func (m *Metrics) Request(listener, rule, pool, server string, code int, upstream time.Duration) {
	if m == nil {
		return
	}
	k := routeKey{listener, rule, pool, server}
	v, ok := m.routes.Load(k)
	if !ok {
		r := &route{}
		if server != "" {
			r.latency = m.upstreamLatency.WithLabelValues(pool, server)
		}
		v, _ = m.routes.LoadOrStore(k, r)
	}
	r := v.(*route)
	class := min(max(code/100, 0), 5)
	c := r.codes[class].Load()
	if c == nil {
		name := strconv.Itoa(class) + "xx"
		if class == 0 {
			name = "none"
		}
		counter := m.requests.WithLabelValues(listener, rule, pool, server, name)
		r.codes[class].Store(&counter)
		c = &counter
	}
	(*c).Inc()
	if upstream > 0 && r.latency != nil {
		r.latency.Observe(upstream.Seconds())
	}
}

// Connection records a client connection opening (+1) or closing (-1).
func (m *Metrics) Connection(delta int) {
	if m != nil {
		m.connections.Add(float64(delta))
	}
}

// Probe records one probe: reason "" is a healthy result.
func (m *Metrics) Probe(settings, server, reason string, d time.Duration) {
	if m == nil {
		return
	}
	result := reason
	if result == "" {
		result = "healthy"
	}
	m.probes.WithLabelValues(settings, server, result).Inc()
	m.probeLatency.WithLabelValues(result).Observe(d.Seconds())
}

// ConfigVersion records the version served.
func (m *Metrics) ConfigVersion(v int64) {
	if m != nil {
		m.configVersion.Set(float64(v))
	}
}
