// Package store keeps gateway configurations in etcd: one key per gateway holding the whole
// configuration, so that an apply replaces it atomically and its etcd modification revision is the
// configuration's version.
package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Key layout.
const (
	Prefix          = "/fleetgate/v1/"
	GatewayPrefix   = Prefix + "gateways/"
	DataPlanePrefix = Prefix + "dataplanes/"
)

// GatewayKey is the etcd key of a gateway.
func GatewayKey(name string) string { return GatewayPrefix + name }

// Store reads and writes gateways.
type Store struct {
	kv   clientv3.KV
	keys *Keyring // nil: certificates' private keys are stored in the clear
}

// Option configures a Store.
type Option func(*Store)

// WithKeyring seals the listeners' private keys at rest with keys.
func WithKeyring(keys *Keyring) Option { return func(s *Store) { s.keys = keys } }

// New returns a Store over an etcd client.
func New(kv clientv3.KV, opts ...Option) *Store {
	s := &Store{kv: kv}
	for _, o := range opts {
		o(s)
	}
	return s
}

var marshal = proto.MarshalOptions{Deterministic: true}

// Stored is a gateway with its revision.
type Stored struct {
	Gateway  *fgv1.Gateway
	Revision int64
	// AffinityKey keys the gateway's affinity cookies; made on the first apply, kept after.
	AffinityKey []byte
	// Drains are the operator's drains of servers.
	Drains []*fgv1.AdminDrain
}

// Apply stores gw, replacing what was there, in one transaction. With expected set, the write happens
// only if the stored revision equals *expected (0: the gateway must not exist). It returns the new
// revision and whether anything was written: an identical configuration is not written again.
func (s *Store) Apply(ctx context.Context, gw *fgv1.Gateway, expected *int64) (rev int64, changed bool, err error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	key := GatewayKey(gw.GetName())
	cur, err := s.kv.Get(ctx, key)
	if err != nil {
		return 0, false, fmt.Errorf("apply gateway %q: %w", gw.GetName(), wrapEtcd(err))
	}
	var curRev int64
	stored := &fgv1.StoredGateway{Gateway: gw}
	var old *fgv1.StoredGateway
	if len(cur.Kvs) == 1 {
		curRev = cur.Kvs[0].ModRevision
		if o, err := s.decodeStored(cur.Kvs[0].Value); err == nil {
			old = o
			stored.AffinityKey = old.GetAffinityKey()
			stored.Drains = keptDrains(gw, old.GetDrains())
		}
	}
	if expected != nil && *expected != curRev {
		return 0, false, fmt.Errorf("apply gateway %q: stored revision is %d, not %d: %w", gw.GetName(), curRev, *expected, ErrConflict)
	}
	if len(stored.AffinityKey) == 0 {
		stored.AffinityKey = make([]byte, 32)
		if _, err := rand.Read(stored.AffinityKey); err != nil {
			return 0, false, fmt.Errorf("apply gateway %q: affinity key: %w", gw.GetName(), err)
		}
	}
	if old != nil && proto.Equal(old, stored) {
		return curRev, false, nil // identical: nothing is written
	}
	val, err := s.encodeStored(stored)
	if err != nil {
		return 0, false, fmt.Errorf("apply gateway %q: encode: %w", gw.GetName(), err)
	}
	// Compare against what was read, so that a concurrent apply between the read and the write is
	// detected rather than overwritten when the caller asked for a revision.
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", curRev)).
		Then(clientv3.OpPut(key, string(val))).
		Commit()
	if err != nil {
		return 0, false, fmt.Errorf("apply gateway %q: %w", gw.GetName(), wrapEtcd(err))
	}
	if !resp.Succeeded {
		if expected != nil {
			return 0, false, fmt.Errorf("apply gateway %q: changed concurrently: %w", gw.GetName(), ErrConflict)
		}
		// An unconditional apply raced another one: try again on what is stored now, so the
		// affinity key of the winner is kept.
		return s.Apply(ctx, gw, nil)
	}
	return resp.Header.Revision, true, nil
}

