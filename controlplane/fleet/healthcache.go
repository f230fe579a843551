package fleet

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// HealthCache follows every worker's stored health view (written by whichever replica holds its
// stream) so that BackendHealth is answered from memory, on any replica, for the whole fleet.
type HealthCache struct {
	log *slog.Logger

	mu    sync.RWMutex
	views map[string]map[string]*fgv1.HealthReport // gateway -> worker id -> view
	ready chan struct{}
	once  sync.Once
}

// NewHealthCache returns an empty cache; Run fills it.
func NewHealthCache(log *slog.Logger) *HealthCache {
	return &HealthCache{log: log, views: map[string]map[string]*fgv1.HealthReport{}, ready: make(chan struct{})}
}

// Ready is closed after the first full read.
func (c *HealthCache) Ready() <-chan struct{} { return c.ready }

// Views returns the views of a gateway's workers. The map and views must not be modified.
func (c *HealthCache) Views(gateway string) map[string]*fgv1.HealthReport {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]*fgv1.HealthReport, len(c.views[gateway]))
	for id, v := range c.views[gateway] {
		out[id] = v
	}
	return out
}

// Run lists and watches the health prefix until ctx ends.
func (c *HealthCache) Run(ctx context.Context, cli *clientv3.Client) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.follow(ctx, cli)
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("health watch ended; listing again", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return ctx.Err()
}

func splitHealthKey(key []byte) (gateway, id string, ok bool) {
	return strings.Cut(strings.TrimPrefix(string(key), HealthPrefix), "/")
}

func (c *HealthCache) follow(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, HealthPrefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	views := map[string]map[string]*fgv1.HealthReport{}
	for _, kv := range resp.Kvs {
		gw, id, ok := splitHealthKey(kv.Key)
		rep := &fgv1.HealthReport{}
		if !ok || proto.Unmarshal(kv.Value, rep) != nil {
			c.log.Error("skipping undecodable health view", "key", string(kv.Key))
			continue
		}
		if views[gw] == nil {
			views[gw] = map[string]*fgv1.HealthReport{}
		}
		views[gw][id] = rep
	}
	c.mu.Lock()
	c.views = views
	c.mu.Unlock()
	c.once.Do(func() { close(c.ready) })

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, HealthPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			gw, id, ok := splitHealthKey(ev.Kv.Key)
			if !ok {
				continue
			}
			if ev.Type == clientv3.EventTypeDelete {
				c.mu.Lock()
				delete(c.views[gw], id)
				c.mu.Unlock()
				continue
			}
			rep := &fgv1.HealthReport{}
			if err := proto.Unmarshal(ev.Kv.Value, rep); err != nil {
				c.log.Error("skipping undecodable health view", "key", string(ev.Kv.Key), "err", err)
				continue
			}
			c.mu.Lock()
			if c.views[gw] == nil {
				c.views[gw] = map[string]*fgv1.HealthReport{}
			}
			c.views[gw][id] = rep
			c.mu.Unlock()
		}
	}
	return errors.New("watch channel closed")
}

// Count is the number of worker views held, over all gateways.
func (c *HealthCache) Count() float64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, v := range c.views {
		n += len(v)
	}
	return float64(n)
}
