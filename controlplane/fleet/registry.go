// Package fleet records which data-plane workers are connected, and with which configuration version,
// in etcd under this control-plane replica's lease. Every replica can then list the whole fleet, and
// the entries of a replica that dies vanish with its lease.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Key is the etcd key of a worker's entry.
func Key(gateway, id string) string { return store.DataPlanePrefix + gateway + "/" + id }

// Registry writes this replica's workers to etcd and reads everyone's.
type Registry struct {
	cli *clientv3.Client
	ttl int
	log *slog.Logger

	mu      sync.Mutex
	session *concurrency.Session
	own     map[string][]byte // by key: what this replica wrote, to write again under a new lease
	wg      sync.WaitGroup
}

// NewRegistry opens a lease of ttl seconds, kept alive until ctx ends; entries are written under it.
// Opening the lease may take up to openTimeout. If the lease is later lost (etcd unreachable for longer
// than ttl), a new one is opened and this replica's entries are written again.
func NewRegistry(ctx context.Context, cli *clientv3.Client, ttl int, openTimeout time.Duration, log *slog.Logger) (*Registry, error) {
	r := &Registry{cli: cli, ttl: ttl, log: log, own: map[string][]byte{}}
	s, err := r.openSession(ctx, openTimeout)
	if err != nil {
		return nil, fmt.Errorf("open fleet lease: %w", err)
	}
	r.session = s
	r.wg.Add(1)
	go r.renew(ctx)
	return r, nil
}

// openSession grants a lease within timeout and keeps it alive until ctx ends.
func (r *Registry) openSession(ctx context.Context, timeout time.Duration) (*concurrency.Session, error) {
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lease, err := r.cli.Grant(gctx, int64(r.ttl))
	if err != nil {
		return nil, err
	}
	return concurrency.NewSession(r.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(r.ttl), concurrency.WithContext(ctx))
}

// Wait waits for the lease keeper to stop after ctx ended.
func (r *Registry) Wait() { r.wg.Wait() }

func (r *Registry) renew(ctx context.Context) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		done := r.session.Done()
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			// Revoke so the entries vanish now rather than after the TTL.
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r.mu.Lock()
			_, _ = r.cli.Revoke(rctx, r.session.Lease())
			r.mu.Unlock()
			cancel()
			return
		case <-done:
		}
		r.log.Warn("fleet lease lost; opening a new one")
		for ctx.Err() == nil {
			s, err := r.openSession(ctx, 5*time.Second)
			if err == nil {
				r.mu.Lock()
				r.session = s
				own := make(map[string][]byte, len(r.own))
				for k, v := range r.own {
					own[k] = v
				}
				r.mu.Unlock()
				for k, v := range own {
					if _, err := r.cli.Put(ctx, k, string(v), clientv3.WithLease(s.Lease())); err != nil {
						r.log.Warn("re-register under new lease", "key", k, "err", err)
					}
				}
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// Put writes a worker's entry.
func (r *Registry) Put(ctx context.Context, dp *fgv1.DataPlane) error {
	if err := r.put(ctx, Key(dp.GetGateway(), dp.GetId()), dp); err != nil {
		return fmt.Errorf("register dataplane %q: %w", dp.GetId(), err)
	}
	return nil
}

// Remove deletes a worker's entries (registration and health view) if they are still this
// replica's: the worker may have reconnected to another replica meanwhile.
func (r *Registry) Remove(ctx context.Context, gateway, id string) error {
	if err := r.remove(ctx, Key(gateway, id)); err != nil {
		return fmt.Errorf("unregister dataplane %q: %w", id, err)
	}
	if err := r.remove(ctx, HealthKey(gateway, id)); err != nil {
		return fmt.Errorf("remove health of dataplane %q: %w", id, err)
	}
	return nil
}

// put writes a value under this replica's lease and remembers it.
func (r *Registry) put(ctx context.Context, key string, m proto.Message) error {
	val, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return r.putEncoded(ctx, key, val)
}

// PutHealthEncoded stores a worker's health view, already encoded (a HealthReport), under this
// replica's lease. The registry keeps val itself, not a copy (to write it again under a new lease):
// the caller must not modify it afterwards.
func (r *Registry) PutHealthEncoded(ctx context.Context, gateway, id string, val []byte) error {
	if err := r.putEncoded(ctx, HealthKey(gateway, id), val); err != nil {
		return fmt.Errorf("store health of dataplane %q: %w", id, err)
	}
	return nil
}

// putEncoded writes an encoded value under this replica's lease and remembers it (not a copy).
func (r *Registry) putEncoded(ctx context.Context, key string, val []byte) error {
	r.mu.Lock()
	r.own[key] = val
	lease := r.session.Lease()
	r.mu.Unlock()
	_, err := r.cli.Put(ctx, key, string(val), clientv3.WithLease(lease))
	return err
}

// remove deletes a key if it is under this replica's lease.
func (r *Registry) remove(ctx context.Context, key string) error {
	r.mu.Lock()
	delete(r.own, key)
	lease := r.session.Lease()
	r.mu.Unlock()
	_, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
	return err
}

// List returns the workers of a gateway (all gateways when empty), sorted by gateway and id.
func (r *Registry) List(ctx context.Context, gateway string) ([]*fgv1.DataPlane, error) {
	prefix := store.DataPlanePrefix
	if gateway != "" {
		prefix += gateway + "/"
	}
	resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list dataplanes: %w", err)
	}
	out := make([]*fgv1.DataPlane, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		dp := &fgv1.DataPlane{}
		if err := proto.Unmarshal(kv.Value, dp); err != nil {
			return nil, fmt.Errorf("list dataplanes: %s: %w", kv.Key, err)
		}
		out = append(out, dp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetGateway() != out[j].GetGateway() {
			return out[i].GetGateway() < out[j].GetGateway()
		}
		return out[i].GetId() < out[j].GetId()
	})
	return out, nil
}