// Get returns one gateway.
func (s *Store) Get(ctx context.Context, name string) (Stored, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	resp, err := s.kv.Get(ctx, GatewayKey(name))
	if err != nil {
		return Stored{}, fmt.Errorf("get gateway %q: %w", name, wrapEtcd(err))
	}
	if len(resp.Kvs) == 0 {
		return Stored{}, fmt.Errorf("get gateway %q: %w", name, ErrNotFound)
	}
	st, err := s.decodeStored(resp.Kvs[0].Value)
	if err != nil {
		return Stored{}, fmt.Errorf("get gateway %q: %w", name, err)
	}
	return Stored{Gateway: st.GetGateway(), Revision: resp.Kvs[0].ModRevision, AffinityKey: st.GetAffinityKey(), Drains: st.GetDrains()}, nil
}

// List returns every gateway, sorted by name, and the etcd revision the list was read at.
func (s *Store) List(ctx context.Context) ([]Stored, int64, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	resp, err := s.kv.Get(ctx, GatewayPrefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list gateways: %w", wrapEtcd(err))
	}
	out := make([]Stored, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		st, err := s.decodeStored(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("list gateways: %s: %w", kv.Key, err)
		}
		out = append(out, Stored{Gateway: st.GetGateway(), Revision: kv.ModRevision, AffinityKey: st.GetAffinityKey(), Drains: st.GetDrains()})
	}
	return out, resp.Header.Revision, nil
}

// Delete removes a gateway, if expected is set only at that revision. It returns the revision of the
// deletion.
func (s *Store) Delete(ctx context.Context, name string, expected *int64) (int64, error) {
	ctx, cancel := opContext(ctx)
	defer cancel()
	key := GatewayKey(name)
	cmp := clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	if expected != nil {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", *expected)
	}
	resp, err := s.kv.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, fmt.Errorf("delete gateway %q: %w", name, wrapEtcd(err))
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			return 0, fmt.Errorf("delete gateway %q: stored revision is %d, not %d: %w", name, kvs[0].ModRevision, *expected, ErrConflict)
		}
		return 0, fmt.Errorf("delete gateway %q: %w", name, ErrNotFound)
	}
	return resp.Header.Revision, nil
}

// NameFromKey returns the gateway name of a gateway key.
func NameFromKey(key []byte) string { return strings.TrimPrefix(string(key), GatewayPrefix) }

// Decode decodes a stored gateway value, opening its sealed secrets.
func (s *Store) Decode(val []byte) (Stored, error) {
	st, err := s.decodeStored(val)
	if err != nil {
		return Stored{}, err
	}
	return Stored{Gateway: st.GetGateway(), AffinityKey: st.GetAffinityKey(), Drains: st.GetDrains()}, nil
}

// decodeStored decodes a stored value and opens its secrets.
func (s *Store) decodeStored(val []byte) (*fgv1.StoredGateway, error) {
	st := &fgv1.StoredGateway{}
	if err := proto.Unmarshal(val, st); err != nil {
		return nil, fmt.Errorf("decode stored gateway: %w", err)
	}
	if st.GetGateway() == nil {
		return nil, fmt.Errorf("decode stored gateway: no gateway")
	}
	if len(st.GetSecrets()) > 0 {
		if s.keys == nil {
			return nil, fmt.Errorf("decode stored gateway %q: its certificates are sealed and no encryption key is configured: %w", st.GetGateway().GetName(), ErrNoKey)
		}
		if err := s.keys.open(st); err != nil {
			return nil, fmt.Errorf("decode stored gateway %q: %w", st.GetGateway().GetName(), err)
		}
	}
	return st, nil
}

// encodeStored seals a copy's secrets (when a keyring is set) and marshals it.
func (s *Store) encodeStored(st *fgv1.StoredGateway) ([]byte, error) {
	if s.keys != nil && len(st.GetGateway().GetSslCertificates()) > 0 {
		st = proto.Clone(st).(*fgv1.StoredGateway)
		if err := s.keys.seal(st, config.PublicPEM); err != nil {
			return nil, err
		}
	}
	return marshal.Marshal(st)
}

// wrapEtcd turns etcd's transport errors into ErrUnavailable, letting cancellation pass through.
func wrapEtcd(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// opContext makes an etcd operation fail fast with ErrUnavailable when the member it reaches has no
// leader (quorum lost), and, when the caller has a deadline, ends it half a second before, so that
// the caller hears "etcd unavailable" rather than its own timeout.
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx = clientv3.WithRequireLeader(ctx)
	if d, ok := ctx.Deadline(); ok && time.Until(d) > time.Second {
		return context.WithDeadline(ctx, d.Add(-500*time.Millisecond))
	}
	return context.WithCancel(ctx)
}
