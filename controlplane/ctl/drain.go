package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func newDrainCommand(a *app) *cobra.Command {
	var (
		pool, address string
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "drain --pool P --address A [--timeout 60s]",
		Short: "Drain a backend server without editing its pool",
		Long: `Drain takes a server out of rotation on every worker: it gets no new requests or connections
(but for clients whose affinity cookie names it), and the ones it has continue until they finish or
the timeout passes, when they are closed. The drain is stored in etcd with the gateway and
survives restarts; undrain ends it. Without --timeout, the settings' connectionDraining timeout
applies (30 s without one).`,
		Example: `  gatewayctl drain --gateway appgw1 --pool pool1 --address 127.0.0.10 --timeout 60s
  gatewayctl drain status --gateway appgw1 --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := a.gatewayName(nil)
			if err != nil {
				return err
			}
			if timeout < 0 || timeout > time.Hour || timeout%time.Second != 0 {
				return fmt.Errorf("--timeout %s: want whole seconds, 1s-1h", timeout)
			}
			var resp *fgv1.DrainServerResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.DrainServer(ctx, &fgv1.DrainServerRequest{Gateway: name, Pool: pool, Address: address, TimeoutSeconds: int32(timeout / time.Second)})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "server %s of pool %s draining (revision %d)\n", address, pool, resp.GetRevision())
			return nil
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "backend pool holding the server (required)")
	cmd.Flags().StringVar(&address, "address", "", "server IP or FQDN, as in the pool (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long its connections may take (default: the settings' drain timeout)")
	_ = cmd.MarkFlagRequired("pool")
	_ = cmd.MarkFlagRequired("address")
	cmd.AddCommand(newDrainStatusCommand(a))
	return cmd
}

func newUndrainCommand(a *app) *cobra.Command {
	var pool, address string
	cmd := &cobra.Command{
		Use:   "undrain --pool P --address A",
		Short: "End an operator's drain of a backend server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := a.gatewayName(nil)
			if err != nil {
				return err
			}
			var resp *fgv1.UndrainServerResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.UndrainServer(ctx, &fgv1.UndrainServerRequest{Gateway: name, Pool: pool, Address: address})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "server %s of pool %s back in rotation (revision %d)\n", address, pool, resp.GetRevision())
			return nil
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "backend pool holding the server (required)")
	cmd.Flags().StringVar(&address, "address", "", "server IP or FQDN (required)")
	_ = cmd.MarkFlagRequired("pool")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

func newDrainStatusCommand(a *app) *cobra.Command {
	var (
		output = outputTable
		wait   bool
	)
	cmd := &cobra.Command{
		Use:   "status [--wait]",
		Short: "List draining servers with their fleet-wide remaining connections",
		Long: `Status lists the servers being drained, or drained in the last minutes, with the connections
still open to them summed over every worker, and the deadline. With --wait it blocks until every
drain has ended, then exits 0 when all connections finished by themselves, or 3 when some were
closed at the deadline: a deployment script can wait on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			name, err := a.gatewayName(nil)
			if err != nil {
				return err
			}
			fetch := func() (resp *fgv1.DrainStatusResponse, err error) {
				err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
					resp, err = c.DrainStatus(ctx, &fgv1.DrainStatusRequest{Gateway: name})
					return err
				})
				return resp, err
			}
			resp, err := fetch()
			for err == nil && wait && !drainsDone(resp) {
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(500 * time.Millisecond):
				}
				resp, err = fetch()
			}
			if err != nil {
				return err
			}
			if output == outputJSON {
				err = writeProtoJSON(a.stdout, resp)
			} else {
				err = writeDrains(a.stdout, resp, a.now())
			}
			if err != nil {
				return err
			}
			if wait && drainsCut(resp) {
				return &exitError{code: ExitNotHealthy}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	cmd.Flags().BoolVar(&wait, "wait", false, "block until every drain ended; exit 3 if connections were cut at the deadline")
	return cmd
}

func drainsDone(resp *fgv1.DrainStatusResponse) bool {
	for _, s := range resp.GetServers() {
		if !s.GetDone() {
			return false
		}
	}
	return true
}

func drainsCut(resp *fgv1.DrainStatusResponse) bool {
	for _, s := range resp.GetServers() {
		if s.GetCutConnections() > 0 {
			return true
		}
	}
	return false
}

func writeDrains(out io.Writer, resp *fgv1.DrainStatusResponse, now time.Time) error {
	if len(resp.GetServers()) == 0 {
		_, err := fmt.Fprintln(out, "no servers are draining")
		return err
	}
	w := newTable(out)
	rawRow(w, "POOL", "SETTINGS", "ADDRESS", "STATE", "CONNECTIONS", "WORKERS", "TIME-LEFT", "CUT")
	for _, s := range resp.GetServers() {
		state, left := "Draining", "-"
		if s.GetDone() {
			state = "Drained"
		} else if d := s.GetDeadline().AsTime().Sub(now); d > 0 {
			left = d.Round(time.Second).String()
		} else {
			left = "0s"
		}
		if s.GetAdmin() {
			state += " (operator)"
		}
		rawRow(w, cell(s.GetPool()), cell(s.GetSettings()), cell(s.GetAddress()), cell(state),
			fmt.Sprint(s.GetActiveConnections()), fmt.Sprint(s.GetDataplanes()), left, fmt.Sprint(s.GetCutConnections()))
	}
	return w.Flush()
}
