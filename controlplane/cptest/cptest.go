// Package cptest starts real control planes for tests: an embedded etcd on loopback and control-plane
// replicas over real gRPC, in-process.
package cptest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/embedetcd"
	"github.com/fleetgate/fleetgate/controlplane/server"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// Etcd starts an embedded etcd for the test and returns its client URL.
func Etcd(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedetcd.Start(ctx, embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Endpoint()
}

// Replica is a running control-plane replica.
type Replica struct {
	t    testing.TB
	Addr string
	etcd string
	name string
	srv  *server.Server
	done chan struct{}
}

// Start starts a replica against etcd on a free loopback port. It is stopped at the end of the test.
func Start(t testing.TB, etcd, name string) *Replica {
	t.Helper()
	r := &Replica{t: t, etcd: etcd, name: name}
	r.start("127.0.0.1:0")
	t.Cleanup(r.Stop)
	return r
}

func (r *Replica) start(addr string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := server.New(ctx, server.Config{
		EtcdEndpoints: []string{r.etcd},
		Replica:       r.name,
		LeaseTTL:      2,
		Log:           Logger(r.t),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	var lis net.Listener
	for i := 0; ; i++ { // the old port may take a moment to be free again after a restart
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		srv.Stop()
		r.t.Fatal(err)
	}
	r.Addr, r.srv, r.done = lis.Addr().String(), srv, make(chan struct{})
	go func() {
		defer close(r.done)
		_ = srv.Serve(lis)
	}()
}

// Stop stops the replica; a stopped replica may be restarted.
func (r *Replica) Stop() {
	if r.srv == nil {
		return
	}
	r.srv.Stop()
	<-r.done
	r.srv = nil
}

// Restart starts the replica again on the same address.
func (r *Replica) Restart() {
	r.t.Helper()
	r.Stop()
	r.start(r.Addr)
}

// Dial returns a gRPC connection to the replica, closed at the end of the test.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Apply decodes a gateway document and applies it, failing the test on error. It returns the revision.
func Apply(t testing.TB, conn grpc.ClientConnInterface, doc string) int64 {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := fgv1.NewConfigServiceClient(conn).ApplyGateway(ctx, &fgv1.ApplyGatewayRequest{Gateway: gw})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp.GetRevision()
}

// Logger returns a logger for components under test: silent unless the test runs with -v.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// Eventually polls cond every 20ms until it holds or the timeout passes, then fails with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
