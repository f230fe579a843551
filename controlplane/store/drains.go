package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// keptDrains are the operator's drains that still name a server of a pool in gw.
func keptDrains(gw *fgv1.Gateway, drains []*fgv1.AdminDrain) []*fgv1.AdminDrain {
	var out []*fgv1.AdminDrain
	for _, d := range drains {
		if PoolHasServer(gw, d.GetPool(), d.GetAddress()) {
			out = append(out, d)
		}
	}
	return out
}

// PoolHasServer reports whether pool holds a server with this IP or FQDN.
func PoolHasServer(gw *fgv1.Gateway, pool, host string) bool {
	for _, p := range gw.GetBackendAddressPools() {
		if p.GetName() != pool {
			continue
		}
		for _, a := range p.GetBackendAddresses() {
			if a.GetIpAddress() == host || a.GetFqdn() == host {
				return true
			}
		}
	}
	return false
}

// SetDrain adds (or replaces) an operator's drain, or with d.StartedAt nil removes the one of that
// pool and host, in one transaction on the gateway's key. It returns the new revision.
func (s *Store) SetDrain(ctx context.Context, gateway string, d *fgv1.AdminDrain, remove bool) (int64, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	key := GatewayKey(gateway)
	for attempt := 0; attempt < 10; attempt++ {
		cur, err := s.kv.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("drain in gateway %q: %w", gateway, wrapEtcd(err))
		}
		if len(cur.Kvs) == 0 {
			return 0, fmt.Errorf("drain in gateway %q: %w", gateway, ErrNotFound)
		}
		st, err := s.decodeStored(cur.Kvs[0].Value)
		if err != nil {
			return 0, err
		}
		if !PoolHasServer(st.GetGateway(), d.GetPool(), d.GetAddress()) {
			return 0, fmt.Errorf("drain in gateway %q: pool %q has no server %q: %w", gateway, d.GetPool(), d.GetAddress(), ErrNotFound)
		}
		var drains []*fgv1.AdminDrain
		found := false
		for _, old := range st.GetDrains() {
			if old.GetPool() == d.GetPool() && old.GetAddress() == d.GetAddress() {
				found = true
				continue
			}
			drains = append(drains, old)
		}
		if remove && !found {
			return 0, fmt.Errorf("undrain in gateway %q: server %q of pool %q is not being drained: %w", gateway, d.GetAddress(), d.GetPool(), ErrNotFound)
		}
		if !remove {
			drains = append(drains, d)
		}
		st.Drains = drains
		val, err := s.encodeStored(st)
		if err != nil {
			return 0, err
		}
		resp, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(val))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("drain in gateway %q: %w", gateway, wrapEtcd(err))
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
	}
	return 0, fmt.Errorf("drain in gateway %q: too many concurrent changes: %w", gateway, ErrConflict)
}
