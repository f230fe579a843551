// Package snapshot keeps, per gateway, the latest versioned configuration read from etcd and wakes the
// data-plane streams that serve it when it changes. It holds nothing etcd does not: on start, and after
// losing its watch, it lists the gateways again.
package snapshot

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Snapshot is one version of a gateway's configuration. It is immutable once published.
type Snapshot struct {
	// Version is the etcd modification revision of the gateway (of its deletion when Deleted).
	Version int64
	// Gateway is nil when Deleted.
	Gateway *fgv1.Gateway
	Deleted bool
	// AffinityKey keys the gateway's affinity cookies.
	AffinityKey []byte
	// Drains are the operator's drains.
	Drains []*fgv1.AdminDrain
}

// Cache follows the gateways stored in etcd.
type Cache struct {
	log   *slog.Logger
	store *store.Store // decodes values; set by Use

	mu     sync.Mutex
	snaps  map[string]*Snapshot
	subs   map[string]map[chan struct{}]struct{}
	ready  chan struct{}
	isDone bool
}

// New returns an empty cache; Run fills it.
func New(log *slog.Logger) *Cache {
	return &Cache{
		log:   log,
		snaps: map[string]*Snapshot{},
		subs:  map[string]map[chan struct{}]struct{}{},
		ready: make(chan struct{}),
	}
}

// Use sets the store that reads and decodes gateways (for its keyring). Call it before Run;
// without it the cache reads with a store that has no keyring.
func (c *Cache) Use(st *store.Store) { c.store = st }

// Ready is closed once the first full list of gateways was read.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// Latest returns the newest snapshot of a gateway, or nil if none was ever seen.
func (c *Cache) Latest(gateway string) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snaps[gateway]
}

// Subscribe returns a channel that receives a value (coalesced, never blocking the cache) whenever the
// gateway's snapshot changes, and a function that ends the subscription.
func (c *Cache) Subscribe(gateway string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	if c.subs[gateway] == nil {
		c.subs[gateway] = map[chan struct{}]struct{}{}
	}
	c.subs[gateway][ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs[gateway], ch)
		if len(c.subs[gateway]) == 0 {
			delete(c.subs, gateway)
		}
		c.mu.Unlock()
	}
}

// publish records a snapshot if it is newer than the one held and wakes the gateway's subscribers.
func (c *Cache) publish(name string, s *Snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.snaps[name]; cur != nil && cur.Version >= s.Version {
		return
	}
	c.snaps[name] = s
	for ch := range c.subs[name] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run lists and watches the gateways until ctx ends. It returns ctx's error.
func (c *Cache) Run(ctx context.Context, cli *clientv3.Client) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.follow(ctx, cli)
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("gateway watch ended; listing again", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return ctx.Err()
}

// follow lists every gateway, then applies watch events from the list's revision on.
func (c *Cache) follow(ctx context.Context, cli *clientv3.Client) error {
	if c.store == nil {
		c.store = store.New(cli)
	}
	listed, rev, err := c.store.List(ctx)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(listed))
	for _, st := range listed {
		present[st.Gateway.GetName()] = true
		c.publish(st.Gateway.GetName(), &Snapshot{Version: st.Revision, Gateway: st.Gateway, AffinityKey: st.AffinityKey, Drains: st.Drains})
	}
	// Gateways deleted while no watch was running.
	c.mu.Lock()
	var gone []string
	for name, s := range c.snaps {
		if !present[name] && !s.Deleted {
			gone = append(gone, name)
		}
	}
	c.mu.Unlock()
	for _, name := range gone {
		c.publish(name, &Snapshot{Version: rev, Deleted: true})
	}
	c.mu.Lock()
	if !c.isDone {
		c.isDone = true
		close(c.ready)
	}
	c.mu.Unlock()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range cli.Watch(wctx, store.GatewayPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			name := store.NameFromKey(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				c.publish(name, &Snapshot{Version: ev.Kv.ModRevision, Deleted: true})
				continue
			}
			st, err := c.store.Decode(ev.Kv.Value)
			if err != nil {
				c.log.Error("skipping undecodable gateway", "key", string(ev.Kv.Key), "err", err)
				continue
			}
			c.publish(name, &Snapshot{Version: ev.Kv.ModRevision, Gateway: st.Gateway, AffinityKey: st.AffinityKey, Drains: st.Drains})
		}
	}
	return errors.New("watch channel closed")
}
