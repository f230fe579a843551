package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// BackendHealth answers hold one entry per (server, worker): N x M entries, tens of MB at
// 1000 x 1000. The bench reads them as raw bytes and walks only the fields it needs (address,
// health, healthy_dataplanes of every server), so that its own decoding does not dominate what it
// measures or steal the control plane's CPU on a small machine.

// rawCodec marshals requests as protobuf and hands responses back undecoded.
type rawCodec struct{}

type rawMsg struct{ b []byte }

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	r, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	r.b = append(r.b[:0], data...)
	return nil
}

const backendHealthMethod = "/fleetgate.v1.ConfigService/BackendHealth"

// backendHealthRaw calls BackendHealth and returns the encoded response: the fleet summary of each
// server, and with dataplanes every worker's view as well.
func backendHealthRaw(ctx context.Context, conn *grpc.ClientConn, gateway string, dataplanes bool, buf *rawMsg, opts ...grpc.CallOption) ([]byte, error) {
	opts = append([]grpc.CallOption{grpc.ForceCodec(rawCodec{})}, opts...)
	if err := conn.Invoke(ctx, backendHealthMethod, &fgv1.BackendHealthRequest{Gateway: gateway, Dataplanes: dataplanes}, buf, opts...); err != nil {
		return nil, err
	}
	return buf.b, nil
}

// scanServers calls fn for every server of every pool and settings of an encoded
// BackendHealthResponse, skipping the per-worker entries. fn returns false to stop.
func scanServers(b []byte, fn func(addr, health []byte, healthy int32) bool) error {
	// BackendHealthResponse.pools = 3 -> BackendPoolHealth.settings = 2 ->
	// BackendSettingsHealth.servers = 2 -> BackendServerHealth{address 1, health 2, healthy_dataplanes 6}.
	stop := errors.New("stop")
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 3 || typ != protowire.BytesType {
			return nil
		}
		return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num != 2 || typ != protowire.BytesType {
				return nil
			}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 2 || typ != protowire.BytesType {
					return nil
				}
				var addr, health []byte
				var healthy int32
				err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error {
					switch {
					case num == 1 && typ == protowire.BytesType:
						addr = v
					case num == 2 && typ == protowire.BytesType:
						health = v
					case num == 6 && typ == protowire.VarintType:
						healthy = int32(n)
					}
					return nil
				})
				if err != nil {
					return err
				}
				if !fn(addr, health, healthy) {
					return stop
				}
				return nil
			})
		})
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

// eachField walks one message's fields: bytes fields come as v, varints as n.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		if err := fn(num, typ, v, n); err != nil {
			return err
		}
	}
	return nil
}

// bhPoller calls BackendHealth in a tight loop on its own connection.
type bhPoller struct {
	conn    *grpc.ClientConn
	gateway string
	views   bool // the calls ask for every worker's view (dataplanes), not the summary alone
	buf     rawMsg
	calls   int
	callDur []time.Duration
	size    int
}

// count tells how many servers have health want and healthy_dataplanes == healthyWant, and how
// many servers there are.
func (p *bhPoller) count(ctx context.Context, want string, healthyWant int32) (match, total int, err error) {
	t0 := time.Now()
	b, err := backendHealthRaw(ctx, p.conn, p.gateway, p.views, &p.buf)
	p.calls++
	if err != nil {
		return 0, 0, err
	}
	p.callDur = append(p.callDur, time.Since(t0))
	p.size = len(b)
	err = scanServers(b, func(_, health []byte, healthy int32) bool {
		total++
		if string(health) == want && healthy == healthyWant {
			match++
		}
		return true
	})
	return match, total, err
}

// healthOf returns one server's fleet-wide health and healthy count.
func (p *bhPoller) healthOf(ctx context.Context, addr string) (string, int32, error) {
	t0 := time.Now()
	b, err := backendHealthRaw(ctx, p.conn, p.gateway, p.views, &p.buf)
	p.calls++
	if err != nil {
		return "", 0, err
	}
	p.callDur = append(p.callDur, time.Since(t0))
	p.size = len(b)
	health, found := "", false
	var healthy int32
	err = scanServers(b, func(a, h []byte, n int32) bool {
		if string(a) == addr {
			health, healthy, found = string(h), n, true
			return false
		}
		return true
	})
	if err == nil && !found {
		err = fmt.Errorf("server %s not in BackendHealth", addr)
	}
	return health, healthy, err
}

// waitFor polls until addr shows health want. It returns when the answer showing it arrived, and
// when the call that got that answer started: the control plane reads its health cache early in a
// call, so the change was in the cache by then (an upper bound of the report -> etcd -> watch ->
// cache pipeline, without the cost of the call itself).
func (p *bhPoller) waitFor(ctx context.Context, addr, want string, timeout time.Duration) (seen, callStart time.Time, last string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		time.Sleep(2 * time.Millisecond) // a summary call takes about a millisecond: leave the control plane room
		start := time.Now()
		h, _, err := p.healthOf(ctx, addr)
		if err != nil {
			if ctx.Err() != nil {
				return time.Time{}, time.Time{}, last, fmt.Errorf("%s still %q after %s", addr, last, timeout)
			}
			return time.Time{}, time.Time{}, last, err
		}
		if h == want {
			return time.Now(), start, h, nil
		}
		last = h
	}
}
