package e2e

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// What the fleet view says, read with gatewayctl -o json.

func ctlJSON(t *testing.T, server string, m proto.Message, okCodes []int, args ...string) bool {
	t.Helper()
	r := ctl(t, server, append([]string{"--timeout", "3s"}, args...)...)
	ok := false
	for _, c := range okCodes {
		ok = ok || r.code == c
	}
	if !ok {
		return false
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(r.stdout), m); err != nil {
		t.Logf("gatewayctl %v: decode: %v", args, err)
		return false
	}
	return true
}

// fleetHealth returns, per server address, the fleet's health from BackendHealth's summary (nil
// when the call failed).
func fleetHealth(t *testing.T, server string) map[string]string {
	t.Helper()
	resp := &fgv1.BackendHealthResponse{}
	if !ctlJSON(t, server, resp, []int{0, 3}, "backend-health", gatewayName, "-o", "json") {
		return nil
	}
	fleet := map[string]string{}
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				fleet[srv.GetAddress()] = srv.GetHealth()
			}
		}
	}
	return fleet
}

// backendHealth returns, per server address, the fleet's health and each worker's view, asked
// with --dataplanes (nil when the call failed).
func backendHealth(t *testing.T, server string) (fleet map[string]string, views map[string]map[string]string) {
	t.Helper()
	resp := &fgv1.BackendHealthResponse{}
	if !ctlJSON(t, server, resp, []int{0, 3}, "backend-health", gatewayName, "-o", "json", "--dataplanes") {
		return nil, nil
	}
	fleet, views = map[string]string{}, map[string]map[string]string{}
	for _, p := range resp.GetPools() {
		for _, s := range p.GetSettings() {
			for _, srv := range s.GetServers() {
				fleet[srv.GetAddress()] = srv.GetHealth()
				if views[srv.GetAddress()] == nil {
					views[srv.GetAddress()] = map[string]string{}
				}
				for _, dp := range srv.GetDataplanes() {
					views[srv.GetAddress()][dp.GetDataplane()] = dp.GetHealth()
				}
			}
		}
	}
	return fleet, views
}

// dataplanes returns the connected workers by id (nil when the call failed).
func dataplanes(t *testing.T, server string) map[string]*fgv1.DataPlane {
	t.Helper()
	resp := &fgv1.ListDataPlanesResponse{}
	if !ctlJSON(t, server, resp, []int{0}, "dataplanes", gatewayName, "-o", "json") {
		return nil
	}
	out := map[string]*fgv1.DataPlane{}
	for _, dp := range resp.GetDataplanes() {
		out[dp.GetId()] = dp
	}
	return out
}
