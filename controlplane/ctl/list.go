package ctl

import (
	"context"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newListCommand(a *app) *cobra.Command {
	output := outputTable
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the stored gateways",
		Long: `List shows every stored gateway with its revision, the number of its listeners, rules and
backend pools, and the number of data-plane workers connected for it.`,
		Example: `  gatewayctl list
  gatewayctl list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			var resp *fgv1.ListGatewaysResponse
			err := a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.ListGateways(ctx, &fgv1.ListGatewaysRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeProtoJSON(a.stdout, resp)
			}
			return writeGateways(a.stdout, resp.GetGateways())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	return cmd
}

// writeGateways writes the list table.
func writeGateways(w0 io.Writer, gws []*fgv1.GatewaySummary) error {
	w := newTable(w0)
	row(w, "NAME", "REVISION", "LISTENERS", "RULES", "POOLS", "DATAPLANES")
	for _, g := range gws {
		row(w, g.GetName(),
			strconv.FormatInt(g.GetRevision(), 10),
			strconv.Itoa(int(g.GetListeners())),
			strconv.Itoa(int(g.GetRules())),
			strconv.Itoa(int(g.GetPools())),
			strconv.Itoa(int(g.GetDataplanes())))
	}
	return w.Flush()
}
