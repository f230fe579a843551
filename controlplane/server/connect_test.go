package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/controlplane/embedetcd"
	"github.com/fleetgate/fleetgate/controlplane/fleet"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A health view whose write to etcd fails (etcd is down) is written once etcd is back, although the
// worker sends nothing more: not its view again, not even a heartbeat.
func TestHealthViewWriteRetried(t *testing.T) {
	dir, clientAddr, peerAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	startEtcd := func() *embedetcd.Server {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e, err := embedetcd.Start(c, embedetcd.Config{Dir: dir, ClientAddr: clientAddr, PeerAddr: peerAddr, Quiet: true})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := startEtcd()
	t.Cleanup(func() { e.Close() })

	logs := &syncBuffer{}
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A long lease: the registry keeps its lease through the outage, so it does not write its
	// entries again under a new one (which would also store the view).
	srv, err := server.New(c, server.Config{
		EtcdEndpoints: []string{e.Endpoint()}, Replica: "cp-retry", LeaseTTL: 60, Insecure: true,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn := cptest.DialInsecure(t, lis.Addr().String())
	cptest.Apply(t, conn, leaveDoc)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	// stored is the health of 10.0.0.1:80 in w1's view in etcd ("" when absent or unreadable).
	stored := func() string {
		gc, gcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer gcancel()
		resp, err := cli.Get(gc, fleet.HealthKey("leave", "w1"))
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		var rep fgv1.HealthReport
		if proto.Unmarshal(resp.Kvs[0].Value, &rep) != nil || len(rep.GetServers()) == 0 {
			return ""
		}
		return rep.GetServers()[0].GetHealth()
	}
	view := func(health string) *fgv1.ServerHealthReport {
		return &fgv1.ServerHealthReport{Settings: "s", Address: "10.0.0.1:80", Health: health, IntervalSeconds: 30}
	}

	w := connectRaw(t, conn, "w1", 0)
	w.snapshot()
	w.report(view("Healthy"))
	cptest.Eventually(t, 20*time.Second, func() bool { return stored() == "Healthy" }, "the first view is not in etcd")

	e.Close()
	w.report(view("Unhealthy"))
	cptest.Eventually(t, 30*time.Second, func() bool { return strings.Contains(logs.String(), "store health view; will retry") },
		"no failed write of the changed view while etcd is down")
	e = startEtcd()
	cptest.Eventually(t, 90*time.Second, func() bool { return stored() == "Unhealthy" },
		"the changed view never reached etcd after it came back; log:\n%s", logs.String())
	if !strings.Contains(logs.String(), "health view stored after a failed write") {
		t.Errorf("no log of the retried write; log:\n%s", logs.String())
	}
}

// Every worker of a gateway receives the same snapshot, encoded once: the bytes and the message
// decode as the configuration, on several streams and across pushes.
func TestSnapshotSharedAcrossStreams(t *testing.T) {
	r := cptest.Start(t, cptest.Etcd(t), "cp-shared")
	conn := cptest.Dial(t, r.Addr)
	v1 := cptest.Apply(t, conn, leaveDoc)
	workers := []*rawWorker{connectRaw(t, conn, "a", 0), connectRaw(t, conn, "b", 0), connectRaw(t, conn, "c", 0)}
	// check says every worker received the snapshot of version, all the same bytes, and returns them.
	check := func(workers []*rawWorker, version int64) []byte {
		t.Helper()
		var first []byte
		for _, w := range workers {
			m, err := w.recv()
			if err != nil || m.GetSnapshot() == nil {
				t.Fatalf("%s: want a snapshot, got %v, %v", w.id, m, err)
			}
			s := m.GetSnapshot()
			if s.GetVersion() != version || s.GetGateway().GetName() != "leave" || len(s.GetAffinityKey()) == 0 {
				t.Fatalf("%s: snapshot %d of %q (affinity key %d bytes), want %d of leave", w.id, s.GetVersion(), s.GetGateway().GetName(), len(s.GetAffinityKey()), version)
			}
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = b
			} else if !bytes.Equal(first, b) {
				t.Fatalf("%s received another snapshot than the first worker", w.id)
			}
		}
		return first
	}
	check(workers, v1)
	v2 := cptest.Apply(t, conn, strings.Replace(leaveDoc, "10.0.0.2", "10.0.0.3", 1))
	b2 := check(workers, v2)
	// A worker that connects later gets the same, current snapshot.
	if b := check([]*rawWorker{connectRaw(t, conn, "d", v1)}, v2); !bytes.Equal(b, b2) {
		t.Fatal("a worker connecting later received another snapshot")
	}
}
