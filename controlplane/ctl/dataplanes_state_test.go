package ctl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// A leaving worker shows in the STATE column; the others are Connected.
func TestDataPlaneState(t *testing.T) {
	var out bytes.Buffer
	dps := []*fgv1.DataPlane{
		{Id: "dp-1", Gateway: "gw", AppliedVersion: 3, DesiredVersion: 3, Controlplane: "cp-a"},
		{Id: "dp-2", Gateway: "gw", AppliedVersion: 3, DesiredVersion: 3, Controlplane: "cp-a", Leaving: true, LeavingReason: "SIGTERM"},
	}
	if err := writeDataPlanes(&out, dps, time.Now()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"ID", "GATEWAY", "ADDRESS", "APPLIED", "DESIRED", "STATUS", "CONTROLPLANE", "AGE", "STATE"},
		{"dp-1", "gw", "-", "3", "3", "InSync", "cp-a", "-", "Connected"},
		{"dp-2", "gw", "-", "3", "3", "InSync", "cp-a", "-", "Leaving"},
	}
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", out.String())
	}
	for i, l := range lines {
		if got := strings.Join(strings.Fields(l), " "); got != strings.Join(want[i], " ") {
			t.Errorf("row %d = %q, want %q", i, got, strings.Join(want[i], " "))
		}
	}
}
