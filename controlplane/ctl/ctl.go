// Package ctl is gatewayctl, the operator CLI of the Fleetgate control plane: it applies, shows and
// deletes gateway configurations and reports the data-plane fleet and backend health, through the
// control plane's ConfigService.
//
// The command tree is built anew for every Run and writes only to the streams it is given, so that
// it runs in-process in tests exactly as it does from main.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes of gatewayctl.
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitError: the command failed (invalid configuration, not found, conflict, control plane
	// unreachable, unreadable file, ...).
	ExitError = 1
	// ExitUsage: the command line is wrong (unknown command or flag, missing or extra arguments).
	ExitUsage = 2
	// ExitNotHealthy: backend-health answered, but not every backend server is Healthy.
	ExitNotHealthy = 3
)

const (
	// EnvServer names the environment variable that sets the default of --server.
	EnvServer = "GATEWAYCTL_SERVER"
	// DefaultServer is the control plane's address when neither --server nor GATEWAYCTL_SERVER is set.
	DefaultServer = "127.0.0.1:7070"
	// EnvToken names the environment variable that sets the default of --token.
	EnvToken = "GATEWAYCTL_TOKEN"
	// EnvPKIDir names the environment variable that sets the default of --pki-dir.
	EnvPKIDir = "GATEWAYCTL_PKI_DIR"
	// DefaultTimeout bounds each call to the control plane.
	DefaultTimeout = 10 * time.Second
)

// Env is what a gatewayctl run reads from and writes to.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads an environment variable; nil reads none.
	Getenv func(string) string
}

// globalFlags are the root command's persistent flags.
type globalFlags struct {
	server  string
	gateway string
	timeout time.Duration
	// Transport security and credentials (see dial).
	pkiDir, caFile, certFile, keyFile, serverName string
	token                                         string
	insecure                                      bool
}

// app is the state one run's commands share.
type app struct {
	flags  globalFlags
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// color: paint health values (stdout is a terminal and NO_COLOR is unset).
	color bool
	now   func() time.Time
}

// Run runs gatewayctl with args (without the program name) and returns its exit code.
func Run(ctx context.Context, args []string, env Env) int {
	getenv := env.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	a := &app{
		stdin:  env.Stdin,
		stdout: orDiscard(env.Stdout),
		stderr: orDiscard(env.Stderr),
		color:  isTerminal(env.Stdout) && getenv("NO_COLOR") == "",
		now:    time.Now,
	}
	if a.stdin == nil {
		a.stdin = strings.NewReader("")
	}
	root := newRootCommand(a, getenv)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(a.stderr, ee.msg)
		}
		return ee.code
	}
	// Every other error is about the command line: cobra's (unknown command or flag, wrong number
	// of arguments, missing required flag) or a flag value a command rejected.
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(a.stderr, "error: %v\n\n%s", err, cmd.UsageString())
	return ExitUsage
}

