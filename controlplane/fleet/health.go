package fleet

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

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

// Health returns the fresh health views of a gateway's workers, by worker id.
func (r *Registry) Health(ctx context.Context, gateway string) (map[string]*fgv1.HealthReport, error) {
	prefix := HealthPrefix + gateway + "/"
	resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read health of gateway %q: %w", gateway, err)
	}
	out := make(map[string]*fgv1.HealthReport, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		rep := &fgv1.HealthReport{}
		if err := proto.Unmarshal(kv.Value, rep); err != nil {
			return nil, fmt.Errorf("read health %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), prefix)] = rep
	}
	return out, nil
}
