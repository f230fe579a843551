package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetgate/fleetgate/controlplane/fleet"
	"github.com/fleetgate/fleetgate/controlplane/snapshot"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// streamWriteTimeout bounds each etcd write a worker's stream makes.
const streamWriteTimeout = time.Second

// A health view whose write failed is written again after a jittered backoff: firstRetry at first
// (0.5-1.5x), doubling up to maxRetry. Only the latest view is kept, so a long etcd outage costs each
// stream one pending view and one write attempt per backoff period, not a queue.
const (
	firstRetry = time.Second
	maxRetry   = 30 * time.Second
)

// helloTimeout bounds the wait for a worker's first message.
const helloTimeout = 10 * time.Second

// maxReasonBytes bounds the reason a leaving worker gives, as stored in the fleet view.
const maxReasonBytes = 256

// dataPlaneService serves the workers' Connect streams.
type dataPlaneService struct {
	fgv1.UnimplementedDataPlaneServiceServer
	cache   *snapshot.Cache
	fleet   *fleet.Registry
	streams *streams
	replica string
	metrics *metrics
	// handoff is closed when the replica shuts down: each stream tells its worker to reconnect
	// elsewhere and ends.
	handoff <-chan struct{}
	log     *slog.Logger
	// encoded holds each gateway's latest snapshot message, encoded once for all its streams.
	encoded snapshotEncoder
}

var _ fgv1.DataPlaneServiceServer = (*dataPlaneService)(nil)

