package ctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// backend-health against the shared control plane with two workers reporting through the real
// Connect API: the table's WORKERS and LAST-PROBE come from the summary, -o json is the summary
// (counts, newest probe, no views), and --dataplanes adds every worker's view, as rows beneath each
// server in the table and as dataplanes in JSON.
func TestBackendHealthSummaryAndDataplanes(t *testing.T) {
	gw := uniqueName(t, "bhviews")
	rev := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, fmt.Sprintf(validDoc, gw))), gw, "applied")
	ip, fqdn := "127.0.0.10:9001", "app.internal.example:9001"
	probed := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	report := func(health string, ago time.Duration) []*fgv1.ServerHealthReport {
		s := &fgv1.ServerHealthReport{Settings: "settings1", Address: ip, Health: health, IntervalSeconds: 30,
			LastProbe: timestamppb.New(probed.Add(-ago))}
		if health == "Unhealthy" {
			s.Reason, s.Message = "tcp-connect-error", "dial tcp "+ip+": connection refused"
		}
		// The FQDN server's probe is pending on every worker.
		return []*fgv1.ServerHealthReport{s, {Settings: "settings1", Address: fqdn, Health: "Unknown", IntervalSeconds: 30}}
	}
	for _, w := range []struct {
		id, health string
		ago        time.Duration
	}{{"hw-1", "Healthy", 10 * time.Second}, {"hw-2", "Unhealthy", 0}} {
		c := connectWorker(t, w.id, gw, "127.0.0.1:8080")
		if v := c.snapshot(); v != rev {
			t.Fatalf("%s got version %d, want %d", w.id, v, rev)
		}
		c.send(&fgv1.ConnectRequest{Kind: &fgv1.ConnectRequest_Health{Health: &fgv1.HealthReport{Servers: report(w.health, w.ago)}}})
	}

	// The table, from the summary: one row per server.
	var table []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := run(t, "backend-health", gw)
		table = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if r.code == ExitNotHealthy && len(table) == 3 && strings.Contains(table[1], "Partial") && strings.Contains(table[2], " 0/2 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend-health never showed both workers' views: %s", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	row := strings.Fields(table[1])
	if got := strings.Join(row[:6], " "); got != "pool1 settings1 "+ip+" Partial tcp-connect-error 1/2" {
		t.Errorf("row of %s = %q", ip, table[1])
	}
	if ago := time.Since(probed); !strings.HasSuffix(table[1], age(ago)+" ago") && !strings.HasSuffix(table[1], age(ago-time.Second)+" ago") {
		t.Errorf("LAST-PROBE of %s is not the newest probe (%s ago): %q", ip, age(ago), table[1])
	}
	if got := strings.Join(strings.Fields(table[2]), " "); got != "pool1 settings1 "+fqdn+" Unknown - 0/2 -" {
		t.Errorf("row of %s = %q", fqdn, got)
	}

	servers := func(args ...string) []*fgv1.BackendServerHealth {
		t.Helper()
		r := run(t, append([]string{"backend-health", gw, "-o", "json"}, args...)...)
		var resp fgv1.BackendHealthResponse
		if err := protojson.Unmarshal([]byte(r.stdout), &resp); r.code != ExitNotHealthy || err != nil {
			t.Fatalf("backend-health -o json %v: %s (decode: %v)", args, r, err)
		}
		return resp.GetPools()[0].GetSettings()[0].GetServers()
	}
	sum := servers()
	if s := sum[0]; len(s.GetDataplanes()) != 0 || s.GetReportingDataplanes() != 2 || s.GetHealthyDataplanes() != 1 ||
		s.GetUnhealthyDataplanes() != 1 || !s.GetLastProbe().AsTime().Equal(probed) {
		t.Errorf("-o json, %s: %v; want the summary: 1 healthy, 1 unhealthy of 2, last probe %s, no views", ip, s, probed)
	}
	if s := sum[1]; len(s.GetDataplanes()) != 0 || s.GetReportingDataplanes() != 2 || s.GetLastProbe() != nil {
		t.Errorf("-o json, %s: %v; want 2 reporting, no probe, no views", fqdn, s)
	}
	full := servers("--dataplanes")
	if v := full[0].GetDataplanes(); len(v) != 2 || v[0].GetDataplane() != "hw-1" || v[0].GetHealth() != "Healthy" ||
		!v[0].GetLastProbe().AsTime().Equal(probed.Add(-10*time.Second)) || v[1].GetDataplane() != "hw-2" || v[1].GetReason() != "tcp-connect-error" {
		t.Errorf("--dataplanes -o json, %s: views %v", ip, v)
	}
	if full[0].GetReportingDataplanes() != 2 || !full[0].GetLastProbe().AsTime().Equal(probed) {
		t.Errorf("--dataplanes -o json, %s: summary %v", ip, full[0])
	}

	// --dataplanes in the table: each worker's row beneath its server.
	r := run(t, "backend-health", gw, "--dataplanes")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != ExitNotHealthy || len(lines) != 7 {
		t.Fatalf("backend-health --dataplanes: want 7 lines, got %s", r)
	}
	for i, want := range []struct {
		prefix string
		probed bool // ends in "s ago"
	}{{"hw-1 Healthy - ", true}, {"hw-2 Unhealthy tcp-connect-error ", true}, {"hw-1 Unknown - -", false}, {"hw-2 Unknown - -", false}} {
		line := strings.Join(strings.Fields(lines[[]int{2, 3, 5, 6}[i]]), " ")
		if !strings.HasPrefix(line, want.prefix) || want.probed != strings.HasSuffix(line, "s ago") {
			t.Errorf("worker row %q, want it to start with %q (and end in a probe age: %v)", line, want.prefix, want.probed)
		}
	}
	if got := strings.Join(strings.Fields(lines[1])[:6], " "); got != strings.Join(row[:6], " ") {
		t.Errorf("server row with --dataplanes %q differs from %q", lines[1], table[1])
	}
}
