package ctl

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Values of the dataplanes STATUS column.
const (
	statusInSync   = "InSync"
	statusPending  = "Pending"
	statusRejected = "Rejected"
)

// Values of the dataplanes STATE column.
const (
	stateConnected = "Connected"
	stateLeaving   = "Leaving"
)

func newDataPlanesCommand(a *app) *cobra.Command {
	var (
		output = outputTable
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "dataplanes [GATEWAY]",
		Short: "List a gateway's connected data-plane workers",
		Long: `Dataplanes lists the data-plane workers connected for a gateway (every gateway with
--all-gateways): the configuration version each applied and the one it should serve.

STATUS is InSync when the worker serves the stored revision, "Rejected: <error>" when it refused
the last version it was sent (it keeps serving the one before), Pending otherwise. STATE is
Leaving for a worker shutting down (finishing its requests in flight; it gets no new configuration
and its health view no longer counts), Connected otherwise.`,
		Example: `  gatewayctl dataplanes appgw1
  gatewayctl dataplanes --all-gateways
  gatewayctl --gateway appgw1 dataplanes -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			var gateway string
			if all {
				if len(args) > 0 || a.flags.gateway != "" {
					return errors.New("--all-gateways takes no gateway name")
				}
			} else {
				name, err := a.gatewayName(args)
				if err != nil {
					return err
				}
				gateway = name
			}
			var resp *fgv1.ListDataPlanesResponse
			err := a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.ListDataPlanes(ctx, &fgv1.ListDataPlanesRequest{Gateway: gateway})
				return err
			})
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeProtoJSON(a.stdout, resp)
			}
			return writeDataPlanes(a.stdout, resp.GetDataplanes(), a.now())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	cmd.Flags().BoolVarP(&all, "all-gateways", "A", false, "list the workers of every gateway")
	return cmd
}

// writeDataPlanes writes the dataplanes table; ages are relative to now.
func writeDataPlanes(out io.Writer, dps []*fgv1.DataPlane, now time.Time) error {
	w := newTable(out)
	row(w, "ID", "GATEWAY", "ADDRESS", "APPLIED", "DESIRED", "STATUS", "CONTROLPLANE", "AGE", "STATE")
	for _, dp := range dps {
		connected := "-"
		if dp.GetConnectedAt() != nil {
			connected = age(now.Sub(dp.GetConnectedAt().AsTime()))
		}
		row(w, dp.GetId(), dp.GetGateway(), dp.GetAddress(),
			strconv.FormatInt(dp.GetAppliedVersion(), 10),
			strconv.FormatInt(dp.GetDesiredVersion(), 10),
			dataPlaneStatus(dp), dp.GetControlplane(), connected, dataPlaneState(dp))
	}
	return w.Flush()
}

// dataPlaneState is a worker's STATE: whether it is leaving.
func dataPlaneState(dp *fgv1.DataPlane) string {
	if dp.GetLeaving() {
		return stateLeaving
	}
	return stateConnected
}

// dataPlaneStatus is a worker's STATUS: whether it serves the stored revision.
func dataPlaneStatus(dp *fgv1.DataPlane) string {
	switch {
	case dp.GetAppliedVersion() == dp.GetDesiredVersion():
		return statusInSync
	case dp.GetLastError() != "":
		return statusRejected + ": " + dp.GetLastError()
	}
	return statusPending
}
