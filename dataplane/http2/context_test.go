package http2_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// afterFuncer is the method the request context has (the stream is the context), which
// context.AfterFunc uses, and which dataplane/upstream calls directly.
type afterFuncer interface {
	AfterFunc(f func()) (stop func() bool)
}

// TestRequestContextAfterFunc checks the request context's AfterFunc, called directly and through
// context.AfterFunc: a function registered while the stream is open runs once when the client
// resets it; one stopped first never runs, and its stop reports true; one registered once the
// context is done runs at once, and its stop reports false. A context made from the request's
// with WithCancel is canceled with it, and one made with WithValue still sees it end.
func TestRequestContextAfterFunc(t *testing.T) {
	t.Parallel()
	type result struct {
		ran, stoppedRan     chan struct{}
		stopped, stopLate   bool
		lateRan             chan struct{}
		child, valueChild   error
		errBefore, errAfter error
	}
	results := make(chan *result, 1)
	started := make(chan struct{}, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		direct, ok := ctx.(afterFuncer)
		if !ok {
			t.Errorf("the request context (%T) has no AfterFunc method", ctx)
			started <- struct{}{}
			results <- nil
			return
		}
		res := &result{ran: make(chan struct{}, 4), stoppedRan: make(chan struct{}, 2), lateRan: make(chan struct{}, 2)}
		res.errBefore = ctx.Err()
		context.AfterFunc(ctx, func() { res.ran <- struct{}{} })
		direct.AfterFunc(func() { res.ran <- struct{}{} })
		stop := context.AfterFunc(ctx, func() { res.stoppedRan <- struct{}{} })
		stopDirect := direct.AfterFunc(func() { res.stoppedRan <- struct{}{} })
		res.stopped = stop() && stopDirect()
		child, cancelChild := context.WithCancel(ctx)
		defer cancelChild()
		valueChild, cancelValueChild := context.WithCancel(context.WithValue(ctx, ctxKey{}, "v"))
		defer cancelValueChild()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-ctx.Done():
		case <-time.After(ioTimeout):
			t.Error("the request context is not done after the reset")
		}
		res.errAfter = ctx.Err()
		for _, c := range []struct {
			ctx context.Context
			err *error
		}{{child, &res.child}, {valueChild, &res.valueChild}} {
			select {
			case <-c.ctx.Done():
				*c.err = c.ctx.Err()
			case <-time.After(ioTimeout):
				*c.err = errors.New("not done")
			}
		}
		late := context.AfterFunc(ctx, func() { res.lateRan <- struct{}{} })
		lateDirect := direct.AfterFunc(func() { res.lateRan <- struct{}{} })
		time.Sleep(10 * time.Millisecond) // a stop racing the function's start may report either
		res.stopLate = late() || lateDirect()
		results <- res
	})}, false)

	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	rc.waitFor("the response HEADERS", func(f frame) bool { return f.Type == http2.FrameHeaders && f.StreamID == 1 })
	recv(t, started, "the handler")
	rc.writeRST(1, http2.ErrCodeCancel)
	res := recv(t, results, "the handler's result")
	if res == nil {
		t.FailNow()
	}

	if res.errBefore != nil {
		t.Errorf("Err() before the reset = %v; want nil", res.errBefore)
	}
	if !errors.Is(res.errAfter, context.Canceled) {
		t.Errorf("Err() after the reset = %v; want context.Canceled", res.errAfter)
	}
	recv(t, res.ran, "the function registered with context.AfterFunc")
	recv(t, res.ran, "the function registered with the AfterFunc method")
	select {
	case <-res.ran:
		t.Error("an AfterFunc function ran twice")
	case <-time.After(50 * time.Millisecond):
	}
	if !res.stopped {
		t.Error("stop before the reset reported false")
	}
	select {
	case <-res.stoppedRan:
		t.Error("a stopped AfterFunc function ran")
	default:
	}
	recv(t, res.lateRan, "the function registered after the reset")
	recv(t, res.lateRan, "the function registered after the reset, directly")
	if res.stopLate {
		t.Error("stop after the function started reported true")
	}
	if !errors.Is(res.child, context.Canceled) || !errors.Is(res.valueChild, context.Canceled) {
		t.Errorf("contexts made from the request's: WithCancel %v, WithValue+WithCancel %v; want both canceled", res.child, res.valueChild)
	}
}

// TestConnContextCanceled checks that a connection context that can be done (Server.ConnContext)
// ends the request contexts of the connection's open streams, with its error.
func TestConnContextCanceled(t *testing.T) {
	t.Parallel()
	connCtx, cancelConn := context.WithCancelCause(context.Background())
	defer cancelConn(nil)
	errs := make(chan error, 1)
	started := make(chan struct{}, 1)
	ts := serve(t, &srv.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(connCtx, ctxKey{}, "conn")
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v, _ := r.Context().Value(ctxKey{}).(string); v != "conn" {
				t.Errorf("the request context's value = %q; want the connection context's", v)
			}
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				errs <- r.Context().Err()
			case <-time.After(ioTimeout):
				errs <- errors.New("not done")
			}
		}),
	}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	recv(t, started, "the handler")
	cancelConn(errors.New("connection context ended"))
	if err := recv(t, errs, "the handler's context"); !errors.Is(err, context.Canceled) {
		t.Errorf("the request context after the connection context ended: %v; want context.Canceled", err)
	}
}

// A connection context that is done already: every stream's request context is done at once
// (and, under the race detector, without a race between the stream's start and its cancel).
func TestConnContextDoneAlready(t *testing.T) {
	t.Parallel()
	connCtx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 4)
	ts := serve(t, &srv.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return connCtx },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				done <- r.Context().Err()
			case <-time.After(ioTimeout):
				done <- errors.New("not done")
			}
		}),
	}, false)
	rc := ts.raw(t)
	rc.handshake()
	for i := uint32(1); i <= 7; i += 2 {
		rc.writeHeaders(i, true, rc.request("GET", "/")...)
	}
	for range 4 {
		if err := recv(t, done, "a handler"); !errors.Is(err, context.Canceled) {
			t.Errorf("request context: %v; want context.Canceled", err)
		}
	}
}

// With a connection context that can end, a stream the client reset keeps its own cause
// (context.Canceled) when the connection context ends later with another.
func TestStreamCauseOwn(t *testing.T) {
	t.Parallel()
	connCtx, cancelConn := context.WithCancelCause(context.Background())
	defer cancelConn(nil)
	got := make(chan [2]error, 1)
	connEnded := make(chan struct{})
	started := make(chan struct{}, 1)
	ts := serve(t, &srv.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return connCtx },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			started <- struct{}{}
			<-r.Context().Done() // the client's reset
			<-connEnded
			got <- [2]error{r.Context().Err(), context.Cause(r.Context())}
		}),
	}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	recv(t, started, "the handler")
	rc.writeRST(1, http2.ErrCodeCancel)
	rc.writePing([8]byte{1}) // the reset is processed before the PING is answered
	rc.waitFor("the PING's ACK", func(f frame) bool { return f.Type == http2.FramePing })
	cancelConn(errors.New("connection cause"))
	close(connEnded)
	r := recv(t, got, "the handler's result")
	if !errors.Is(r[0], context.Canceled) || !errors.Is(r[1], context.Canceled) {
		t.Errorf("Err %v, Cause %v; want context.Canceled for both (the stream's reset, not the connection's cause)", r[0], r[1])
	}
}
