// Package server is the control plane: the gRPC API in front of etcd, the distribution of snapshots
// to data-plane workers, and the fleet view.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/embedetcd"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	"github.com/fleetgate/fleetgate/controlplane/snapshot"
	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Config configures a control-plane replica.
type Config struct {
	// EtcdEndpoints of an external etcd cluster. Empty: run an embedded etcd in DataDir.
	EtcdEndpoints []string
	// DataDir holds the embedded etcd's data.
	DataDir string
	// EtcdClientAddr and EtcdPeerAddr are where the embedded etcd listens (default 127.0.0.1:2379/2380).
	EtcdClientAddr, EtcdPeerAddr string
	// Replica names this replica in the fleet view (default: host name and process id).
	Replica string
	// LeaseTTL, in seconds, of this replica's fleet entries (default 10).
	LeaseTTL int
	Log      *slog.Logger
}

// Server is a running control-plane replica.
type Server struct {
	cfg     Config
	log     *slog.Logger
	etcd    *embedetcd.Server
	cli     *clientv3.Client
	fleet   *fleet.Registry
	cache   *snapshot.Cache
	health  *fleet.HealthCache
	grpc    *grpc.Server
	hc      *health.Server
	metrics *metrics
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New connects to etcd (starting the embedded one if no endpoints are given) and builds the gRPC
// server. Serve starts answering.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10
	}
	if cfg.Replica == "" {
		host, _ := os.Hostname()
		cfg.Replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	s := &Server{cfg: cfg, log: cfg.Log}
	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		if cfg.DataDir == "" {
			return nil, fmt.Errorf("--data-dir is required for the embedded etcd")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, err
		}
		e, err := embedetcd.Start(ctx, embedetcd.Config{
			Dir:        filepath.Join(cfg.DataDir, "etcd"),
			ClientAddr: orDefault(cfg.EtcdClientAddr, "127.0.0.1:2379"),
			PeerAddr:   orDefault(cfg.EtcdPeerAddr, "127.0.0.1:2380"),
		})
		if err != nil {
			return nil, err
		}
		s.etcd = e
		endpoints = []string{e.Endpoint()}
		s.log.Info("embedded etcd serving", "endpoint", e.Endpoint(), "dir", filepath.Join(cfg.DataDir, "etcd"))
	}
	s.health = fleet.NewHealthCache(s.log)
	s.metrics = newMetrics(s.health.Count)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(s.metrics.etcdInterceptor)},
	})
	if err != nil {
		s.closeEtcd()
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	s.cli = cli

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	reg, err := fleet.NewRegistry(runCtx, cli, cfg.LeaseTTL, 30*time.Second, s.log)
	if err != nil {
		cancel()
		cli.Close()
		s.closeEtcd()
		return nil, err
	}
	s.fleet = reg
	s.cache = snapshot.New(s.log)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.cache.Run(runCtx, cli)
	}()
	go func() {
		defer s.wg.Done()
		_ = s.health.Run(runCtx, cli)
	}()

	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			s.metrics.grpc.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(slogAdapter(s.log), logging.WithLogOnEvents(logging.FinishCall)),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(s.recovered)),
		),
		grpc.ChainStreamInterceptor(
			s.metrics.grpc.StreamServerInterceptor(),
			logging.StreamServerInterceptor(slogAdapter(s.log), logging.WithLogOnEvents(logging.FinishCall)),
			recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(s.recovered)),
		),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
	)
	local := newStreams()
	fgv1.RegisterConfigServiceServer(s.grpc, &configService{store: store.New(cli), fleet: reg, health: s.health, streams: local, log: s.log})
	fgv1.RegisterDataPlaneServiceServer(s.grpc, &dataPlaneService{cache: s.cache, fleet: reg, streams: local, replica: cfg.Replica, metrics: s.metrics, log: s.log})
	s.hc = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.hc)
	reflection.Register(s.grpc)
	s.metrics.grpc.InitializeMetrics(s.grpc)
	return s, nil
}

// Serve answers on lis until Stop. It waits for the first full read of the gateways first, so that no
// worker is told about an empty world.
func (s *Server) Serve(lis net.Listener) error {
	select {
	case <-s.cache.Ready():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("could not read gateways from etcd within 30s")
	}
	select {
	case <-s.health.Ready():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("could not read health views from etcd within 30s")
	}
	s.hc.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.log.Info("control plane serving", "listen", lis.Addr().String(), "replica", s.cfg.Replica)
	return s.grpc.Serve(lis)
}

// Stop ends every stream and call, releases this replica's fleet lease and closes etcd.
func (s *Server) Stop() {
	s.hc.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
	}
	s.cancel()
	s.fleet.Wait()
	s.wg.Wait()
	s.cli.Close()
	s.closeEtcd()
}

// MetricsHandler serves the replica's Prometheus metrics.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
}

// EtcdEndpoint is the embedded etcd's client URL ("" with an external cluster).
func (s *Server) EtcdEndpoint() string {
	if s.etcd == nil {
		return ""
	}
	return s.etcd.Endpoint()
}

func (s *Server) closeEtcd() {
	if s.etcd != nil {
		s.etcd.Close()
	}
}

func (s *Server) recovered(p any) error {
	s.log.Error("panic in handler", "panic", p)
	return status.Error(codes.Internal, "internal error")
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
