package agent

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// resolverScheme names the static resolver of a worker's control-plane addresses.
const resolverScheme = "fleetgate-controlplane"

// pickFirst holds one connection, to a replica picked at random (so that workers spread over the
// replicas), and moves to the next address when it breaks or its replica hands off (GOAWAY).
const pickFirst = `{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}`

// SplitAddresses parses a comma-separated list of control-plane addresses ("host:port,host:port").
// A single address is returned as given (it may be any gRPC target, e.g. dns:///cp:7070).
func SplitAddresses(list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("no control-plane address")
	case len(out) == 1:
		return out, nil
	}
	seen := map[string]bool{}
	for _, a := range out {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("control-plane address %q: want host:port: %w", a, err)
		}
		if seen[a] {
			return nil, fmt.Errorf("control-plane address %q given twice", a)
		}
		seen[a] = true
	}
	return out, nil
}

// Dial returns a client of the control plane at addrs, one or more replicas (opts carry the
// transport credentials). One address is dialled as gRPC dials any target. Several go to a static
// resolver with gRPC's pick_first balancer: the worker holds one connection, to a replica picked at
// random, and when that connection breaks or its replica hands off, gRPC connects to another
// address by itself. Each replica's certificate is verified against the host of its own address;
// to check one name for every replica (--tls-server-name), give grpc.WithAuthority(name) too.
func Dial(addrs []string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	switch len(addrs) {
	case 0:
		return nil, errors.New("no control-plane address")
	case 1:
		return grpc.NewClient(addrs[0], opts...)
	}
	var state resolver.State
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("control-plane address %q: want host:port: %w", a, err)
		}
		// The name checked in this replica's certificate: its own host, not the channel's.
		addr := resolver.Address{Addr: a, ServerName: host}
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{addr}})
	}
	r := manual.NewBuilderWithScheme(resolverScheme)
	r.InitialState(state)
	opts = append(opts, grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(pickFirst))
	return grpc.NewClient(resolverScheme+":///controlplane", opts...)
}
