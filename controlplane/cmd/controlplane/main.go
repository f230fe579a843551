// Command controlplane runs a Fleetgate control-plane replica: the gRPC API over etcd that stores
// gateway configurations and streams them to data-plane workers. Its API is TLS with client
// authentication by default, from a local PKI it makes on first start (see `controlplane certs`).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/server"
	"github.com/fleetgate/fleetgate/controlplane/store"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "certs" {
		return runCerts(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: controlplane [flags]
       controlplane certs init|issue ...   (make a PKI by hand: controlplane certs -h)

The gRPC API is TLS with client certificates (and --token-file tokens) by default. Without
--tls-cert-file, the control plane keeps a PKI in --pki-dir (default DATA-DIR/pki), made on first start.

Flags:
`)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:7070", "gRPC listen address")
	endpoints := fs.String("etcd-endpoints", "", "comma-separated etcd client URLs (http:// or https://); empty runs an embedded etcd in --data-dir")
	var etcdTLS store.EtcdTLS
	fs.StringVar(&etcdTLS.CAFile, "etcd-ca-file", "", "external etcd: CA certificates (PEM) that etcd's server certificate must chain to (default with https:// endpoints: the system's)")
	fs.StringVar(&etcdTLS.CertFile, "etcd-cert-file", "", "external etcd: client certificate (PEM) presented to etcd (its --client-cert-auth); needs --etcd-key-file")
	fs.StringVar(&etcdTLS.KeyFile, "etcd-key-file", "", "external etcd: private key (PEM) of --etcd-cert-file")
	dataDir := fs.String("data-dir", "fleetgate-data", "data directory of the embedded etcd (and of the auto PKI, in DATA-DIR/pki)")
	etcdClient := fs.String("etcd-client-addr", "127.0.0.1:2379", "embedded etcd: client listen address")
	etcdPeer := fs.String("etcd-peer-addr", "127.0.0.1:2380", "embedded etcd: peer listen address")
	replica := fs.String("replica", "", "name of this replica in the fleet view (default: host name and pid)")
	leaseTTL := fs.Int("lease-ttl", 10, "seconds before a dead replica's workers vanish from the fleet view")
	metricsAddr := fs.String("metrics-address", "", "address serving Prometheus /metrics (empty: off)")
	pprofAddr := fs.String("pprof-address", "", "address serving Go's net/http/pprof profiles at /debug/pprof/ (empty: off); unauthenticated: loopback only")
	healthAddr := fs.String("health-address", "", "address serving grpc.health.v1 alone in plaintext, for probes that cannot do TLS (empty: off)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	insecure := fs.Bool("insecure", false, "serve plaintext gRPC with no authentication at all: for tests and development only")
	keyFile0 := fs.String("encryption-key-file", "", "keys sealing listeners' private keys in etcd, lines \"ID BASE64-32-BYTES\", the first current (default DATA-DIR/encryption.key, made on first start; replicas must share it)")
	pkiDir := fs.String("pki-dir", "", "directory of the auto PKI, made on first start (default DATA-DIR/pki); replicas may share one")
	var sans listFlag
	fs.Var(&sans, "tls-san", "extra DNS name or IP address for the auto PKI's server certificate (repeatable, comma-separated)")
	certFile := fs.String("tls-cert-file", "", "server certificate (PEM) to use instead of the auto PKI; needs --tls-key-file and --tls-client-ca-file")
	keyFile := fs.String("tls-key-file", "", "private key (PEM) of --tls-cert-file")
	clientCAFile := fs.String("tls-client-ca-file", "", "CA certificates (PEM) that client certificates must chain to, with --tls-cert-file")
	tokenFile := fs.String("token-file", "", "bearer tokens gatewayctl may present: lines TOKEN ROLE [NAME], ROLE reader or admin")
	strictIDs := fs.Bool("strict-dataplane-ids", false, "refuse data-plane certificates that may claim any worker id (the auto PKI's dataplane.crt): per-worker certificates only")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controlplane: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane:", err)
		return exitUsage
	}

	cfg := server.Config{
		DataDir:            *dataDir,
		EtcdClientAddr:     *etcdClient,
		EtcdPeerAddr:       *etcdPeer,
		Replica:            *replica,
		LeaseTTL:           *leaseTTL,
		Log:                log,
		Insecure:           *insecure,
		StrictDataPlaneIDs: *strictIDs,
	}
	if *endpoints != "" {
		cfg.EtcdEndpoints = strings.Split(*endpoints, ",")
	}
	switch {
	case *endpoints == "" && !etcdTLS.IsZero():
		fmt.Fprintln(stderr, "controlplane: --etcd-ca-file, --etcd-cert-file and --etcd-key-file are for an external etcd (--etcd-endpoints)")
		return exitUsage
	case *endpoints != "":
		if cfg.EtcdTLS, err = store.EtcdClientTLS(cfg.EtcdEndpoints, etcdTLS); err != nil {
			fmt.Fprintln(stderr, "controlplane:", err)
			return exitError
		}
		checkCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = store.CheckEtcdTLS(checkCtx, cfg.EtcdEndpoints, cfg.EtcdTLS)
		cancel()
		if err != nil {
			fmt.Fprintln(stderr, "controlplane:", err)
			return exitError
		}
	}
	byo := *certFile != "" || *keyFile != "" || *clientCAFile != ""
	switch {
	case *insecure && (byo || *tokenFile != "" || *pkiDir != "" || len(sans) > 0 || *strictIDs):
		fmt.Fprintln(stderr, "controlplane: --insecure turns TLS and authentication off: it takes no TLS, PKI or token flag")
		return exitUsage
	case byo && (*certFile == "" || *keyFile == "" || *clientCAFile == ""):
		fmt.Fprintln(stderr, "controlplane: --tls-cert-file, --tls-key-file and --tls-client-ca-file go together")
		return exitUsage
	case byo && (*pkiDir != "" || len(sans) > 0):
		fmt.Fprintln(stderr, "controlplane: --pki-dir and --tls-san are for the auto PKI, not with --tls-cert-file")
		return exitUsage
	}
	if *tokenFile != "" {
		if cfg.Tokens, err = server.ReadTokenFile(*tokenFile); err != nil {
			log.Error("token file", "err", err)
			return exitError
		}
		log.Info("bearer tokens loaded", "file", *tokenFile, "tokens", len(cfg.Tokens))
	}
	if !*insecure {
		if !byo {
			dir := *pkiDir
			if dir == "" {
				dir = filepath.Join(*dataDir, "pki")
			}
			did, err := pki.Ensure(dir, append(listenHosts(*listen), sans...))
			if err != nil {
				log.Error("auto PKI", "dir", dir, "err", err)
				return exitError
			}
			for _, d := range did {
				log.Info("auto PKI: "+d, "dir", dir)
			}
			*certFile, *keyFile, *clientCAFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, pki.CACertFile)
			log.Info("TLS from the auto PKI", "dir", dir,
				"gatewayctl", "--pki-dir "+dir, "dataplane", "--pki-dir "+dir+" (shared certificate) or a per-worker one: controlplane certs issue")
		}
		if cfg.TLS, err = pki.ServerTLS(*certFile, *keyFile, *clientCAFile); err != nil {
			log.Error("TLS", "err", err)
			return exitError
		}
	}

	keyPath := *keyFile0
	if keyPath == "" {
		keyPath = filepath.Join(*dataDir, "encryption.key")
	}
	keyring, err := store.LoadOrCreateKeyring(keyPath)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane: --encryption-key-file:", err)
		return exitError
	}
	cfg.Keyring = keyring

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "err", err)
		return exitError
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		lis.Close()
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
	if *pprofAddr != "" {
		plis, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			log.Error("pprof endpoint", "err", err)
			srv.Stop()
			return exitError
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = psrv.Serve(plis) }()
		defer psrv.Close()
		log.Info("pprof endpoint", "address", plis.Addr().String())
	}
	if *healthAddr != "" {
		hlis, err := net.Listen("tcp", *healthAddr)
		if err != nil {
			log.Error("health endpoint", "err", err)
			srv.Stop()
			return exitError
		}
		go func() { _ = srv.ServeHealth(hlis) }()
		log.Info("plaintext gRPC health endpoint", "address", hlis.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil { // hands the workers off to other replicas
			log.Warn("shutdown", "err", err)
		}
		return exitOK
	case err := <-errc:
		log.Error("serve", "err", err)
		srv.Stop()
		return exitError
	}
}

// listenHosts are the names the server certificate must carry for a listen address: its host, or
// this machine's name when it listens on every interface.
func listenHosts(listen string) []string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if name, err := os.Hostname(); err == nil && name != "" {
			return []string{name}
		}
		return nil
	}
	return []string{host}
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
