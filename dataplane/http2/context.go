package http2

import (
	"context"
	"sync"
	"time"
)

// A stream is its request's context: done when the stream closes (it ended, the client reset it,
// the connection ended). Being the stream, it costs a request no context of its own: no
// context.WithCancel (its cancelCtx, channel and children map), no second http.Request for
// WithContext, and AfterFunc, which the context package calls when a context has the method (the
// proxy's backend exchange aborts through it), keeps the function in the stream rather than in a
// child context.
//
// Values and the deadline are the connection context's (Server.ConnContext). That one is
// normally never done; when it can be, the request's context is a context.WithCancel child of it
// instead (child), which the stream cancels when it closes: its end and its Cause follow the
// connection context's as with net/http.

// streamCtx is the context state of a stream.
type streamCtx struct {
	mu        sync.Mutex
	done      chan struct{} // made by the first Done (or at cancel); closed at cancel
	err       error
	after     []afterFunc // functions to run at cancel; after = afterBuf[:0] at first
	afterBuf  [2]afterFunc
	nextAfter uint32

	child       context.Context // the request's context when the connection context can end
	cancelChild context.CancelFunc
}

type afterFunc struct {
	id uint32
	f  func()
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// startContext readies the stream's context and gives the request's, before the request is made.
func (st *stream) startContext() context.Context {
	st.ctx.after = st.ctx.afterBuf[:0]
	if st.c.ctxDone {
		st.ctx.child, st.ctx.cancelChild = context.WithCancel(st.c.ctx)
		return st.ctx.child
	}
	return st
}

// cancelContext makes the stream's context done with err, and starts the functions AfterFunc
// registered, each in its goroutine (as the context package does).
func (st *stream) cancelContext(err error) {
	x := &st.ctx
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = err
	if x.done == nil {
		x.done = closedChan
	} else {
		close(x.done)
	}
	after := x.after
	x.after = nil
	x.mu.Unlock()
	for _, a := range after {
		go a.f()
	}
	clear(after) // the stream keeps no reference to them
	if x.cancelChild != nil {
		x.cancelChild()
	}
}

// Deadline is the connection context's.
func (st *stream) Deadline() (time.Time, bool) { return st.c.ctx.Deadline() }

// Done is closed when the stream closes.
func (st *stream) Done() <-chan struct{} {
	x := &st.ctx
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		x.done = make(chan struct{})
	}
	return x.done
}

// Err is context.Canceled once the stream has closed (or the connection context's error, when that
// one was done first), nil before.
func (st *stream) Err() error {
	x := &st.ctx
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// Value is the connection context's.
func (st *stream) Value(key any) any { return st.c.ctx.Value(key) }

// AfterFunc arranges to run f in its own goroutine once the stream's context is done (at once if
// it is already); stop, called before then, cancels that and reports true. context.AfterFunc on
// the stream, or on a context made from it with WithCancel, comes here.
func (st *stream) AfterFunc(f func()) (stop func() bool) {
	x := &st.ctx
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	x.nextAfter++
	id := x.nextAfter
	x.after = append(x.after, afterFunc{id: id, f: f})
	x.mu.Unlock()
	return func() bool { return st.stopAfter(id) }
}

func (st *stream) stopAfter(id uint32) bool {
	x := &st.ctx
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, a := range x.after {
		if a.id == id {
			n := len(x.after) - 1
			copy(x.after[i:], x.after[i+1:])
			x.after[n] = afterFunc{} // no reference left to f
			x.after = x.after[:n]
			return true
		}
	}
	return false
}

var _ context.Context = (*stream)(nil)
