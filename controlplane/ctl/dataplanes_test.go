package ctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/fleetgate/fleetgate/controlplane/pki"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// worker is a data-plane session held open on the shared control plane through its real Connect
// API, answering snapshots as the test says.
type worker struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[fgv1.ConnectRequest, fgv1.ConnectResponse]
}

func connectWorker(t *testing.T, id, gateway, address string) *worker {
	t.Helper()
	tlsCfg, err := pki.ClientTLS(pki.FilesFromDir(pkiDir, pki.DataPlaneName))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(cpAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := fgv1.NewDataPlaneServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &fgv1.Hello{DataplaneId: id, Gateway: gateway, Address: address}
	if err := stream.Send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &worker{t: t, stream: stream}
}

// snapshot waits for the next snapshot and returns its version.
func (w *worker) snapshot() int64 {
	w.t.Helper()
	resp, err := w.stream.Recv()
	if err != nil {
		w.t.Fatalf("worker: %v", err)
	}
	return resp.GetSnapshot().GetVersion()
}

func (w *worker) send(req *fgv1.ConnectRequest) {
	w.t.Helper()
	if err := w.stream.Send(req); err != nil {
		w.t.Fatalf("worker: %v", err)
	}
}

// waitRow polls `dataplanes GATEWAY` until a row holds every one of want, and returns the table.
func waitRow(t *testing.T, gateway string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := mustRun(t, "dataplanes", gateway)
		for _, line := range strings.Split(r.stdout, "\n")[1:] {
			all := line != ""
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				return r.stdout
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no row with %q in:\n%s", want, r.stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDataPlanesStatus(t *testing.T) {
	gw := uniqueName(t, "fleet")
	rev := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, fmt.Sprintf(validDoc, gw))), gw, "applied")

	w := connectWorker(t, "worker-1", gw, "127.0.0.1:8080")
	if v := w.snapshot(); v != rev {
		t.Fatalf("worker got version %d, want %d", v, rev)
	}
	// Registered, nothing applied yet.
	table := waitRow(t, gw, "worker-1", "Pending")
	fields := strings.Fields(strings.Split(table, "\n")[1])
	if want := []string{"worker-1", gw, "127.0.0.1:8080", "0", fmt.Sprint(rev), "Pending", "cp-test"}; strings.Join(fields[:7], " ") != strings.Join(want, " ") {
		t.Errorf("row %q, want it to start with %q", fields, want)
	}
	if !strings.HasSuffix(fields[7], "s") {
		t.Errorf("AGE %q of a fresh worker is not in seconds", fields[7])
	}

	w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Ack{Ack: &fgv1.Ack{Version: rev}}})
	waitRow(t, gw, "worker-1", "InSync", fmt.Sprintf(" %d ", rev))

	// A new revision the worker rejects.
	doc2 := strings.Replace(fmt.Sprintf(validDoc, gw), "port: 9001", "port: 9002", 1)
	rev2 := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, doc2)), gw, "applied")
	if v := w.snapshot(); v != rev2 {
		t.Fatalf("worker got version %d, want %d", v, rev2)
	}
	w.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Nack{Nack: &fgv1.Nack{Version: rev2, Error: "listen 127.0.0.1:8081: address in use"}}})
	waitRow(t, gw, "worker-1", "Rejected: listen 127.0.0.1:8081: address in use")

	// The fleet shows in list and in JSON too.
	r := mustRun(t, "list")
	counted := false
	for _, line := range strings.Split(r.stdout, "\n") {
		counted = counted || strings.Join(strings.Fields(line), " ") == fmt.Sprintf("%s %d 2 2 1 1", gw, rev2)
	}
	if !counted {
		t.Errorf("list does not count the worker:\n%s", r.stdout)
	}
	r = mustRun(t, "dataplanes", "-A", "-o", "json")
	var resp fgv1.ListDataPlanesResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("dataplanes -o json: %v\n%s", err, r.stdout)
	}
	found := false
	for _, dp := range resp.GetDataplanes() {
		if dp.GetId() == "worker-1" && dp.GetGateway() == gw && dp.GetAppliedVersion() == rev &&
			dp.GetDesiredVersion() == rev2 && dp.GetRejectedVersion() == rev2 {
			found = true
		}
	}
	if !found {
		t.Errorf("worker-1 missing from dataplanes -A -o json: %v", &resp)
	}
}
