package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newProbeCommand(a *app) *cobra.Command {
	var (
		output                             = outputTable
		pool, settings, address, dataplane string
	)
	cmd := &cobra.Command{
		Use:   "probe --settings S --address A [--pool P] [--dataplane dp-1]",
		Short: "Have a data-plane worker probe one backend server now and show each stage",
		Long: `Probe asks a data-plane worker to probe one backend server right now, with the probe the backend
settings use, and prints each stage with its time: DNS, TCP connect, TLS handshake (chain, subject
names, validity), HTTP status, body match, then the verdict with its reason code and a hint.
The worker must be connected to the control plane gatewayctl talks to; without --dataplane, any
such worker of the gateway runs it. The probe does not count toward the server's health.

Exit code 0 when the probe passed, 3 when it failed, 1 when it could not run.`,
		Example: `  gatewayctl probe --gateway appgw1 --settings settings1 --address 127.0.0.10
  gatewayctl probe --gateway appgw1 --pool pool1 --settings settings1 --address 127.0.0.10:9001 --dataplane dp-2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			name, err := a.gatewayName(nil)
			if err != nil {
				return err
			}
			var resp *fgv1.ProbeBackendResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.ProbeBackend(ctx, &fgv1.ProbeBackendRequest{
					Gateway: name, Pool: pool, Settings: settings, Address: address, Dataplane: dataplane,
				})
				return err
			})
			if err != nil {
				return err
			}
			if output == outputJSON {
				err = writeProtoJSON(a.stdout, resp)
			} else {
				err = writeProbe(a.stdout, resp, a.color)
			}
			if err != nil {
				return err
			}
			if !resp.GetResult().GetHealthy() {
				return &exitError{code: ExitNotHealthy}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	cmd.Flags().StringVar(&pool, "pool", "", "backend pool holding the server (optional)")
	cmd.Flags().StringVar(&settings, "settings", "", "backend settings whose probe to run (required)")
	cmd.Flags().StringVar(&address, "address", "", "server: host or host:port (required)")
	cmd.Flags().StringVar(&dataplane, "dataplane", "", "worker to run the probe (default: any connected to this control plane)")
	_ = cmd.MarkFlagRequired("settings")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

// writeProbe prints a probe's stages and verdict.
func writeProbe(out io.Writer, resp *fgv1.ProbeBackendResponse, color bool) error {
	r := resp.GetResult()
	fmt.Fprintf(out, "probe of %s by %s at %s\n", r.GetAddress(), resp.GetDataplane(), r.GetAt().AsTime().Local().Format(time.DateTime))
	w := newTable(out)
	rawRow(w, "STAGE", "TIME", "RESULT", "DETAIL")
	for _, st := range r.GetStages() {
		result, detail := "ok", st.GetDetail()
		if st.GetError() != "" {
			result = "FAILED"
			if detail != "" {
				detail += "; "
			}
			detail += st.GetError()
		}
		rawRow(w, cell(st.GetName()), cell(st.GetDuration().AsDuration().Round(time.Microsecond).String()), cell(result), cell(detail))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if r.GetHealthy() {
		fmt.Fprintf(out, "verdict: %s in %s\n", paint(color, ansiGreen, healthHealthy), r.GetDuration().AsDuration().Round(time.Microsecond))
		return nil
	}
	fmt.Fprintf(out, "verdict: %s (%s) in %s\n  %s\n", paint(color, ansiRed, healthUnhealthy), r.GetReason(),
		r.GetDuration().AsDuration().Round(time.Microsecond), r.GetMessage())
	if r.GetHint() != "" {
		fmt.Fprintf(out, "  hint: %s\n", r.GetHint())
	}
	return nil
}
