package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newGetCommand(a *app) *cobra.Command {
	output := outputYAML
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "Print a gateway's stored configuration",
		Long: `Get prints a gateway's configuration as stored, defaults filled in, in the form apply takes.
YAML output starts with a "# revision: N" comment; JSON output is the configuration alone.`,
		Example: `  gatewayctl get appgw1
  gatewayctl get appgw1 -o json
  gatewayctl --gateway appgw1 get > appgw1.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputYAML, outputJSON); err != nil {
				return err
			}
			name, err := a.gatewayName(args)
			if err != nil {
				return err
			}
			var resp *fgv1.GetGatewayResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.GetGateway(ctx, &fgv1.GetGatewayRequest{Name: name})
				return err
			})
			if err != nil {
				return err
			}
			if output == outputJSON {
				b, err := config.EncodeJSON(resp.GetGateway())
				if err != nil {
					return failf("encode json: %v", err)
				}
				fmt.Fprintf(a.stdout, "%s\n", b)
				return nil
			}
			b, err := config.EncodeYAML(resp.GetGateway())
			if err != nil {
				return failf("encode yaml: %v", err)
			}
			fmt.Fprintf(a.stdout, "# revision: %d\n%s", resp.GetRevision(), b)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: yaml or json")
	return cmd
}
