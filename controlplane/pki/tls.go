package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// ServerTLS is the control plane's TLS configuration: it presents the certificate from certFile and
// keyFile (read again when the files change, so a renewed certificate is served without a restart)
// and verifies a client certificate, when one is presented, against the CAs in clientCAFile. A
// client without a certificate gets through the handshake (it may authenticate with a token); one
// with a certificate the CAs did not sign is refused at the handshake.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	kp, err := NewKeyPairFiles(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := LoadPool(clientCAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.Get() },
		ClientCAs:      pool,
		ClientAuth:     tls.VerifyClientCertIfGiven,
	}, nil
}

// ServerTLSFromMemory is ServerTLS with a certificate and client CAs already loaded.
func ServerTLSFromMemory(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ClientFiles are the TLS files of a control-plane client.
type ClientFiles struct {
	// CAFile holds the CAs the control plane's certificate must chain to (empty: the system's).
	CAFile string
	// CertFile and KeyFile are the client certificate and key (both empty: none presented).
	CertFile, KeyFile string
	// ServerName overrides the name checked in the control plane's certificate (default: the host dialled).
	ServerName string
}

// FilesFromDir is the CA, certificate and key of one holder in a PKI directory: ca.crt, NAME.crt,
// NAME.key.
func FilesFromDir(dir, name string) ClientFiles {
	return ClientFiles{CAFile: join(dir, CACertFile), CertFile: join(dir, name+".crt"), KeyFile: join(dir, name+".key")}
}

// ClientTLS is a client's TLS configuration. The client certificate is read again when its files
// change, so a worker picks up a renewed certificate on its next connection.
func ClientTLS(f ClientFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pool, err := LoadPool(f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.CertFile != "" && f.KeyFile != "":
		kp, err := NewKeyPairFiles(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.Get() }
	case f.CertFile != "" || f.KeyFile != "":
		return nil, errors.New("a client certificate needs both its certificate file and its key file")
	}
	return cfg, nil
}

// LoadPool reads the PEM certificates of a file into a pool.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// KeyPairFiles is a certificate and key kept on disk, read again when either file changes. A
// change that cannot be read (a half-written pair, say) keeps the last good pair.
type KeyPairFiles struct {
	certFile, keyFile string
	mu                sync.Mutex
	stamp             string
	checked           time.Time
	cert              *tls.Certificate
}

// NewKeyPairFiles reads a certificate and key pair, failing now when they cannot be read.
func NewKeyPairFiles(certFile, keyFile string) (*KeyPairFiles, error) {
	kp := &KeyPairFiles{certFile: certFile, keyFile: keyFile}
	if err := kp.reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// Get returns the current pair, reading the files again if they changed (checked at most once a second).
func (kp *KeyPairFiles) Get() (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if time.Since(kp.checked) >= time.Second {
		kp.checked = time.Now()
		if kp.stampNow() != kp.stamp {
			_ = kp.reload()
		}
	}
	return kp.cert, nil
}

func (kp *KeyPairFiles) stampNow() string {
	var s string
	for _, f := range []string{kp.certFile, kp.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return ""
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s
}

func (kp *KeyPairFiles) reload() error {
	stamp := kp.stampNow()
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.cert, kp.stamp = &cert, stamp
	return nil
}
