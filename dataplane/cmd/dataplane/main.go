// Command dataplane runs a Fleetgate data-plane worker: it takes its gateway's configuration from the
// control plane and proxies traffic on the listeners it names.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/fleetgate/fleetgate/agent"
	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/dataplane/admin"
	"github.com/fleetgate/fleetgate/dataplane/gcpace"
	"github.com/fleetgate/fleetgate/dataplane/metrics"
	"github.com/fleetgate/fleetgate/dataplane/worker"
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
	fs := flag.NewFlagSet("dataplane", flag.ContinueOnError)
	controlPlane := fs.String("controlplane", "127.0.0.1:7070", "control-plane gRPC address, or several replicas' comma-separated (host:port,host:port): the worker moves to another when its replica goes away")
	gateway := fs.String("gateway", "", "gateway to serve (required)")
	id := fs.String("id", "", "worker id, unique per gateway (default: host name and pid)")
	bind := fs.String("bind-address", "127.0.0.1", "IP address the listeners bind to")
	stateDir := fs.String("state-dir", "", "directory keeping the last good config (empty: none kept)")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "how long in-flight requests may take to finish on shutdown")
	adminAddr := fs.String("admin-address", "", "address of the admin endpoint: /healthz, /readyz, /metrics (empty: off)")
	pprofAddr := fs.String("pprof-address", "", "address serving Go's net/http/pprof profiles at /debug/pprof/ (empty: off); unauthenticated: loopback only")
	accessLog := fs.Bool("access-log", false, "log one line per request (Azure's access log fields)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pkiDir := fs.String("pki-dir", "", "PKI directory: ca.crt and the shared dataplane.crt/.key (the control plane's DATA-DIR/pki)")
	caFile := fs.String("ca-file", "", "CA certificates (PEM) the control plane's certificate must chain to (default: --pki-dir's ca.crt)")
	certFile := fs.String("cert-file", "", "this worker's client certificate (PEM) (default: --pki-dir's dataplane.crt)")
	keyFile := fs.String("key-file", "", "private key (PEM) of --cert-file (default: --pki-dir's dataplane.key)")
	serverName := fs.String("tls-server-name", "", "name to verify in the control plane's certificate (default: the host of each --controlplane address)")
	plaintext := fs.Bool("insecure", false, "connect in plaintext, with no certificate: only to a control plane run with --insecure (tests and development)")
	gcMinHeap := fs.Int("gc-min-heap-mib", gcpace.DefaultMinHeap>>20, "let the heap grow to this many MiB before a garbage collection while little is live (a dynamic GOGC; 0 or a GOGC variable: off)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return exitUsage
	}
	if *gateway == "" {
		fmt.Fprintln(os.Stderr, "dataplane: --gateway is required")
		return exitUsage
	}
	cpAddrs, err := agent.SplitAddresses(*controlPlane)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane: --controlplane:", err)
		return exitUsage
	}
	var creds credentials.TransportCredentials
	if *plaintext {
		if *pkiDir != "" || *caFile != "" || *certFile != "" || *keyFile != "" || *serverName != "" {
			fmt.Fprintln(os.Stderr, "dataplane: --insecure takes no TLS flag")
			return exitUsage
		}
		creds = insecure.NewCredentials()
	} else {
		files := pki.ClientFiles{CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile, ServerName: *serverName}
		if *pkiDir != "" {
			d := pki.FilesFromDir(*pkiDir, pki.DataPlaneName)
			files.CAFile, files.CertFile, files.KeyFile = orDefault(files.CAFile, d.CAFile), orDefault(files.CertFile, d.CertFile), orDefault(files.KeyFile, d.KeyFile)
		}
		if files.CertFile == "" || files.KeyFile == "" {
			fmt.Fprintln(os.Stderr, "dataplane: a client certificate is required: --pki-dir DIR, or --cert-file and --key-file (and --ca-file); --insecure only for a control plane without TLS")
			return exitUsage
		}
		tlsCfg, err := pki.ClientTLS(files)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dataplane: TLS:", err)
			return exitError
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	if *id == "" {
		host, _ := os.Hostname()
		*id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	log, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		return exitUsage
	}
	log = log.With("dataplane", *id)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *gcMinHeap > 0 && os.Getenv("GOGC") == "" {
		go gcpace.New(uint64(*gcMinHeap)<<20).Run(ctx, time.Second)
	}

	m := metrics.New()
	cfg := worker.Config{BindAddress: *bind, ShutdownGrace: *grace, Metrics: m, Log: log}
	if *accessLog {
		cfg.AccessLog = log.With("log", "access")
	}
	w := worker.New(cfg)
	if *adminAddr != "" {
		lis, err := net.Listen("tcp", *adminAddr)
		if err != nil {
			log.Error("admin endpoint", "err", err)
			return exitError
		}
		adminSrv := &http.Server{Handler: admin.Handler(w.Version, m.Registry), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = adminSrv.Serve(lis) }()
		defer adminSrv.Close()
		log.Info("admin endpoint", "address", lis.Addr().String())
	}
	if *pprofAddr != "" {
		lis, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			log.Error("pprof endpoint", "err", err)
			return exitError
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = psrv.Serve(lis) }()
		defer psrv.Close()
		log.Info("pprof endpoint", "address", lis.Addr().String())
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	if *serverName != "" {
		dialOpts = append(dialOpts, grpc.WithAuthority(*serverName)) // the one name for every replica
	}
	conn, err := agent.Dial(cpAddrs, dialOpts...)
	if err != nil {
		log.Error("control plane client", "err", err)
		return exitError
	}
	defer conn.Close()
	ag := agent.New(agent.Config{Gateway: *gateway, ID: *id, Address: *bind, StateDir: *stateDir, Health: w, Log: log}, conn, w)
	if err := ag.Restore(ctx); err != nil {
		log.Error("could not restore the last good config; waiting for the control plane", "err", err)
	}
	// The session outlives the signal: the worker says it is leaving, then finishes its requests.
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ag.Run(actx)
	}()
	<-ctx.Done()
	log.Info("shutting down", "grace", *grace)
	lctx, lcancel := context.WithTimeout(context.Background(), min(*grace, 2*time.Second))
	if err := ag.Leave(lctx, "shutting down (signal)"); err != nil {
		log.Warn("could not tell the control plane this worker is leaving", "err", err)
	}
	lcancel()
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		log.Warn("requests cut at shutdown", "err", err)
	}
	acancel()
	<-done
	return exitOK
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

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