func (s *dataPlaneService) Connect(stream fgv1.DataPlaneService_ConnectServer) (err error) {
	ctx := stream.Context()
	hello, err := recvHello(stream, s.handoff)
	if errors.Is(err, errHandoff) {
		return s.sendReconnect(stream)
	}
	if err != nil {
		return err
	}
	log := s.log.With("dataplane", hello.GetDataplaneId(), "gateway", hello.GetGateway())
	select {
	case <-s.handoff:
		// A worker reaching a replica that is handing off (before the GOAWAY reached it) moves on.
		log.Info("replica shutting down; worker sent to another replica")
		return s.sendReconnect(stream)
	default:
	}
	dp := &fgv1.DataPlane{
		Id:             hello.GetDataplaneId(),
		Gateway:        hello.GetGateway(),
		Address:        hello.GetAddress(),
		AppliedVersion: hello.GetAppliedVersion(),
		Controlplane:   s.replica,
		ConnectedAt:    timestamppb.Now(),
	}
	if err := s.fleet.Put(ctx, dp); err != nil {
		return toStatus(log, err)
	}
	log.Info("dataplane connected", "applied_version", dp.AppliedVersion)
	connected := s.metrics.connected.WithLabelValues(dp.Gateway)
	connected.Inc()
	defer connected.Dec()
	var sentAt time.Time
	// leaving: the worker said it is shutting down; handedOff: this replica sent it elsewhere.
	var leaving, handedOff bool
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if rerr := s.fleet.Remove(rctx, dp.Gateway, dp.Id); rerr != nil {
			log.Warn("unregister dataplane", "err", rerr)
		}
		switch {
		case leaving:
			log.Info("worker left", "reason", dp.LeavingReason)
		case handedOff:
			log.Info("dataplane handed off to another replica")
		case err == nil:
			log.Info("dataplane disconnected")
		default:
			log.Warn("dataplane stream lost", "err", err)
		}
	}()

	// Answers from the worker are read in their own goroutine, and the end of its side comes through
	// the same channel, after them (a Leaving just before the end is not lost); the sender below owns
	// the stream's send side and the registry entry.
	type received struct {
		req *fgv1.ConnectRequest
		err error
	}
	answers := make(chan received, 16)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case answers <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	changed, cancel := s.cache.Subscribe(dp.Gateway)
	defer cancel()
	sent := dp.AppliedVersion
	send := func() error {
		snap := s.cache.Latest(dp.Gateway)
		if snap == nil || snap.Version == sent {
			return nil
		}
		if snap.Deleted && sent == 0 {
			return nil // nothing to take away
		}
		if leaving {
			return nil // it serves nothing new: it is finishing its requests and exiting
		}
		msg, err := s.encoded.encode(dp.Gateway, snap)
		if err != nil {
			return status.Errorf(codes.Internal, "encode snapshot %d: %v", snap.Version, err)
		}
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
		sent, sentAt = snap.Version, time.Now()
		s.metrics.pushes.WithLabelValues(dp.Gateway).Inc()
		log.Debug("snapshot sent", "version", snap.Version, "deleted", snap.Deleted)
		return nil
	}
	if err := send(); err != nil {
		return err
	}
	// Writes to etcd from the stream's loop are bounded, so that an etcd election (up to its ~7 s
	// request timeout) does not hold up the snapshots this stream must send; a health view whose
	// write fails is written again after a jittered backoff (hv.retryDue), the worker's entry with
	// its next answer.
	var wcancel context.CancelFunc = func() {}
	defer func() { wcancel() }()
	wctx := func() context.Context {
		wcancel()
		var c context.Context
		c, wcancel = context.WithTimeout(ctx, streamWriteTimeout)
		return c
	}
	hv := &healthView{}
	// storeView makes etcd hold what hv says: the worker's latest view, or none once it went stale.
	storeView := func(now time.Time) {
		var err error
		if hv.dropped {
			err = s.fleet.RemoveHealth(wctx(), dp.Gateway, dp.Id)
		} else {
			err = s.fleet.PutHealthEncoded(wctx(), dp.Gateway, dp.Id, hv.written)
		}
		retrying := hv.unsaved
		hv.saved(err, now)
		switch {
		case err == nil && retrying:
			log.Info("health view stored after a failed write")
		case err != nil && !retrying:
			log.Warn("store health view; will retry", "dropped", hv.dropped, "retry_in", hv.retryAt.Sub(now).Round(time.Millisecond), "err", err)
		case err != nil:
			log.Debug("store health view; will retry", "dropped", hv.dropped, "retry_in", hv.retryAt.Sub(now).Round(time.Millisecond), "err", err)
		}
	}
	ws := &workerStream{id: dp.Id, calls: make(chan probeCall)}
	s.streams.add(dp.Gateway, ws)
	defer s.streams.remove(dp.Gateway, ws)
	pending := map[string]chan *fgv1.ProbeReply{}
	staleCheck := time.NewTicker(time.Second)
	defer staleCheck.Stop()
	// A leaving worker's health view is dropped and its entry marked; a write that fails is done
	// again on the next tick.
	var healthDropped, leaveRecorded bool
	recordLeaving := func() {
		if !healthDropped {
			if err := s.fleet.RemoveHealth(wctx(), dp.Gateway, dp.Id); err != nil {
				log.Warn("drop the health view of a leaving worker", "err", err)
			} else {
				healthDropped = true
			}
		}
		if !leaveRecorded {
			next := proto.Clone(dp).(*fgv1.DataPlane)
			next.Leaving = true
			if err := s.fleet.Put(wctx(), next); err != nil {
				log.Warn("record leaving dataplane", "err", err)
			} else {
				dp, leaveRecorded = next, true
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.handoff:
			handedOff = true
			return s.sendReconnect(stream)
		case <-changed:
			if err := send(); err != nil {
				return err
			}
		case now := <-staleCheck.C:
			if leaving {
				recordLeaving()
				continue
			}
			if hv.stale(now) {
				log.Warn("health reports stopped; dropping this worker's view", "last_report", hv.lastReport)
				storeView(now)
			} else if hv.retryDue(now) {
				storeView(now)
			}
		case call := <-ws.calls:
			pending[call.msg.GetId()] = call.reply
			if err := stream.Send(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_ProbeCall{ProbeCall: call.msg}}); err != nil {
				return err
			}
		case got := <-answers:
			if errors.Is(got.err, io.EOF) {
				return nil // the worker closed its side: a normal end
			} else if got.err != nil {
				return got.err
			}
			req := got.req
			if r := req.GetProbeReply(); r != nil {
				if reply := pending[r.GetId()]; reply != nil {
					delete(pending, r.GetId())
					reply <- r
				}
				continue
			}
			if l := req.GetLeaving(); l != nil {
				if !leaving {
					leaving = true
					dp = proto.Clone(dp).(*fgv1.DataPlane)
					dp.LeavingReason = truncate(l.GetReason(), maxReasonBytes)
					log.Info("worker leaving", "reason", dp.LeavingReason)
					s.streams.remove(dp.Gateway, ws) // no more probe calls
					recordLeaving()
				}
				continue
			}
			if rep := req.GetHealth(); rep != nil {
				if leaving {
					continue // its view no longer counts
				}
				now := time.Now()
				write, err := hv.observe(rep, dp.Id, now)
				if err != nil {
					return status.Errorf(codes.Internal, "encode health view: %v", err)
				}
				if write {
					storeView(now)
				}
				continue
			}
			next := proto.Clone(dp).(*fgv1.DataPlane)
			switch k := req.GetKind().(type) {
			case *fgv1.ConnectRequest_Ack:
				next.AppliedVersion, next.LastError, next.RejectedVersion = k.Ack.GetVersion(), "", 0
				s.metrics.answers.WithLabelValues(dp.Gateway, "ack").Inc()
				if k.Ack.GetVersion() == sent && !sentAt.IsZero() {
					s.metrics.pushToAck.Observe(time.Since(sentAt).Seconds())
				}
				log.Info("snapshot acked", "version", k.Ack.GetVersion())
			case *fgv1.ConnectRequest_Nack:
				next.LastError, next.RejectedVersion = k.Nack.GetError(), k.Nack.GetVersion()
				s.metrics.answers.WithLabelValues(dp.Gateway, "nack").Inc()
				log.Warn("snapshot rejected", "version", k.Nack.GetVersion(), "err", k.Nack.GetError())
			default:
				return status.Errorf(codes.InvalidArgument, "unexpected %T after hello", req.GetKind())
			}
			if proto.Equal(next, dp) {
				continue // write to etcd on change only
			}
			if err := s.fleet.Put(wctx(), next); err != nil {
				log.Warn("record dataplane version", "err", err)
				continue // dp stays as recorded: the next answer tries again
			}
			dp = next
		}
	}
}

