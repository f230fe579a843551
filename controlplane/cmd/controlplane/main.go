// Command controlplane runs a Fleetgate control-plane replica: the gRPC API over etcd that stores
// gateway configurations and streams them to data-plane workers.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/server"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7070", "gRPC listen address")
	endpoints := fs.String("etcd-endpoints", "", "comma-separated etcd client URLs; empty runs an embedded etcd in --data-dir")
	dataDir := fs.String("data-dir", "fleetgate-data", "data directory of the embedded etcd")
	etcdClient := fs.String("etcd-client-addr", "127.0.0.1:2379", "embedded etcd: client listen address")
	etcdPeer := fs.String("etcd-peer-addr", "127.0.0.1:2380", "embedded etcd: peer listen address")
	replica := fs.String("replica", "", "name of this replica in the fleet view (default: host name and pid)")
	leaseTTL := fs.Int("lease-ttl", 10, "seconds before a dead replica's workers vanish from the fleet view")
	metricsAddr := fs.String("metrics-address", "", "address serving Prometheus /metrics (empty: off)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return exitUsage
	}
	log, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := server.Config{
		DataDir:        *dataDir,
		EtcdClientAddr: *etcdClient,
		EtcdPeerAddr:   *etcdPeer,
		Replica:        *replica,
		LeaseTTL:       *leaseTTL,
		Log:            log,
	}
	if *endpoints != "" {
		cfg.EtcdEndpoints = strings.Split(*endpoints, ",")
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		return exitError
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		log.Error("start", "err", err)
		return exitError
	}
	if *metricsAddr != "" {
		mlis, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			log.Error("metrics endpoint", "err", err)
			srv.Stop()
			return exitError
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = msrv.Serve(mlis) }()
		defer msrv.Close()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		srv.Stop()
		return exitOK
	case err := <-errc:
		log.Error("serve", "err", err)
		srv.Stop()
		return exitError
	}
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
