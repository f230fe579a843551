package fleet

import (
	"context"
	"fmt"

	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// HealthPrefix holds each worker's last health view: HealthPrefix + gateway + "/" + worker id.
const HealthPrefix = store.Prefix + "health/"

// HealthKey is the etcd key of a worker's health view.
func HealthKey(gateway, id string) string { return HealthPrefix + gateway + "/" + id }

// PutHealth stores a worker's health view under this replica's lease.
func (r *Registry) PutHealth(ctx context.Context, gateway, id string, rep *fgv1.HealthReport) error {
	if err := r.put(ctx, HealthKey(gateway, id), rep); err != nil {
		return fmt.Errorf("store health of dataplane %q: %w", id, err)
	}
	return nil
}

// RemoveHealth deletes a worker's health view (it went stale).
func (r *Registry) RemoveHealth(ctx context.Context, gateway, id string) error {
	if err := r.remove(ctx, HealthKey(gateway, id)); err != nil {
		return fmt.Errorf("remove health of dataplane %q: %w", id, err)
	}
	return nil
}
