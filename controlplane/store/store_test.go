package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/embedetcd"
	"github.com/fleetgate/fleetgate/controlplane/store"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func gateway(name string, port int32) *fgv1.Gateway {
	return &fgv1.Gateway{
		Name:          name,
		HttpListeners: []*fgv1.HttpListener{{Name: "web", Protocol: "Http", Port: port}},
	}
}

func TestApplyGetListDelete(t *testing.T) {
	cli := startEtcd(t)
	s := store.New(cli)
	ctx := context.Background()

	rev1, changed, err := s.Apply(ctx, gateway("a", 8080), nil)
	if err != nil || !changed || rev1 == 0 {
		t.Fatalf("first apply: rev %d changed %v err %v", rev1, changed, err)
	}
	// Identical config: nothing written, same revision.
	rev, changed, err := s.Apply(ctx, gateway("a", 8080), nil)
	if err != nil || changed || rev != rev1 {
		t.Fatalf("identical apply: rev %d (want %d) changed %v err %v", rev, rev1, changed, err)
	}
	rev2, changed, err := s.Apply(ctx, gateway("a", 9090), nil)
	if err != nil || !changed || rev2 <= rev1 {
		t.Fatalf("changed apply: rev %d changed %v err %v", rev2, changed, err)
	}
	got, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev2 || !proto.Equal(got.Gateway, gateway("a", 9090)) {
		t.Fatalf("get = rev %d %v, want rev %d", got.Revision, got.Gateway, rev2)
	}
	if _, _, err := s.Apply(ctx, gateway("b", 1), nil); err != nil {
		t.Fatal(err)
	}
	all, _, err := s.List(ctx)
	if err != nil || len(all) != 2 || all[0].Gateway.GetName() != "a" || all[1].Gateway.GetName() != "b" {
		t.Fatalf("list = %v, %v", all, err)
	}
	drev, err := s.Delete(ctx, "a", nil)
	if err != nil || drev <= rev2 {
		t.Fatalf("delete: rev %d err %v", drev, err)
	}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, "a", nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestApplyExpectedRevision(t *testing.T) {
	cli := startEtcd(t)
	s := store.New(cli)
	ctx := context.Background()
	zero := int64(0)

	rev1, _, err := s.Apply(ctx, gateway("a", 1), &zero) // create-only
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply(ctx, gateway("a", 2), &zero); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("create-only over existing: %v, want ErrConflict", err)
	}
	rev2, _, err := s.Apply(ctx, gateway("a", 2), &rev1)
	if err != nil {
		t.Fatalf("apply at current revision: %v", err)
	}
	// A writer still holding rev1 is refused and the stored config is untouched.
	if _, _, err := s.Apply(ctx, gateway("a", 3), &rev1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale apply: %v, want ErrConflict", err)
	}
	got, _ := s.Get(ctx, "a")
	if got.Revision != rev2 || got.Gateway.GetHttpListeners()[0].GetPort() != 2 {
		t.Fatalf("stored after stale apply: rev %d port %d, want rev %d port 2", got.Revision, got.Gateway.GetHttpListeners()[0].GetPort(), rev2)
	}
	if _, err := s.Delete(ctx, "a", &rev1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale delete: %v, want ErrConflict", err)
	}
	if _, err := s.Delete(ctx, "a", &rev2); err != nil {
		t.Fatalf("delete at current revision: %v", err)
	}
}

// Many writers race from the same base revision: exactly one wins, the others get ErrConflict, and
// the stored config is the winner's, whole.
func TestApplyConcurrentConflicts(t *testing.T) {
	cli := startEtcd(t)
	s := store.New(cli)
	ctx := context.Background()
	base, _, err := s.Apply(ctx, gateway("a", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	results := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gw := gateway("a", int32(100+i))
			gw.BackendAddressPools = []*fgv1.BackendAddressPool{{Name: fmt.Sprintf("pool-of-writer-%d", i)}}
			_, _, results[i] = s.Apply(ctx, gw, &base)
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("writer %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got, _ := s.Get(ctx, "a")
	if p := got.Gateway.GetHttpListeners()[0].GetPort(); p != int32(100+winner) || got.Gateway.GetBackendAddressPools()[0].GetName() != fmt.Sprintf("pool-of-writer-%d", winner) {
		t.Fatalf("stored config is not the winner's whole config: %v", got.Gateway)
	}
}

func TestUnavailable(t *testing.T) {
	// A client pointed at a closed port: operations fail with ErrUnavailable, not a raw gRPC error.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, err := store.New(cli).Apply(ctx, gateway("a", 1), nil); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("apply against no etcd: %v, want ErrUnavailable", err)
	}
}

// The affinity key is made on the first apply and kept by later ones, so cookies survive applies.
func TestAffinityKeyKeptAcrossApplies(t *testing.T) {
	cli := startEtcd(t)
	s := store.New(cli)
	ctx := context.Background()
	if _, _, err := s.Apply(ctx, gateway("a", 1), nil); err != nil {
		t.Fatal(err)
	}
	first, _ := s.Get(ctx, "a")
	if len(first.AffinityKey) != 32 {
		t.Fatalf("affinity key of %d bytes, want 32", len(first.AffinityKey))
	}
	if _, _, err := s.Apply(ctx, gateway("a", 2), nil); err != nil {
		t.Fatal(err)
	}
	second, _ := s.Get(ctx, "a")
	if string(second.AffinityKey) != string(first.AffinityKey) {
		t.Fatal("affinity key changed on a second apply")
	}
	if _, _, err := s.Apply(ctx, gateway("b", 1), nil); err != nil {
		t.Fatal(err)
	}
	other, _ := s.Get(ctx, "b")
	if string(other.AffinityKey) == string(first.AffinityKey) {
		t.Fatal("two gateways share an affinity key")
	}
}
