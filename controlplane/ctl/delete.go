package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newDeleteCommand(a *app) *cobra.Command {
	var expectedRevision int64
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a gateway",
		Long: `Delete removes a gateway's configuration; its data-plane workers stop serving it.
With --expected-revision, only if the stored revision is still N.`,
		Example: `  gatewayctl delete appgw1
  gatewayctl delete appgw1 --expected-revision 42`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := a.gatewayName(args)
			if err != nil {
				return err
			}
			req := &fgv1.DeleteGatewayRequest{Name: name}
			if cmd.Flags().Changed("expected-revision") {
				if expectedRevision <= 0 {
					return fmt.Errorf("--expected-revision must be positive")
				}
				req.ExpectedRevision = &expectedRevision
			}
			var resp *fgv1.DeleteGatewayResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.DeleteGateway(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "gateway/%s deleted (revision %d)\n", name, resp.GetRevision())
			return nil
		},
	}
	cmd.Flags().Int64Var(&expectedRevision, "expected-revision", 0, "delete only if the stored revision is still N")
	return cmd
}
