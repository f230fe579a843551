package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Files of a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	// Holders: each has NAME.crt and NAME.key.
	ServerName    = "server"
	AdminName     = "admin"
	DataPlaneName = "dataplane"
)

// DefaultHosts are always in the auto PKI's server certificate.
var DefaultHosts = []string{"127.0.0.1", "localhost", "::1"}

func join(dir, file string) string { return filepath.Join(dir, file) }

// Ensure makes dir a complete PKI, the control plane's auto-TLS: on first use it creates a CA,
// a server certificate valid for hosts (and DefaultHosts), an admin client certificate (role admin)
// and the shared data-plane client certificate (role dataplane, any worker id). Later it keeps what
// is there and issues anew only a certificate that is missing, expires within RenewBefore, is not
// signed by the CA, or (the server's) does not name every host; a new server certificate names the
// old one's hosts too. Without ca.key nothing can be issued and a complete directory is only checked.
// Keys are written 0600, the directory 0700; each file is replaced atomically, under a lock file so
// that replicas sharing a directory do not interleave. It returns what it did, for the log.
func Ensure(dir string, hosts []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lock(dir)
	readOnly := errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)
	switch {
	case readOnly: // a read-only directory (a mounted secret, say) can only be checked
	case err != nil:
		return nil, err
	default:
		defer unlock()
	}

	var did []string
	ca, err := LoadCA(join(dir, CACertFile), join(dir, CAKeyFile))
	if readOnly {
		if !exists(join(dir, CACertFile)) {
			return nil, fmt.Errorf("%s is read-only and holds no %s", dir, CACertFile)
		}
		ca, err = nil, nil
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && !exists(join(dir, CACertFile)):
		if ca, err = NewCA("Fleetgate CA", CAValidity); err != nil {
			return nil, err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		// The key first: a ca.crt marks a complete CA.
		if err := writeFile(join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
			return nil, err
		}
		if err := writeFile(join(dir, CACertFile), ca.CertPEM(), 0o644); err != nil {
			return nil, err
		}
		did = append(did, fmt.Sprintf("created CA %q", ca.Cert.Subject.CommonName))
	case errors.Is(err, fs.ErrNotExist):
		ca = nil // ca.crt without ca.key: check only
	case err != nil:
		return nil, err
	}
	hosts = append(slices.Clone(DefaultHosts), hosts...)
	holders := []struct {
		name string
		req  Request
	}{
		{ServerName, Request{CommonName: "fleetgate-controlplane", Hosts: hosts}},
		{AdminName, Request{CommonName: AdminName, Roles: []string{RoleAdmin}}},
		{DataPlaneName, Request{CommonName: DataPlaneName, Roles: []string{RoleDataPlane}, AnyDataPlane: true}},
	}
	for _, h := range holders {
		why, old := needsIssue(dir, h.name, h.req, ca)
		if why == "" {
			continue
		}
		if ca == nil {
			return did, fmt.Errorf("%s: %s, and there is no %s to issue a new one (or the directory is read-only)", join(dir, h.name+".crt"), why, CAKeyFile)
		}
		req := h.req
		if old != nil && len(req.Hosts) > 0 { // keep the names the old certificate served
			for _, ip := range old.IPAddresses {
				req.Hosts = append(req.Hosts, ip.String())
			}
			req.Hosts = append(req.Hosts, old.DNSNames...)
		}
		if _, err := issueToDir(ca, dir, h.name, req); err != nil {
			return did, err
		}
		did = append(did, fmt.Sprintf("issued %s.crt (%s)", h.name, why))
	}
	return did, nil
}

// needsIssue says why holder name's certificate in dir must be issued anew ("" if it need not), and
// returns the current certificate if there is one.
func needsIssue(dir, name string, req Request, ca *CA) (string, *x509.Certificate) {
	b, err := os.ReadFile(join(dir, name+".crt"))
	if err != nil || !exists(join(dir, name+".key")) {
		return "missing", nil
	}
	cert, err := ParseCertificate(b)
	if err != nil {
		return "unreadable", nil
	}
	if time.Until(cert.NotAfter) < RenewBefore {
		return "expires " + cert.NotAfter.UTC().Format(time.RFC3339), cert
	}
	if ca != nil {
		usage := x509.ExtKeyUsageClientAuth
		if len(req.Hosts) > 0 {
			usage = x509.ExtKeyUsageServerAuth
		}
		if ca.Verify(cert, usage) != nil {
			return "not signed by this CA", cert
		}
	}
	var missing []string
	for _, h := range req.Hosts {
		if h = strings.Trim(strings.TrimSpace(h), "[]"); h != "" && cert.VerifyHostname(h) != nil {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		return "does not name " + strings.Join(missing, ", "), cert
	}
	return "", cert
}

// Issue issues a certificate with the CA of PKI directory dir and writes it to outDir as NAME.crt
// and NAME.key (replacing any).
func Issue(dir, outDir, name string, req Request) (*Issued, error) {
	ca, err := LoadCA(join(dir, CACertFile), join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lock(outDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return issueToDir(ca, outDir, name, req)
}

func issueToDir(ca *CA, dir, name string, req Request) (*Issued, error) {
	is, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	// The certificate first, then its key: a reader that sees a new key sees its certificate.
	if err := writeFile(join(dir, name+".crt"), is.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(join(dir, name+".key"), is.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	return is, nil
}

// writeFile replaces path atomically with data, with mode perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Lock timing: how long to wait for another process's lock, and when a lock is taken to be stale
// (its holder died).
const (
	lockWait  = 15 * time.Second
	lockStale = time.Minute
)

// lock takes dir's lock file (.lock, created exclusively) and returns its release.
func lock(dir string) (func(), error) {
	path := join(dir, ".lock")
	deadline := time.Now().Add(lockWait)
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintf(f, "%d\n", os.Getpid())
			f.Close()
			return func() { os.Remove(path) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if fi, err := os.Stat(path); err == nil && time.Since(fi.ModTime()) > lockStale {
			os.Remove(path)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: locked by another process for %s (remove it if no control plane is starting)", path, lockWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
