package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Health values of backend servers, as Azure spells them.
const (
	healthHealthy   = "Healthy"
	healthUnhealthy = "Unhealthy"
)

func newBackendHealthCommand(a *app) *cobra.Command {
	var (
		output     = outputTable
		pool       string
		watch      time.Duration
		dataplanes bool
	)
	cmd := &cobra.Command{
		Use:   "backend-health [GATEWAY]",
		Short: "Show the health of a gateway's backend servers",
		Long: `Backend-health shows the fleet-wide health of a gateway's backend servers, by pool and by the
backend settings rules use the pool with. WORKERS counts the data-plane workers that see the server
healthy, out of those reporting it; LAST-PROBE is the newest probe among them. Both come from the
control plane's summary of each server.

-o json prints the answer as is: each server's summary (healthyDataplanes, unhealthyDataplanes,
reportingDataplanes, lastProbe). --dataplanes adds every worker's own view of each server: in the
table a row per worker beneath the server (its id, health, reason and last probe), with -o json the
dataplanes list of each server. That is one entry per server and worker: tens of MiB for 1,000
workers x 1,000 servers.

Exit code 0 when every server is Healthy, 3 when any is not (Unhealthy, Partial, Draining or
Unknown), 1 when the health could not be read.`,
		Example: `  gatewayctl backend-health appgw1
  gatewayctl backend-health appgw1 --pool pool1
  gatewayctl backend-health appgw1 -o json
  gatewayctl backend-health appgw1 --dataplanes
  gatewayctl backend-health appgw1 --watch
  gatewayctl backend-health history 127.0.0.10:9001 --gateway appgw1`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			name, err := a.gatewayName(args)
			if err != nil {
				return err
			}
			fetch := func() (resp *fgv1.BackendHealthResponse, err error) {
				err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
					// The summary holds the counts and the newest probe; the workers' views only
					// when they are printed.
					resp, err = c.BackendHealth(ctx, &fgv1.BackendHealthRequest{Gateway: name, Pool: pool, Dataplanes: dataplanes})
					return err
				})
				return resp, err
			}
			write := func(resp *fgv1.BackendHealthResponse) error {
				if output == outputJSON {
					return writeProtoJSON(a.stdout, resp)
				}
				return writeBackendHealth(a.stdout, resp, a.now(), a.color)
			}
			resp, err := fetch()
			if err != nil {
				return err
			}
			if err := write(resp); err != nil {
				return err
			}
			if watch > 0 {
				return watchHealth(cmd.Context(), a, resp, fetch, write, watch)
			}
			if !allHealthy(resp) {
				return &exitError{code: ExitNotHealthy}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	cmd.Flags().StringVar(&pool, "pool", "", "show only this backend pool")
	cmd.Flags().BoolVar(&dataplanes, "dataplanes", false, "also list every worker's view of each server (table: a row per worker; json: dataplanes)")
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "after the first answer, print it again whenever a server's health changes, checking this often (e.g. 2s); until interrupted")
	cmd.Flags().Lookup("watch").NoOptDefVal = "2s"
	cmd.AddCommand(newHistoryCommand(a))
	return cmd
}

// watchHealth prints the health again, with a time stamp, each time a server's health, reason or
// worker counts (or, with --dataplanes, a worker's health) change, until ctx ends. Transient errors are reported and retried.
func watchHealth(ctx context.Context, a *app, last *fgv1.BackendHealthResponse,
	fetch func() (*fgv1.BackendHealthResponse, error), write func(*fgv1.BackendHealthResponse) error, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		resp, err := fetch()
		if err != nil {
			fmt.Fprintf(a.stderr, "%s error: %v\n", a.now().Format(time.TimeOnly), err)
			continue
		}
		if healthSignature(resp) == healthSignature(last) {
			continue
		}
		last = resp
		fmt.Fprintf(a.stdout, "\n--- %s\n", a.now().Format(time.TimeOnly))
		if err := write(resp); err != nil {
			return err
		}
	}
}

// healthSignature is what --watch compares: each server's health, reason and worker counts, and
// each listed worker's health.
func healthSignature(resp *fgv1.BackendHealthResponse) string {
	var b strings.Builder
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				fmt.Fprintf(&b, "%s/%s/%s=%s,%s,%d/%d/%d", p.GetName(), s.GetName(), srv.GetAddress(),
					srv.GetHealth(), srv.GetReason(), srv.GetHealthyDataplanes(), srv.GetUnhealthyDataplanes(), srv.GetReportingDataplanes())
				for _, dp := range srv.GetDataplanes() {
					fmt.Fprintf(&b, ",%s=%s", dp.GetDataplane(), dp.GetHealth())
				}
				b.WriteByte(';')
			}
		}
	}
	return b.String()
}