// errHandoff ends a stream whose hello came while the replica was handing its workers off.
var errHandoff = errors.New("replica handing off")

// sendReconnect tells the worker to connect to another replica; its stream then ends.
func (s *dataPlaneService) sendReconnect(stream fgv1.DataPlaneService_ConnectServer) error {
	msg := &fgv1.Reconnect{Reason: "control-plane replica " + s.replica + " is shutting down"}
	return stream.Send(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_Reconnect{Reconnect: msg}})
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func recvHello(stream fgv1.DataPlaneService_ConnectServer, handoff <-chan struct{}) (*fgv1.Hello, error) {
	type result struct {
		req *fgv1.ConnectRequest
		err error
	}
	got := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		got <- result{req, err}
	}()
	var r result
	select {
	case r = <-got:
	case <-time.After(helloTimeout):
		return nil, status.Errorf(codes.DeadlineExceeded, "no hello within %s", helloTimeout)
	case <-handoff:
		return nil, errHandoff
	}
	if r.err != nil {
		return nil, r.err
	}
	h := r.req.GetHello()
	switch {
	case h == nil:
		return nil, status.Error(codes.InvalidArgument, "first message must be hello")
	case h.GetDataplaneId() == "":
		return nil, status.Error(codes.InvalidArgument, "hello.dataplaneId: is required")
	case h.GetGateway() == "":
		return nil, status.Error(codes.InvalidArgument, "hello.gateway: is required")
	}
	return h, nil
}

// healthView follows one worker's health reports on its stream: it says when the stored view must be
// written (it changed, or its last write failed and the retry is due) and when it went stale (no
// report, not even a heartbeat, for three heartbeat periods).
//
// The view is kept encoded only, and the fleet registry keeps that same slice (to write it again
// under a new lease): one copy per worker, not a decoded message beside an encoded one.
type healthView struct {
	written    []byte // the latest view, deterministically encoded; nil before the first
	lastReport time.Time
	period     time.Duration
	dropped    bool // the view went stale: etcd must not hold it
	// unsaved: the last write (or removal) failed; it is tried again from retryAt, after a backoff
	// that doubles up to maxRetry.
	unsaved bool
	retryAt time.Time
	backoff time.Duration
}

