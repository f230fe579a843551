// Package server is the control plane: the gRPC API in front of etcd, the distribution of snapshots
// to data-plane workers, and the fleet view.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
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
	// EtcdTLS is the etcd client's TLS (see store.EtcdClientTLS); nil: plaintext.
	EtcdTLS *tls.Config
	// DataDir holds the embedded etcd's data.
	DataDir string
	// Keyring seals the listeners' private keys in etcd. Nil: they are stored in the clear.
	Keyring *store.Keyring
	// EtcdClientAddr and EtcdPeerAddr are where the embedded etcd listens (default 127.0.0.1:2379/2380).
	EtcdClientAddr, EtcdPeerAddr string
	// Replica names this replica in the fleet view (default: host name and process id).
	Replica string
	// LeaseTTL, in seconds, of this replica's fleet entries (default 10).
	LeaseTTL int
	Log      *slog.Logger

	// TLS serves the API over TLS: the server certificate and the CAs that client certificates
	// must chain to (see pki.ServerTLS). Every call is then authenticated, by a verified client
	// certificate or a bearer token, and authorized by role (see RequiredRole). Required unless
	// Insecure.
	TLS *tls.Config
	// Insecure serves plaintext gRPC and authenticates nobody: anyone reaching the port may do
	// anything. For tests and development only.
	Insecure bool
	// Tokens are the bearer tokens callers may present instead of a client certificate (TLS only).
	Tokens Tokens
	// StrictDataPlaneIDs refuses data-plane certificates that may claim any worker id (the auto
	// PKI's shared dataplane.crt): every worker then needs its own certificate.
	StrictDataPlaneIDs bool
}

// bufferPool is the gRPC buffer pool of the API server and of the etcd client. gRPC's default pool
// has tiers of 256 B, 4, 16 and 32 KiB and 1 MiB, so every message between 32 KiB and 1 MiB takes a
// zeroed 1 MiB buffer: a worker's health view of 1,000 servers is about 55 KiB, and at 1,000 workers
// such buffers held 395-775 MiB of the replica's heap (receiving views, and writing them to etcd).
// With a tier at every power of two a buffer is at most twice its message.
var bufferPool = func() mem.BufferPool {
	p, err := mem.NewBinaryTieredBufferPool(8, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20)
	if err != nil {
		panic(err)
	}
	return p
}()

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
	hmu     sync.Mutex
	hgrpc   *grpc.Server // the plaintext health-only server of ServeHealth, if any
	stopped bool         // under hmu
	hc      *health.Server
	metrics *metrics
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// handoff is closed by Shutdown: every Connect stream then tells its worker to reconnect to
	// another replica and ends.
	handoff chan struct{}
	// listenerClosed is closed when gRPC closes the listener of Serve (the first step of its stop).
	listenerClosed chan struct{}
	serving        bool // under hmu: Serve handed a listener to gRPC
	shutdownOnce   sync.Once
	shutdownErr    error
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
	switch {
	case cfg.TLS == nil && !cfg.Insecure:
		return nil, errors.New("no TLS configuration: give certificates (Config.TLS) or choose Insecure")
	case cfg.TLS != nil && cfg.Insecure:
		return nil, errors.New("TLS and Insecure are exclusive")
	case cfg.Insecure && len(cfg.Tokens) > 0:
		return nil, errors.New("bearer tokens need TLS: they would cross the network in the clear")
	}
	s := &Server{cfg: cfg, log: cfg.Log, handoff: make(chan struct{}), listenerClosed: make(chan struct{})}
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
		TLS:         cfg.EtcdTLS,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(s.metrics.etcdInterceptor), experimental.WithBufferPool(bufferPool)},
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
	st := store.New(cli, store.WithKeyring(cfg.Keyring))
	s.cache = snapshot.New(s.log)
	s.cache.Use(st)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.cache.Run(runCtx, cli)
	}()
	go func() {
		defer s.wg.Done()
		_ = s.health.Run(runCtx, cli)
	}()

	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(identityFields)}
	unary := []grpc.UnaryServerInterceptor{s.metrics.grpc.UnaryServerInterceptor()}
	stream := []grpc.StreamServerInterceptor{s.metrics.grpc.StreamServerInterceptor()}
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
		// Snapshots are encoded once per version for every worker (see streamCodec).
		grpc.ForceServerCodecV2(newStreamCodec()),
		experimental.BufferPool(bufferPool),
	}
	if cfg.Insecure {
		s.log.Warn("serving plaintext gRPC without authentication (--insecure): for tests and development only")
	} else {
		a := newAuthenticator(cfg.Tokens, cfg.StrictDataPlaneIDs, s.log)
		unary = append(unary, auth.UnaryServerInterceptor(a.authorize))
		stream = append(stream, auth.StreamServerInterceptor(a.authorize), a.guardHello)
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	unary = append(unary,
		logging.UnaryServerInterceptor(slogAdapter(s.log), logOpts...),
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandler(s.recovered)),
	)
	stream = append(stream,
		logging.StreamServerInterceptor(slogAdapter(s.log), logOpts...),
		recovery.StreamServerInterceptor(recovery.WithRecoveryHandler(s.recovered)),
	)
	opts = append(opts, grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...))
	s.grpc = grpc.NewServer(opts...)
	local := newStreams()
	fgv1.RegisterConfigServiceServer(s.grpc, &configService{store: st, fleet: reg, health: s.health, streams: local, log: s.log})
	fgv1.RegisterDataPlaneServiceServer(s.grpc, &dataPlaneService{cache: s.cache, fleet: reg, streams: local, replica: cfg.Replica, metrics: s.metrics, handoff: s.handoff, log: s.log})
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
	s.hmu.Lock()
	if s.stopped || s.serving {
		s.hmu.Unlock()
		lis.Close()
		return errors.New("Serve: already serving or stopped")
	}
	s.serving = true
	s.hmu.Unlock()
	s.hc.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.log.Info("control plane serving", "listen", lis.Addr().String(), "replica", s.cfg.Replica, "tls", !s.cfg.Insecure)
	return s.grpc.Serve(&notifyListener{Listener: lis, closed: s.listenerClosed})
}

