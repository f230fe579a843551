package server

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// streams are the Connect streams this replica holds, so that an on-demand probe can be handed to a
// worker.
type streams struct {
	mu   sync.Mutex
	byID map[string]*workerStream // gateway + "/" + id
	next atomic.Uint64
}

// workerStream is the probe side of one worker's Connect stream: calls go in through calls; the
// stream's loop sends them and routes replies back by id.
type workerStream struct {
	id    string
	calls chan probeCall
}

type probeCall struct {
	msg   *fgv1.ProbeCall
	reply chan *fgv1.ProbeReply
}

func newStreams() *streams { return &streams{byID: map[string]*workerStream{}} }

func (s *streams) add(gateway string, ws *workerStream) {
	s.mu.Lock()
	s.byID[gateway+"/"+ws.id] = ws
	s.mu.Unlock()
}

func (s *streams) remove(gateway string, ws *workerStream) {
	s.mu.Lock()
	if s.byID[gateway+"/"+ws.id] == ws {
		delete(s.byID, gateway+"/"+ws.id)
	}
	s.mu.Unlock()
}

// pick returns the named worker's stream, or any worker of the gateway when id is empty.
func (s *streams) pick(gateway, id string) *workerStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "" {
		return s.byID[gateway+"/"+id]
	}
	prefix := gateway + "/"
	var best string
	for k := range s.byID {
		if len(k) > len(prefix) && k[:len(prefix)] == prefix && (best == "" || k < best) {
			best = k
		}
	}
	return s.byID[best]
}

// ProbeBackend hands a probe to a worker connected to this replica and waits for its outcome.
func (s *configService) ProbeBackend(ctx context.Context, req *fgv1.ProbeBackendRequest) (*fgv1.ProbeBackendResponse, error) {
	st, err := s.store.Get(ctx, req.GetGateway())
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	addr, err := probeAddress(st.Gateway, req)
	if err != nil {
		return nil, err
	}
	ws := s.streams.pick(req.GetGateway(), req.GetDataplane())
	if ws == nil {
		if req.GetDataplane() != "" {
			return nil, status.Errorf(codes.FailedPrecondition,
				"dataplane %q is not connected to this control-plane replica; `gatewayctl dataplanes` shows where it is", req.GetDataplane())
		}
		return nil, status.Errorf(codes.FailedPrecondition, "no worker of gateway %q is connected to this control-plane replica", req.GetGateway())
	}
	call := probeCall{
		msg:   &fgv1.ProbeCall{Id: strconv.FormatUint(s.streams.next.Add(1), 10), Settings: req.GetSettings(), Address: addr},
		reply: make(chan *fgv1.ProbeReply, 1),
	}
	select {
	case ws.calls <- call:
	case <-ctx.Done():
		return nil, toStatus(s.log, ctx.Err())
	}
	select {
	case r := <-call.reply:
		if r.GetError() != "" {
			return nil, status.Errorf(codes.FailedPrecondition, "dataplane %q: %s", ws.id, r.GetError())
		}
		return &fgv1.ProbeBackendResponse{Dataplane: ws.id, Result: r.GetResult()}, nil
	case <-ctx.Done():
		return nil, toStatus(s.log, ctx.Err())
	}
}

// probeAddress checks that the settings and server exist (in the pool, if one is named) and returns
// the server's "host:port" under the settings' port.
func probeAddress(gw *fgv1.Gateway, req *fgv1.ProbeBackendRequest) (string, error) {
	var port int32
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		if s.GetName() == req.GetSettings() {
			port = s.GetPort()
		}
	}
	for _, s := range gw.GetBackendSettingsCollection() {
		if s.GetName() == req.GetSettings() {
			port = s.GetPort()
		}
	}
	if port == 0 {
		return "", status.Errorf(codes.NotFound, "settings: %q is not in gateway %q", req.GetSettings(), gw.GetName())
	}
	host := req.GetAddress()
	if h, p, err := net.SplitHostPort(host); err == nil {
		if p != strconv.Itoa(int(port)) {
			return "", status.Errorf(codes.InvalidArgument, "address: port %s is not the settings' port %d", p, port)
		}
		host = h
	}
	for _, pu := range config.PoolUses(gw) {
		if req.GetPool() != "" && pu.Pool.GetName() != req.GetPool() {
			continue
		}
		for _, a := range pu.Pool.GetBackendAddresses() {
			if a.GetIpAddress() == host || a.GetFqdn() == host {
				return config.ServerAddress(a, port), nil
			}
		}
	}
	where := "any pool"
	if req.GetPool() != "" {
		where = fmt.Sprintf("pool %q", req.GetPool())
	}
	return "", status.Errorf(codes.NotFound, "address: %q is not a server of %s", req.GetAddress(), where)
}
