package ctl

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func TestDataPlaneStatus(t *testing.T) {
	for _, c := range []struct {
		dp   *fgv1.DataPlane
		want string
	}{
		{&fgv1.DataPlane{AppliedVersion: 7, DesiredVersion: 7}, "InSync"},
		{&fgv1.DataPlane{AppliedVersion: 5, DesiredVersion: 7}, "Pending"},
		{&fgv1.DataPlane{AppliedVersion: 5, DesiredVersion: 7, LastError: "bad config", RejectedVersion: 7}, "Rejected: bad config"},
		{&fgv1.DataPlane{AppliedVersion: 0, DesiredVersion: 0}, "InSync"},
	} {
		if got := dataPlaneStatus(c.dp); got != c.want {
			t.Errorf("dataPlaneStatus(%v) = %q, want %q", c.dp, got, c.want)
		}
	}
}

func TestAge(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{3 * time.Second, "3s"},
		{119 * time.Second, "119s"},
		{5 * time.Minute, "5m"},
		{3 * time.Hour, "3h"},
		{72 * time.Hour, "3d"},
	} {
		if got := age(c.d); got != c.want {
			t.Errorf("age(%s) = %q, want %q", c.d, got, c.want)
		}
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// healthFixture is a BackendHealth summary (no workers' views).
func healthFixture(now time.Time) *fgv1.BackendHealthResponse {
	ts := func(ago time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-ago)) }
	return &fgv1.BackendHealthResponse{Gateway: "gw", Pools: []*fgv1.BackendPoolHealth{
		{Name: "pool1", Settings: []*fgv1.BackendSettingsHealth{
			{Name: "s1", Servers: []*fgv1.BackendServerHealth{
				{Address: "10.0.0.1:80", Health: "Healthy", HealthyDataplanes: 2, ReportingDataplanes: 2, LastProbe: ts(3 * time.Second)},
				{Address: "10.0.0.2:80", Health: "Unhealthy", Reason: "tcp-connect-error\n\x1b[2J", HealthyDataplanes: 1, UnhealthyDataplanes: 1,
					ReportingDataplanes: 2, LastProbe: ts(5 * time.Minute)},
			}},
			{Name: "s2", Servers: []*fgv1.BackendServerHealth{
				{Address: "10.0.0.1:81", Health: "Partial"},
			}},
		}},
		{Name: "unused"},
	}}
}

func TestWriteBackendHealth(t *testing.T) {
	now := time.Now()
	resp := healthFixture(now)
	var plain bytes.Buffer
	if err := writeBackendHealth(&plain, resp, now, false); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"POOL SETTINGS ADDRESS HEALTH REASON WORKERS LAST-PROBE",
		"pool1 s1 10.0.0.1:80 Healthy - 2/2 3s ago",
		"pool1 s1 10.0.0.2:80 Unhealthy tcp-connect-error [2J 1/2 5m ago",
		"pool1 s2 10.0.0.1:81 Partial - 0/0 -",
		"unused - - - - - -",
	}
	lines := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got:\n%s", len(want), plain.String())
	}
	for i := range want {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != want[i] {
			t.Errorf("line %d = %q, want %q", i, got, want[i])
		}
	}
	if strings.Contains(plain.String(), "\x1b") {
		t.Errorf("uncolored table holds an escape: %q", plain.String())
	}

	// With the workers' views (--dataplanes): a row per worker beneath its server.
	withViews := healthFixture(now)
	servers := withViews.Pools[0].Settings[0].Servers
	servers[0].Dataplanes = []*fgv1.DataPlaneServerHealth{
		{Dataplane: "w1", Health: "Healthy", LastProbe: timestamppb.New(now.Add(-10 * time.Second))},
		{Dataplane: "w2", Health: "Healthy", LastProbe: timestamppb.New(now.Add(-3 * time.Second))},
	}
	servers[1].Dataplanes = []*fgv1.DataPlaneServerHealth{
		{Dataplane: "w1", Health: "Unhealthy", Reason: "tcp-connect-error", LastProbe: timestamppb.New(now.Add(-5 * time.Minute))},
		{Dataplane: "w2\x1b[2J", Health: "Healthy"},
	}
	var wide bytes.Buffer
	if err := writeBackendHealth(&wide, withViews, now, false); err != nil {
		t.Fatal(err)
	}
	wantWide := []string{
		want[0],
		want[1],
		"w1 Healthy - 10s ago",
		"w2 Healthy - 3s ago",
		want[2],
		"w1 Unhealthy tcp-connect-error 5m ago",
		"w2 [2J Healthy - -",
		want[3],
		want[4],
	}
	lines = strings.Split(strings.TrimSuffix(wide.String(), "\n"), "\n")
	if len(lines) != len(wantWide) {
		t.Fatalf("with views: want %d lines, got:\n%s", len(wantWide), wide.String())
	}
	for i := range wantWide {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != wantWide[i] {
			t.Errorf("with views: line %d = %q, want %q", i, got, wantWide[i])
		}
	}
	if !strings.Contains(lines[2], "   w1 ") || strings.Index(lines[2], "w1") <= strings.Index(lines[1], "10.0.0.1") {
		t.Errorf("worker row not indented under ADDRESS:\n%s\n%s", lines[1], lines[2])
	}

	var colored bytes.Buffer
	if err := writeBackendHealth(&colored, resp, now, true); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{ansiGreen + "Healthy" + ansiReset, ansiRed + "Unhealthy" + ansiReset, ansiYellow + "Partial" + ansiReset} {
		if !strings.Contains(colored.String(), w) {
			t.Errorf("colored table lacks %q:\n%s", w, colored.String())
		}
	}
	// Colors do not move the columns.
	if got := ansi.ReplaceAllString(colored.String(), ""); got != plain.String() {
		t.Errorf("colored table without its colors differs:\n%s\nwant\n%s", got, plain.String())
	}
}

func TestAllHealthy(t *testing.T) {
	resp := healthFixture(time.Now())
	if allHealthy(resp) {
		t.Error("allHealthy with Unhealthy and Partial servers")
	}
	resp.Pools[0].Settings[0].Servers = resp.Pools[0].Settings[0].Servers[:1]
	resp.Pools[0].Settings = resp.Pools[0].Settings[:1]
	if !allHealthy(resp) {
		t.Error("not allHealthy with one Healthy server")
	}
	resp.Pools[0].Settings[0].Servers[0].Health = "Unknown"
	if allHealthy(resp) {
		t.Error("allHealthy with an Unknown server")
	}
}

func TestWriteDataPlanesAge(t *testing.T) {
	now := time.Now()
	var b bytes.Buffer
	err := writeDataPlanes(&b, []*fgv1.DataPlane{
		{Id: "w1", Gateway: "gw", Address: "127.0.0.1:80", AppliedVersion: 4, DesiredVersion: 5,
			LastError: "line one\nline two", Controlplane: "cp1", ConnectedAt: timestamppb.New(now.Add(-3 * time.Hour))},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want header and one row, got:\n%s", b.String())
	}
	if got, want := strings.Join(strings.Fields(lines[1]), " "), "w1 gw 127.0.0.1:80 4 5 Rejected: line one line two cp1 3h Connected"; got != want {
		t.Errorf("row %q, want %q", got, want)
	}
}
