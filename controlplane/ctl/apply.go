package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newApplyCommand(a *app) *cobra.Command {
	var opts struct {
		file             string
		dryRun           bool
		expectedRevision int64
	}
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Validate a gateway configuration and store it",
		Long: `Apply reads a gateway configuration (YAML or JSON; FILE "-" reads stdin), has the control
plane validate it and stores it, replacing the gateway's configuration as a whole. The data-plane
workers of the gateway then receive it.

The gateway is named by the document's "name"; --gateway fills in a missing name and must agree
with a present one. An invalid configuration is reported field by field and nothing is stored.`,
		Example: `  gatewayctl apply -f appgw1.yaml
  gatewayctl apply -f appgw1.yaml --dry-run
  gatewayctl apply -f appgw1.yaml --expected-revision 42
  cat appgw1.json | gatewayctl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &fgv1.ApplyGatewayRequest{DryRun: opts.dryRun}
			if cmd.Flags().Changed("expected-revision") {
				if opts.expectedRevision < 0 {
					return fmt.Errorf("--expected-revision must not be negative")
				}
				req.ExpectedRevision = &opts.expectedRevision
			}
			gw, err := a.readGateway(opts.file)
			if err != nil {
				return err
			}
			switch {
			case a.flags.gateway == "":
			case gw.GetName() == "":
				gw.Name = a.flags.gateway
			case gw.GetName() != a.flags.gateway:
				return failf("%s names gateway %q, not --gateway %q", opts.file, gw.GetName(), a.flags.gateway)
			}
			req.Gateway = gw
			var resp *fgv1.ApplyGatewayResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.ApplyGateway(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			name := resp.GetGateway().GetName()
			if name == "" {
				name = gw.GetName()
			}
			switch {
			case opts.dryRun && req.ExpectedRevision != nil && resp.GetRevision() != *req.ExpectedRevision:
				// The server validates only; tell now that the real apply would meet a conflict.
				return failf("gateway/%s is valid, but its stored revision is %d, not %d (dry run)",
					name, resp.GetRevision(), *req.ExpectedRevision)
			case opts.dryRun:
				fmt.Fprintf(a.stdout, "gateway/%s valid (dry run)\n", name)
			case resp.GetChanged():
				fmt.Fprintf(a.stdout, "gateway/%s applied (revision %d)\n", name, resp.GetRevision())
			default:
				fmt.Fprintf(a.stdout, "gateway/%s unchanged (revision %d)\n", name, resp.GetRevision())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.file, "filename", "f", "", `gateway configuration file, YAML or JSON ("-": stdin)`)
	f.BoolVar(&opts.dryRun, "dry-run", false, "validate only; store nothing")
	f.Int64Var(&opts.expectedRevision, "expected-revision", 0, "apply only if the stored revision is still N (0: the gateway must not exist yet)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// readGateway reads and decodes a gateway document from a file or, for "-", stdin.
func (a *app) readGateway(file string) (*fgv1.Gateway, error) {
	var (
		data []byte
		err  error
		dir  = "."
	)
	if file == "-" {
		data, err = io.ReadAll(a.stdin)
		file = "<stdin>"
	} else {
		data, err = os.ReadFile(file)
		dir = filepath.Dir(file)
	}
	if err != nil {
		return nil, failf("read %s: %v", file, err)
	}
	gw, err := config.Decode(data)
	if err != nil {
		return nil, failf("%s: %v", file, err)
	}
	if err := readCertificateFiles(gw, dir); err != nil {
		return nil, failf("%s: %v", file, err)
	}
	return gw, nil
}

// readCertificateFiles replaces the certFile/keyFile of SSL certificates by their contents, read
// here, on the operator's machine; relative paths are relative to the document's directory.
func readCertificateFiles(gw *fgv1.Gateway, dir string) error {
	for i, c := range gw.GetSslCertificates() {
		if c.GetCertFile() == "" && c.GetKeyFile() == "" {
			continue
		}
		if c.GetCertFile() == "" || c.GetKeyFile() == "" || c.GetData() != "" {
			return fmt.Errorf("sslCertificates[%d]: give data, or certFile with keyFile", i)
		}
		var pem []byte
		for _, f := range []string{c.GetCertFile(), c.GetKeyFile()} {
			if !filepath.IsAbs(f) {
				f = filepath.Join(dir, f)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("sslCertificates[%d]: %v", i, err)
			}
			pem = append(append(pem, b...), '\n')
		}
		c.Data, c.CertFile, c.KeyFile = string(pem), "", ""
	}
	return nil
}
