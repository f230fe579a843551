package server

import (
	"context"
	"path"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
)

// metrics of a control-plane replica.
type metrics struct {
	registry *prometheus.Registry
	grpc     *grpcprom.ServerMetrics

	connected *prometheus.GaugeVec   // workers connected to this replica, by gateway
	pushes    *prometheus.CounterVec // snapshots sent, by gateway
	answers   *prometheus.CounterVec // ACKs and NACKs, by gateway and kind
	pushToAck prometheus.Histogram   // snapshot sent -> its ACK
	views     prometheus.GaugeFunc   // worker health views held (aggregation size)
	etcd      *prometheus.HistogramVec
}

// etcdInterceptor times every unary etcd request by method.
func (m *metrics) etcdInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.etcd.WithLabelValues(path.Base(method)).Observe(time.Since(start).Seconds())
	return err
}

func newMetrics(views func() float64) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.001, .005, .01, .05, .1, .5, 1, 5}))),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetgate_controlplane_connected_dataplanes",
			Help: "Data-plane workers connected to this replica, by gateway.",
		}, []string{"gateway"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_controlplane_snapshots_sent_total",
			Help: "Configuration snapshots sent to workers, by gateway.",
		}, []string{"gateway"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetgate_controlplane_snapshot_answers_total",
			Help: "Workers' answers to snapshots, by gateway and answer (ack, nack).",
		}, []string{"gateway", "answer"}),
		pushToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fleetgate_controlplane_push_to_ack_seconds",
			Help:    "Time from sending a snapshot to the worker's ACK.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5},
		}),
		views: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fleetgate_controlplane_health_views",
			Help: "Workers' health views this replica aggregates.",
		}, views),
		etcd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetgate_controlplane_etcd_request_seconds",
			Help:    "etcd request latency by method (Range, Txn, Put, ...).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"method"}),
	}
	m.registry.MustRegister(m.grpc, m.connected, m.pushes, m.answers, m.pushToAck, m.views, m.etcd,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
