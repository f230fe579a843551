package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/pki"
)

// EtcdTLS names the files of the TLS the control plane speaks to an external etcd as a client:
// the control plane's flags --etcd-ca-file, --etcd-cert-file and --etcd-key-file (etcdctl's
// --cacert, --cert and --key). Errors name those flags.
type EtcdTLS struct {
	// CAFile holds the CAs etcd's server certificate must chain to (empty: the system's).
	CAFile string
	// CertFile and KeyFile are the client certificate presented to etcd, for an etcd that runs with
	// --client-cert-auth (both or neither).
	CertFile, KeyFile string
}

// IsZero reports whether no file is given.
func (f EtcdTLS) IsZero() bool { return f == EtcdTLS{} }

// EtcdClientTLS checks the etcd endpoints against the TLS files and returns the client's TLS
// configuration: nil for plaintext (http:// endpoints and no file), else TLS 1.2+ verifying etcd's
// certificate against CAFile (or the system's CAs) and presenting CertFile when given, read again
// when it changes. Endpoints are all http:// or all https:// (a bare host:port counts as https://
// when a file is given); a file with http:// endpoints is an error, not ignored.
func EtcdClientTLS(endpoints []string, f EtcdTLS) (*tls.Config, error) {
	secure, plain := 0, 0
	for _, ep := range endpoints {
		switch scheme, _, _ := strings.Cut(ep, "://"); {
		case !strings.Contains(ep, "://"):
			// host:port: the client uses TLS when it has a configuration.
		case scheme == "https":
			secure++
		case scheme == "http":
			plain++
		default:
			return nil, fmt.Errorf("--etcd-endpoints %q: want http://HOST:PORT or https://HOST:PORT", ep)
		}
	}
	switch {
	case secure > 0 && plain > 0:
		return nil, errors.New("--etcd-endpoints mixes http:// and https:// endpoints: etcd serves its clients one way")
	case plain > 0 && !f.IsZero():
		return nil, fmt.Errorf("%s given, but --etcd-endpoints are http:// (plaintext): use https:// endpoints", f.flagsGiven())
	case secure == 0 && f.IsZero():
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pool, err := pki.LoadPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.CertFile != "" && f.KeyFile != "":
		for flag, file := range map[string]string{"--etcd-cert-file": f.CertFile, "--etcd-key-file": f.KeyFile} {
			if _, err := os.Stat(file); err != nil {
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
		}
		kp, err := pki.NewKeyPairFiles(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file and --etcd-key-file: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.Get() }
	case f.CertFile != "" || f.KeyFile != "":
		return nil, errors.New("--etcd-cert-file and --etcd-key-file go together")
	}
	return cfg, nil
}

func (f EtcdTLS) flagsGiven() string {
	var given []string
	for _, g := range []struct{ flag, file string }{{"--etcd-ca-file", f.CAFile}, {"--etcd-cert-file", f.CertFile}, {"--etcd-key-file", f.KeyFile}} {
		if g.file != "" {
			given = append(given, g.flag)
		}
	}
	return strings.Join(given, ", ")
}

// CheckEtcdTLS makes a TLS connection to every endpoint, as the etcd client will, and reports the
// first that fails in words that name the flag to look at: etcd's certificate not signed by a CA of
// --etcd-ca-file, or not valid for the endpoint's host; etcd refusing the client certificate (or
// its absence); an endpoint that does not speak TLS. It returns nil at once when cfg is nil
// (plaintext). An endpoint that cannot be reached is not an error here: etcd may be starting, and
// the client retries.
func CheckEtcdTLS(ctx context.Context, endpoints []string, cfg *tls.Config) error {
	if cfg == nil {
		return nil
	}
	for _, ep := range endpoints {
		if err := checkEndpointTLS(ctx, ep, cfg); err != nil {
			return err
		}
	}
	return nil
}

func checkEndpointTLS(ctx context.Context, ep string, cfg *tls.Config) error {
	hostport := ep
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("--etcd-endpoints %q: %w", ep, err)
		}
		hostport = u.Host
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("--etcd-endpoints %q: %w", ep, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = host
	}
	c.NextProtos = []string{"h2"} // as gRPC
	d := &tls.Dialer{Config: c}
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return explainTLS(ep, host, err)
	}
	defer conn.Close()
	// With TLS 1.3 the server checks the client's certificate after the client considers the
	// handshake done: its verdict is the first thing read (an alert, or etcd's HTTP/2 settings).
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
		return explainTLS(ep, host, err)
	}
	return nil
}

// explainTLS turns a failed TLS connection to etcd into an error that names the flag to look at,
// or nil when etcd could not be reached at all.
func explainTLS(ep, host string, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		header    tls.RecordHeaderError
		opErr     *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("etcd %s: TLS handshake failed: etcd's certificate is not signed by a CA of --etcd-ca-file (or of the system, without it): %w", ep, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("etcd %s: TLS handshake failed: etcd's certificate is not valid for %q: %w", ep, host, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("etcd %s: TLS handshake failed: etcd's certificate is not valid: %w", ep, err)
	case errors.As(err, &header), errors.Is(err, io.EOF):
		// A plaintext etcd answers a ClientHello by closing the connection.
		return fmt.Errorf("etcd %s does not speak TLS (it closed the connection in the handshake): use an http:// endpoint without --etcd-ca-file, --etcd-cert-file and --etcd-key-file, or serve TLS from etcd (--cert-file, --key-file): %w", ep, err)
	case errors.As(err, &opErr) && opErr.Op == "remote error" && strings.Contains(opErr.Err.Error(), "certificate"):
		// The alert etcd sent: bad certificate, unknown certificate authority, certificate required...
		return fmt.Errorf("etcd %s refused the client certificate: give --etcd-cert-file and --etcd-key-file, a certificate for client authentication signed by a CA of etcd's --trusted-ca-file: %w", ep, err)
	case errors.As(err, &opErr) && opErr.Op == "dial", errors.Is(err, context.DeadlineExceeded):
		return nil // not reachable now: the client keeps trying
	}
	return fmt.Errorf("etcd %s: TLS connection failed (check --etcd-ca-file, --etcd-cert-file and --etcd-key-file): %w", ep, err)
}