// observe records a report and says whether the stored view must be written now: it changed, or it
// had been dropped as stale and the worker is heard from again.
func (h *healthView) observe(rep *fgv1.HealthReport, dataplane string, now time.Time) (bool, error) {
	h.lastReport = now
	if rep.GetHeartbeat() {
		if h.dropped && h.written != nil {
			h.dropped = false
			return true, nil
		}
		return false, nil
	}
	rep.Heartbeat = false
	minInterval := int32(0)
	for _, s := range rep.GetServers() {
		// The worker speaks only for itself: transitions carry the stream's identity.
		for _, t := range s.GetTransitions() {
			t.Dataplane = dataplane
		}
		if iv := s.GetIntervalSeconds(); iv > 0 && (minInterval == 0 || iv < minInterval) {
			minInterval = iv
		}
	}
	h.period = min(max(time.Duration(minInterval)*time.Second, time.Second), 30*time.Second)
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(rep)
	if err != nil {
		return false, err
	}
	if h.written != nil && !h.dropped && bytes.Equal(h.written, enc) {
		return false, nil // unchanged; a failed write of it is retried when due
	}
	h.written, h.dropped = enc, false
	return true, nil
}

// saved records the outcome of a write (or removal) of the view at now.
func (h *healthView) saved(err error, now time.Time) {
	if err == nil {
		h.unsaved, h.backoff = false, 0
		return
	}
	h.unsaved = true
	h.backoff = min(max(2*h.backoff, firstRetry), maxRetry)
	// 0.5-1.5x: streams that failed together retry apart.
	h.retryAt = now.Add(h.backoff/2 + rand.N(h.backoff))
}

// retryDue reports whether a failed write should be done again now.
func (h *healthView) retryDue(now time.Time) bool {
	return h.unsaved && !now.Before(h.retryAt)
}

// stale reports, once, that the view outlived three heartbeat periods without a report.
func (h *healthView) stale(now time.Time) bool {
	if h.written == nil || h.dropped || now.Sub(h.lastReport) <= 3*h.period {
		return false
	}
	h.dropped = true
	return true
}

// snapshotEncoder encodes each gateway's latest snapshot once, as the ConnectResponse every stream
// of the gateway sends (a snapshot carries nothing per worker), so that a push to N workers costs
// one encoding rather than N.
type snapshotEncoder struct {
	mu   sync.Mutex
	last map[string]*encodedSnapshot // by gateway
}

type encodedSnapshot struct {
	snap *snapshot.Snapshot
	once sync.Once
	msg  *preEncoded
	err  error
}

// encode returns the snapshot's message, encoding it on first use; streams asking at the same time
// wait for the one encoding.
func (e *snapshotEncoder) encode(gateway string, snap *snapshot.Snapshot) (*preEncoded, error) {
	e.mu.Lock()
	c := e.last[gateway]
	if c == nil || c.snap != snap {
		fresh := &encodedSnapshot{snap: snap}
		if c == nil || snap.Version >= c.snap.Version { // an older one is encoded, not kept
			if e.last == nil {
				e.last = map[string]*encodedSnapshot{}
			}
			e.last[gateway] = fresh
		}
		c = fresh
	}
	e.mu.Unlock()
	c.once.Do(func() {
		msg := &fgv1.Snapshot{Version: snap.Version, Gateway: snap.Gateway, Deleted: snap.Deleted, AffinityKey: snap.AffinityKey, Drains: snap.Drains}
		var b []byte
		b, c.err = proto.Marshal(&fgv1.ConnectResponse{Kind: &fgv1.ConnectResponse_Snapshot{Snapshot: msg}})
		c.msg = &preEncoded{b: b}
	})
	return c.msg, c.err
}

// preEncoded is a message already encoded in protobuf's wire format, sent as is by streamCodec.
type preEncoded struct{ b []byte }

// streamCodec is gRPC's proto codec, except that it sends a preEncoded message's bytes as they are:
// the replica's snapshots are encoded once and the same bytes go to every worker's stream. gRPC
// compresses them afterwards per stream, as any message, if that stream's client asked for it.
//
// grpc.PreparedMsg was the alternative: it is encoded through one stream, with that stream's codec
// and compressor (its rpcInfo), and its bytes are plain slices, so sharing one between streams works
// while every stream negotiated the same codec and no compression, but a worker sending compressed
// requests would make its stream compress and the shared message would then be wrong elsewhere (the
// frame's compressed flag against the other streams' grpc-encoding). Encoding once per stream would
// not save the encoding. A codec keeps the compression per stream.
type streamCodec struct{ encoding.CodecV2 }

func newStreamCodec() streamCodec { return streamCodec{encoding.GetCodecV2(protoenc.Name)} }

func (c streamCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		// A SliceBuffer is never recycled (its Free does nothing): the bytes stay shared and intact.
		return mem.BufferSlice{mem.SliceBuffer(p.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}