func newHistoryCommand(a *app) *cobra.Command {
	var output = outputTable
	cmd := &cobra.Command{
		Use:   "history ADDRESS",
		Short: "Show a backend server's latest health transitions, as every worker saw them",
		Long: `History lists the latest 50 health transitions of a backend server (host:port, or a host for
every port), oldest first, merged from every data-plane worker's record: when, which worker, from
which health to which, and why.`,
		Example: `  gatewayctl backend-health history 127.0.0.10:9001 --gateway appgw1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outputTable, outputJSON); err != nil {
				return err
			}
			name, err := a.gatewayName(nil)
			if err != nil {
				return err
			}
			var resp *fgv1.BackendHealthHistoryResponse
			err = a.call(cmd.Context(), func(ctx context.Context, c fgv1.ConfigServiceClient) (err error) {
				resp, err = c.BackendHealthHistory(ctx, &fgv1.BackendHealthHistoryRequest{Gateway: name, Address: args[0]})
				return err
			})
			if err != nil {
				return err
			}
			if output == outputJSON {
				return writeProtoJSON(a.stdout, resp)
			}
			w := newTable(a.stdout)
			rawRow(w, "TIME", "DATAPLANE", "FROM", "TO", "REASON", "MESSAGE")
			for _, t := range resp.GetTransitions() {
				rawRow(w, cell(t.GetAt().AsTime().Local().Format(time.DateTime)), cell(t.GetDataplane()), cell(t.GetFrom()),
					cell(t.GetTo()), cell(t.GetReason()), cell(t.GetMessage()))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: table or json")
	return cmd
}

// allHealthy reports whether every server in resp is Healthy.
func allHealthy(resp *fgv1.BackendHealthResponse) bool {
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				if srv.GetHealth() != healthHealthy {
					return false
				}
			}
		}
	}
	return true
}

// writeBackendHealth writes the backend-health table, one row per server, grouped by pool and
// settings in the answer's order, from each server's summary; a server's workers' views, when the
// answer lists them, follow it a row each (the worker id indented under ADDRESS). A pool without
// settings or servers still gets a row. HEALTH is painted when color is on.
func writeBackendHealth(out io.Writer, resp *fgv1.BackendHealthResponse, now time.Time, color bool) error {
	w := newTable(out)
	rawRow(w, "POOL", "SETTINGS", "ADDRESS", paint(color, ansiDefault, "HEALTH"), "REASON", "WORKERS", "LAST-PROBE")
	line := func(pool, settings, address, health, reason, workers, lastProbe string) {
		rawRow(w, cell(pool), cell(settings), cell(address), paint(color, healthColor(health), cell(health)),
			cell(reason), cell(workers), cell(lastProbe))
	}
	for _, p := range resp.GetPools() {
		if len(p.GetSettings()) == 0 {
			line(p.GetName(), "", "", "", "", "", "")
		}
		for _, s := range p.GetSettings() {
			if len(s.GetServers()) == 0 {
				line(p.GetName(), s.GetName(), "", "", "", "", "")
			}
			for _, srv := range s.GetServers() {
				line(p.GetName(), s.GetName(), srv.GetAddress(), srv.GetHealth(), srv.GetReason(),
					fmt.Sprintf("%d/%d", srv.GetHealthyDataplanes(), srv.GetReportingDataplanes()), probeAge(srv.GetLastProbe(), now))
				for _, dp := range srv.GetDataplanes() {
					rawRow(w, "", "", "  "+cell(dp.GetDataplane()), paint(color, healthColor(dp.GetHealth()), cell(dp.GetHealth())),
						cell(dp.GetReason()), "", cell(probeAge(dp.GetLastProbe(), now)))
				}
			}
		}
	}
	return w.Flush()
}

// probeAge is how long ago a probe ran ("3s ago"); empty for none.
func probeAge(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return ""
	}
	return age(now.Sub(t.AsTime())) + " ago"
}

// healthColor is the color of a health value: green Healthy, red Unhealthy, yellow anything else.
func healthColor(h string) string {
	switch h {
	case healthHealthy:
		return ansiGreen
	case healthUnhealthy:
		return ansiRed
	case "-":
		return ansiDefault
	}
	return ansiYellow
}
