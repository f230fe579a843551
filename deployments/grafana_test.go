package deployments

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"
)

// The Grafana dashboard parses and queries only metrics the binaries export.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/fleetgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{
		"fleetgate_requests_total": true, "fleetgate_upstream_duration_seconds_bucket": true,
		"fleetgate_client_connections": true, "fleetgate_probes_total": true,
		"fleetgate_probe_duration_seconds_bucket": true, "fleetgate_config_version": true,
		"fleetgate_controlplane_connected_dataplanes": true, "fleetgate_controlplane_push_to_ack_seconds_bucket": true,
		"fleetgate_controlplane_snapshot_answers_total": true, "fleetgate_controlplane_health_views": true,
		"grpc_server_handling_seconds_bucket": true, "fleetgate_controlplane_etcd_request_seconds_bucket": true, "process_resident_memory_bytes": true,
	}
	metric := regexp.MustCompile(`\b(fleetgate_[a-z_]+|grpc_server_[a-z_]+|process_[a-z_]+)\b`)
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range metric.FindAllString(q.Expr, -1) {
				if !known[m] {
					t.Errorf("panel %q queries %s, which no binary exports", p.Title, m)
				}
			}
		}
	}
}
