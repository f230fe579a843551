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
// stream) so that BackendHealth is answered from memory, on any replica, for the whole fleet. Views
// are kept per gateway in a GatewayHealth: compact, with per-server summaries updated as each view
// changes.
type HealthCache struct {
	log *slog.Logger

	mu       sync.RWMutex
	gateways map[string]*GatewayHealth
	ready    chan struct{}
	once     sync.Once
}

// NewHealthCache returns an empty cache; Run fills it.
func NewHealthCache(log *slog.Logger) *HealthCache {
	return &HealthCache{log: log, gateways: map[string]*GatewayHealth{}, ready: make(chan struct{})}
}

// Ready is closed after the first full read.
func (c *HealthCache) Ready() <-chan struct{} { return c.ready }

// Gateway returns the health views of a gateway's workers (empty if there are none). Read them with
// GatewayHealth.Read.
func (c *HealthCache) Gateway(gateway string) *GatewayHealth {
	c.mu.RLock()
	g := c.gateways[gateway]
	c.mu.RUnlock()
	if g == nil {
		return NewGatewayHealth()
	}
	return g
}

// Views returns the views of a gateway's workers, rebuilt as messages: costly for a large fleet
// (BackendHealth reads Gateway instead). The map and views may be modified.
func (c *HealthCache) Views(gateway string) map[string]*fgv1.HealthReport {
	out := map[string]*fgv1.HealthReport{}
	c.Gateway(gateway).Read(func(r HealthReader) {
		for _, id := range r.IDs() {
			out[id] = r.Report(id)
		}
	})
	return out
}

// set records a view, creating the gateway.
func (c *HealthCache) set(gateway, id string, rep *fgv1.HealthReport) {
	c.mu.Lock()
	g := c.gateways[gateway]
	if g == nil {
		g = NewGatewayHealth()
		c.gateways[gateway] = g
	}
	c.mu.Unlock()
	g.Set(id, rep)
}

// remove forgets a view.
func (c *HealthCache) remove(gateway, id string) {
	c.mu.RLock()
	g := c.gateways[gateway]
	c.mu.RUnlock()
	if g != nil {
		g.Remove(id)
	}
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
	gateways := map[string]*GatewayHealth{}
	for _, kv := range resp.Kvs {
		gw, id, ok := splitHealthKey(kv.Key)
		rep := &fgv1.HealthReport{}
		if !ok || proto.Unmarshal(kv.Value, rep) != nil {
			c.log.Error("skipping undecodable health view", "key", string(kv.Key))
			continue
		}
		if gateways[gw] == nil {
			gateways[gw] = NewGatewayHealth()
		}
		gateways[gw].Set(id, rep)
	}
	c.mu.Lock()
	c.gateways = gateways
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
				c.remove(gw, id)
				continue
			}
			rep := &fgv1.HealthReport{}
			if err := proto.Unmarshal(ev.Kv.Value, rep); err != nil {
				c.log.Error("skipping undecodable health view", "key", string(ev.Kv.Key), "err", err)
				continue
			}
			c.set(gw, id, rep)
		}
	}
	return errors.New("watch channel closed")
}

// Count is the number of worker views held, over all gateways.
func (c *HealthCache) Count() float64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, g := range c.gateways {
		n += g.Len()
	}
	return float64(n)
}