func newRootCommand(a *app, getenv func(string) string) *cobra.Command {
	root := &cobra.Command{
		Use:   "gatewayctl",
		Short: "gatewayctl operates Fleetgate application gateways",
		Long: `gatewayctl operates Fleetgate application gateways through the control plane's API:
it applies gateway configurations (YAML or JSON, shaped like Azure Application Gateway),
shows and deletes them, and reports the data-plane workers and the health of backend servers.

The control plane's address comes from --server, else $` + EnvServer + `, else ` + DefaultServer + `.

Connections are TLS. gatewayctl authenticates with a client certificate (--pki-dir DIR uses
DIR/ca.crt and DIR/admin.crt/.key, e.g. the control plane's DATA-DIR/pki; or --ca-file, --cert-file,
--key-file) or with a bearer token (--token, else $` + EnvToken + `). Role reader may read; admin may also
apply, delete, probe and drain.

Exit codes: 0 success, 1 error, 2 usage error, 3 not all backend servers healthy (backend-health), the probe failed (probe), or connections were cut at a drain deadline (drain status --wait).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		CompletionOptions: cobra.CompletionOptions{
			HiddenDefaultCmd: true,
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.flags.server == "" {
				return errors.New("--server must not be empty")
			}
			if a.flags.timeout <= 0 {
				return fmt.Errorf("--timeout must be positive, not %s", a.flags.timeout)
			}
			// The token's default is read here, not shown as a default in --help.
			if !cmd.Flags().Changed("token") {
				a.flags.token = getenv(EnvToken)
			}
			f := &a.flags
			if f.insecure && (f.pkiDir != "" && cmd.Flags().Changed("pki-dir") || f.caFile != "" || f.certFile != "" || f.keyFile != "" || f.serverName != "" || cmd.Flags().Changed("token")) {
				return errors.New("--insecure (plaintext) takes no TLS flag and no --token")
			}
			if (f.certFile == "") != (f.keyFile == "") {
				return errors.New("--cert-file and --key-file go together")
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			return errors.New("a command is required")
		},
	}
	root.InitDefaultHelpFlag() // so that usage printed for a bad command line lists --help too
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)

	server := getenv(EnvServer)
	if server == "" {
		server = DefaultServer
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.flags.server, "server", server, "control plane gRPC address, host:port ($"+EnvServer+")")
	pf.StringVarP(&a.flags.gateway, "gateway", "g", "", "gateway name (apply: default the document's name)")
	pf.DurationVar(&a.flags.timeout, "timeout", DefaultTimeout, "deadline of each call to the control plane")
	pf.StringVar(&a.flags.pkiDir, "pki-dir", getenv(EnvPKIDir), "PKI directory: uses its ca.crt and admin.crt/.key (the control plane's DATA-DIR/pki) ($"+EnvPKIDir+")")
	pf.StringVar(&a.flags.caFile, "ca-file", "", "CA certificates (PEM) the control plane's certificate must chain to (default: --pki-dir's ca.crt, else the system's)")
	pf.StringVar(&a.flags.certFile, "cert-file", "", "client certificate (PEM) (default: --pki-dir's admin.crt)")
	pf.StringVar(&a.flags.keyFile, "key-file", "", "private key (PEM) of --cert-file (default: --pki-dir's admin.key)")
	pf.StringVar(&a.flags.serverName, "tls-server-name", "", "name to verify in the control plane's certificate (default: the host of --server)")
	pf.StringVar(&a.flags.token, "token", "", "bearer token, instead of or besides a client certificate ($"+EnvToken+")")
	pf.BoolVar(&a.flags.insecure, "insecure", false, "plaintext, no credentials: only for a control plane run with --insecure (tests and development)")

	root.AddCommand(
		newApplyCommand(a),
		newGetCommand(a),
		newListCommand(a),
		newDeleteCommand(a),
		newDataPlanesCommand(a),
		newBackendHealthCommand(a),
		newProbeCommand(a),
		newDrainCommand(a),
		newUndrainCommand(a),
	)
	return root
}

// exitError ends a command with an exit code and a message for stderr (none when msg is empty).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// failf is a command failure (exit 1) reported as "error: ...".
func failf(format string, args ...any) error {
	return &exitError{code: ExitError, msg: "error: " + fmt.Sprintf(format, args...)}
}

// gatewayName is the gateway a command acts on: its positional argument or --gateway, one of them
// required and, when both are given, equal.
func (a *app) gatewayName(args []string) (string, error) {
	switch {
	case len(args) > 0 && a.flags.gateway != "" && args[0] != a.flags.gateway:
		return "", fmt.Errorf("gateway %q and --gateway %q disagree", args[0], a.flags.gateway)
	case len(args) > 0:
		return args[0], nil
	case a.flags.gateway != "":
		return a.flags.gateway, nil
	}
	return "", errors.New("a gateway name is required: give it as an argument or with --gateway")
}

// checkOutput rejects an -o value not among allowed (a usage error).
func checkOutput(o string, allowed ...string) error {
	for _, v := range allowed {
		if o == v {
			return nil
		}
	}
	return fmt.Errorf("--output %q: must be one of %s", o, strings.Join(allowed, ", "))
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
