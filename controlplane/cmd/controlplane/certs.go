package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	"github.com/fleetgate/fleetgate/controlplane/store"
)

const certsUsage = `Usage:
  controlplane certs init  --dir DIR [--san NAME]...
      Make a PKI in DIR as the control plane makes one on first start: ca.crt/ca.key, server.crt/key
      (127.0.0.1, localhost, ::1 and every --san), admin.crt/key (role admin) and dataplane.crt/key
      (role dataplane, shared: may claim any worker id). Existing files are kept; a missing or
      expiring certificate, or a server certificate lacking a --san, is issued anew.
  controlplane certs issue --dir DIR (--dataplane ID | --admin NAME | --reader NAME) [--out-dir OUT] [--validity 8760h]
      Issue a client certificate with DIR's CA, written to OUT (default DIR) as ROLE-NAME.crt/.key:
      --dataplane ID: a worker's own certificate (CN=ID, fleetgate://dataplane/ID), good for that id only;
      --admin NAME / --reader NAME: an operator's certificate for gatewayctl.
`

// runCerts runs `controlplane certs ...`.
func runCerts(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, certsUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "init":
		return certsInit(args[1:], stdout, stderr)
	case "issue":
		return certsIssue(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "controlplane certs: unknown command %q\n\n%s", args[0], certsUsage)
	return exitUsage
}

func certsFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("controlplane certs "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, certsUsage+"\nFlags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs
}

func certsInit(args []string, stdout, stderr io.Writer) int {
	fs := certsFlags("init", stderr)
	dir := fs.String("dir", "", "PKI directory (required)")
	var sans listFlag
	fs.Var(&sans, "san", "extra DNS name or IP address of the server certificate (repeatable, comma-separated)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "controlplane certs init: --dir is required, and no argument is taken")
		return exitUsage
	}
	did, err := pki.Ensure(*dir, sans)
	if err != nil {
		fmt.Fprintln(stderr, "controlplane certs init:", err)
		return exitError
	}
	// The key sealing listeners' private keys in etcd belongs with the shared material too.
	keyPath := filepath.Join(*dir, "encryption.key")
	if _, statErr := os.Stat(keyPath); os.IsNotExist(statErr) {
		if _, err := store.LoadOrCreateKeyring(keyPath); err != nil {
			fmt.Fprintln(stderr, "controlplane certs init:", err)
			return exitError
		}
		did = append(did, "made encryption.key (seals listeners' private keys in etcd; give every replica --encryption-key-file)")
	}
	if len(did) == 0 {
		fmt.Fprintf(stdout, "%s: the PKI is complete; nothing to do\n", *dir)
	}
	for _, d := range did {
		fmt.Fprintf(stdout, "%s: %s\n", *dir, d)
	}
	fmt.Fprintf(stdout, "control plane: controlplane --pki-dir %s --encryption-key-file %s ...\n", *dir, keyPath)
	fmt.Fprintf(stdout, "workers:       dataplane --pki-dir %s ...   (shared certificate; per-worker: controlplane certs issue --dataplane ID)\n", *dir)
	fmt.Fprintf(stdout, "operators:     gatewayctl --pki-dir %s ...\n", *dir)
	return exitOK
}

func certsIssue(args []string, stdout, stderr io.Writer) int {
	fs := certsFlags("issue", stderr)
	dir := fs.String("dir", "", "PKI directory holding ca.crt and ca.key (required)")
	outDir := fs.String("out-dir", "", "where to write the certificate and key (default --dir)")
	dataplane := fs.String("dataplane", "", "issue a worker's certificate for this worker id")
	admin := fs.String("admin", "", "issue an operator's certificate with role admin, for this name")
	reader := fs.String("reader", "", "issue an operator's certificate with role reader, for this name")
	validity := fs.Duration("validity", pki.LeafValidity, "how long the certificate is valid")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var role, name string
	n := 0
	for _, c := range []struct{ role, name string }{{pki.RoleDataPlane, *dataplane}, {pki.RoleAdmin, *admin}, {pki.RoleReader, *reader}} {
		if c.name != "" {
			role, name = c.role, c.name
			n++
		}
	}
	if *dir == "" || n != 1 || fs.NArg() > 0 || *validity <= 0 {
		fmt.Fprintln(stderr, "controlplane certs issue: --dir and exactly one of --dataplane, --admin, --reader are required (and a positive --validity)")
		return exitUsage
	}
	if *outDir == "" {
		*outDir = *dir
	}
	base := role + "-" + name
	is, err := pki.Issue(*dir, *outDir, base, pki.Request{CommonName: name, Roles: []string{role}, Validity: *validity})
	if err != nil {
		fmt.Fprintln(stderr, "controlplane certs issue:", err)
		return exitError
	}
	caFile := filepath.Join(*dir, pki.CACertFile)
	certFile, keyFile := filepath.Join(*outDir, base+".crt"), filepath.Join(*outDir, base+".key")
	fmt.Fprintf(stdout, "issued %s and %s: CN=%s, role %s, valid until %s\n", certFile, keyFile, name, role, is.Cert.NotAfter.UTC().Format(time.RFC3339))
	switch role {
	case pki.RoleDataPlane:
		fmt.Fprintf(stdout, "worker %s: dataplane --id %s --ca-file %s --cert-file %s --key-file %s ...\n", name, name, caFile, certFile, keyFile)
	default:
		fmt.Fprintf(stdout, "gatewayctl --ca-file %s --cert-file %s --key-file %s ...\n", caFile, certFile, keyFile)
	}
	return exitOK
}
