package worker

import (
	"context"
	"time"

	"github.com/fleetgate/fleetgate/agent"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

var _ agent.HealthSource = (*Worker)(nil)

// Report is the worker's view for the control plane: its probes' results and its drains.
func (w *Worker) Report() *fgv1.HealthReport {
	rep := w.health.Report()
	rep.Drains = append(w.proxy.DrainReports(), w.l4.DrainReports()...)
	return rep
}

// Changed receives a value when a probe result or a drain changes.
func (w *Worker) Changed() <-chan struct{} { return w.changed }

// MinInterval is the shortest probe interval.
func (w *Worker) MinInterval() time.Duration { return w.health.MinInterval() }

// ProbeNow runs an on-demand probe.
func (w *Worker) ProbeNow(ctx context.Context, settings, address string) (*fgv1.ProbeResult, error) {
	return w.health.ProbeNow(ctx, settings, address)
}

// forwardChanges merges the health and drain change signals into w.changed until stop closes.
func (w *Worker) forwardChanges(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-w.health.Changed():
		case <-w.proxy.DrainChanged():
		case <-w.l4.DrainChanged():
		}
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}
