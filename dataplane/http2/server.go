// Package http2 is the data plane's HTTP/2 server (RFC 9113), over TLS (ALPN h2) and in the clear
// (h2c by prior knowledge). Frames are read and written with golang.org/x/net/http2's Framer and
// hpack.
//
// net/http's HTTP/2 server keeps two goroutines a connection (a reader and a serve loop that owns
// all state), starts a fresh goroutine for each stream, whose stack grows anew every time, and
// makes each response at least two round trips to the serve loop: the handler waits until its
// HEADERS frame is written before it queues DATA, and the writer flushes whenever its queue is
// empty. A small response thus costs three write system calls.
//
// This server keeps one goroutine a connection, the reader, and runs handlers on a pool of
// goroutines that outlive their stream (their stacks stay grown). Connection state is under a
// mutex rather than owned by a loop; handlers write their own frames, under the connection's
// write lock, and the last of the writers queued on that lock flushes: a response's HEADERS and
// DATA go out in one write, and the responses of streams that finish together share one. An idle
// connection holds no write buffer.
//
// What it leaves out: server push, the extended CONNECT protocol (RFC 8441), priorities (PRIORITY
// frames are checked and ignored: streams are served in the order they are ready), Content-Type
// sniffing, and the h2c upgrade from HTTP/1.1 (h2c is by prior knowledge only, as net/http's).
package http2

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/accept"
)

// Server serves HTTP/2 connections. Set its fields before Serve.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the wait for the client's preface and first SETTINGS frame; 0: no
	// limit.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes (GOAWAY, then close) a connection with no open stream for this long; 0: no
	// limit.
	IdleTimeout time.Duration
	// WriteTimeout ends a connection whose client takes longer than this to take one write (at
	// most 64 KiB of DATA, or the server's answers to its own PINGs): it has stopped reading.
	// 0: 60 s, as nginx's send_timeout.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request's decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); 0: 1 MiB.
	MaxHeaderBytes int
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; 0: 250.
	MaxConcurrentStreams uint32
	// ConnContext, if set, gives the context of a connection's requests.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ConnState, if set, is called as a connection opens (StateNew) and closes (StateClosed).
	ConnState func(net.Conn, http.ConnState)
	Log       *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	loops    accept.Loops // the listeners Serve accepts from
	shutting atomic.Bool

	// work hands a stream to an idle handler goroutine, or nil to make one exit.
	work chan *stream
	// The handler goroutines: how many run, how many wait on work, the fewest that waited since
	// the last tidy, and whether a tidy is due.
	handlers, idleHandlers, idleLow atomic.Int32
	tidying                         atomic.Bool
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

const (
	defaultMaxStreams     = 250
	defaultMaxHeaderBytes = 1 << 20
)

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams > 0 {
		return s.MaxConcurrentStreams
	}
	return defaultMaxStreams
}

func (s *Server) maxHeaderBytes() uint32 {
	if s.MaxHeaderBytes > 0 {
		return uint32(s.MaxHeaderBytes)
	}
	return defaultMaxHeaderBytes
}

// Serve accepts connections from l and serves each in its own goroutine, until l fails or the
// server is shut down. Running out of file descriptors (or a timeout) pauses accepting, 5 ms
// doubling to 1 s, instead of ending it.
func (s *Server) Serve(l net.Listener) error {
	return s.loops.Serve(l, func(nc net.Conn) bool {
		c := s.newConn(nc)
		if c == nil {
			return false
		}
		go c.serve()
		return true
	}, s.Log)
}

// ServeConn serves one connection (TLS already handshaken, or h2c) in the calling goroutine,
// until it closes.
func (s *Server) ServeConn(nc net.Conn) {
	if c := s.newConn(nc); c != nil {
		c.serve()
	}
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.ConnState != nil {
		s.ConnState(nc, http.StateNew)
	}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, sends GOAWAY on every connection, and waits, up to ctx, for their
// streams to finish; each connection closes once its last stream has. When ctx ends first, the
// connections left are closed and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.loops.Close()
	s.mu.Lock()
	for c := range s.conns {
		go c.goAway()
	}
	s.mu.Unlock()
	wait := time.Millisecond
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.shutting.Store(true)
	s.loops.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// handlerLinger is how often the handler goroutines that none of the streams since needed are
// made to exit: an idle one lasts from one to two of it.
const handlerLinger = 2 * time.Second

// dispatch runs st's handler on an idle handler goroutine, or a new one.
func (s *Server) dispatch(st *stream) {
	select {
	case s.work <- st:
		n := s.idleHandlers.Add(-1)
		for low := s.idleLow.Load(); n < low && !s.idleLow.CompareAndSwap(low, n); low = s.idleLow.Load() {
		}
	default:
		s.handlers.Add(1)
		s.idleLow.Store(0) // all were busy
		if s.tidying.CompareAndSwap(false, true) {
			time.AfterFunc(handlerLinger, s.tidy)
		}
		go s.handle(st)
	}
}

// handle runs handlers, st's first, then those it is handed, until it is handed nil (tidy). An idle
// one waits on a plain channel receive: a timer of its own, reset at every stream and selected on
// with the channel, cost 3.5 % of the CPU under h2load.
func (s *Server) handle(st *stream) {
	defer s.handlers.Add(-1)
	for {
		for st != nil {
			st = st.c.runHandler(st)
		}
		s.idleHandlers.Add(1)
		if st = <-s.work; st == nil {
			return
		}
	}
}

// tidy makes as many idle handler goroutines exit as were idle all along since it last ran (the
// fewest idle at any time), and runs again in handlerLinger while any are left.
func (s *Server) tidy() {
retire:
	for n := s.idleLow.Load(); n > 0; n-- {
		select {
		case s.work <- nil:
			s.idleHandlers.Add(-1)
		default:
			break retire // none idle now
		}
	}
	s.idleLow.Store(s.idleHandlers.Load())
	s.tidying.Store(false)
	if s.handlers.Load() > 0 && s.tidying.CompareAndSwap(false, true) {
		time.AfterFunc(handlerLinger, s.tidy)
	}
}
