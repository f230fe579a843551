package config

import (
	"net"
	"strconv"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// ServerAddress is a backend server's "host:port" under a backend settings' port: the name a server
// goes by in routing, probing and BackendHealth.
func ServerAddress(a *fgv1.BackendAddress, port int32) string {
	host := a.GetIpAddress()
	if host == "" {
		host = a.GetFqdn()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
