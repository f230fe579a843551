package config_test

import (
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func TestServerAddress(t *testing.T) {
	tests := []struct {
		addr *fgv1.BackendAddress
		port int32
		want string
	}{
		{&fgv1.BackendAddress{IpAddress: "127.0.0.10"}, 9001, "127.0.0.10:9001"},
		{&fgv1.BackendAddress{IpAddress: "fd00::10"}, 80, "[fd00::10]:80"},
		{&fgv1.BackendAddress{Fqdn: "app.internal.example"}, 8080, "app.internal.example:8080"},
	}
	for _, tc := range tests {
		if got := config.ServerAddress(tc.addr, tc.port); got != tc.want {
			t.Errorf("ServerAddress(%v, %d) = %q, want %q", tc.addr, tc.port, got, tc.want)
		}
	}
}