// notifyListener closes a channel when it is closed.
type notifyListener struct {
	net.Listener
	closed chan struct{}
	once   sync.Once
}

func (l *notifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// ServeHealth answers grpc.health.v1 only, in plaintext and without authentication, on lis until
// Stop: for health checkers that cannot speak TLS (Kubernetes' gRPC probes). It tells SERVING once
// Serve does.
func (s *Server) ServeHealth(lis net.Listener) error {
	s.hmu.Lock()
	if s.hgrpc != nil || s.stopped {
		s.hmu.Unlock()
		return errors.New("ServeHealth: already serving or stopped")
	}
	s.hgrpc = grpc.NewServer()
	healthpb.RegisterHealthServer(s.hgrpc, s.hc)
	s.hmu.Unlock()
	return s.hgrpc.Serve(lis)
}

// Stop is Shutdown with 5 s for calls in flight.
func (s *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// Shutdown hands this replica's workers off to the other replicas and stops. It stops taking
// connections (gRPC closes the listener and sends GOAWAY on every connection, so that clients open
// new streams elsewhere), tells every connected worker to reconnect now (ConnectResponse.Reconnect)
// and ends its stream, lets the other calls in flight finish until ctx ends (then cuts them and
// returns ctx's error), releases this replica's fleet lease and closes etcd. Later calls return the
// first one's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.log.Info("control plane shutting down; handing workers off to other replicas", "replica", s.cfg.Replica)
	s.hc.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	s.hmu.Lock()
	serving := s.serving
	s.stopped = true
	s.hmu.Unlock()
	if serving {
		// Tell workers to move only once the listener is closed, so that a reconnect cannot reach
		// this replica again through a new connection.
		select {
		case <-s.listenerClosed:
		case <-stopped:
		case <-ctx.Done():
		}
	}
	close(s.handoff)
	var err error
	select {
	case <-stopped:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: calls cut: %w", ctx.Err())
		s.grpc.Stop()
		<-stopped
	}
	s.hmu.Lock()
	if s.hgrpc != nil {
		s.hgrpc.Stop()
	}
	s.hmu.Unlock()
	s.cancel()
	s.fleet.Wait()
	s.wg.Wait()
	s.cli.Close()
	s.closeEtcd()
	s.log.Info("control plane stopped", "replica", s.cfg.Replica)
	return err
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
