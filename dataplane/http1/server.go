// Package http1 is the data plane's HTTP/1.x server: the loop that reads requests from a client
// connection, runs an http.Handler for each and writes the responses.
//
// net/http's server does more per request than a proxy needs: it starts a goroutine that watches
// the connection for the client going away, makes a cancelable context, a fresh Request, header
// maps and URL, and keeps 8 KiB of buffers for every idle connection. This server reuses one
// Request, header map and URL per connection (the handler must not keep them past its return),
// takes its buffers from a pool only while a request is being served (an idle connection holds no
// buffer, and after 100 ms on Linux no goroutine either: see parker), and refuses ambiguous
// framing (Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0, obsolete line
// folding) while parsing, so no second parser follows the byte stream.
//
// What it keeps from net/http: the same checks of the request head and the same answers (400, 431,
// 501, 505, 417), "Expect: 100-continue", chunked request bodies with trailers, a response
// framed by Content-Length when the handler sets one or finishes within 2 KiB, chunked (with
// trailers) otherwise, the discard of up to 256 KiB of an unread request body before the next
// request, Flush, Hijack, ConnContext and ConnState, and a graceful Shutdown.
//
// What it leaves out: HTTP/2 (the worker serves h2 and h2c with dataplane/http2), Content-Type sniffing
// (a proxy passes the backend's header as it is), and the cancelation of a request's context when
// the client closes its connection mid-request (the response write then fails instead, as the
// backend hop's own timeouts bound the wait).
package http1

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetgate/fleetgate/dataplane/accept"
)

// Server serves HTTP/1.x connections. Set its fields before Serve.
type Server struct {
	Handler           http.Handler
	ReadHeaderTimeout time.Duration // the time to read a request head; 0: no limit
	IdleTimeout       time.Duration // the time to wait for the next request; 0: no limit
	MaxHeaderBytes    int           // request line and header fields; 0: 1 MiB. 4 KiB more is allowed, as in net/http.
	// ConnContext, if set, gives the context of a connection's requests.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ConnState, if set, is called as a connection changes state, as with http.Server.
	ConnState func(net.Conn, http.ConnState)
	// H2C, if set, takes a connection that opens with the HTTP/2 preface (h2c with prior
	// knowledge), as net/http's server checks at a connection's start: the connection is then no
	// longer this server's (ConnState reports it hijacked), and reads from it begin with the
	// preface.
	H2C func(net.Conn)
	Log *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	loops    accept.Loops // the listeners Serve accepts from
	shutting atomic.Bool
	idle     parker        // connections idle past idleHandOff, held without a goroutine
	handOff  time.Duration // idleHandOff if 0 (benchmarks set it to park after every request)
	detach   time.Duration // detachAfter if 0; below 0, at once (tests and benchmarks)
	crowd    int           // detachCrowd if 0 (tests)
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

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

// ServeConn serves one connection in the calling goroutine, until it closes.
func (s *Server) ServeConn(rw net.Conn) {
	if c := s.newConn(rw); c != nil {
		c.serve()
	}
}

func (s *Server) newConn(rw net.Conn) *conn {
	c := &conn{s: s, rw: rw, created: int64(time.Since(epoch))}
	c.state.Store(int32(http.StateNew))
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		rw.Close()
		return nil
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.ConnState != nil {
		s.ConnState(rw, http.StateNew)
	}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections and waits for the others to finish their
// current request, or for ctx, whichever is first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.loops.Close()
	defer s.idle.close()
	wait := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
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
		c.resumeParked()
		c.rw.Close()
	}
	s.mu.Unlock()
	s.idle.close()
	return nil
}

// epoch is the zero of conn.created: a count of nanoseconds takes 8 bytes a connection, a
// time.Time 24.
var epoch = time.Now()

// newConnGrace is how long Shutdown leaves a connection that has not sent its first request, as
// net/http does: its request may be on the way.
const newConnGrace = 5 * time.Second

// closeIdle closes the connections waiting for a request and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		st := http.ConnState(c.state.Load())
		if st == http.StateNew && time.Since(epoch)-time.Duration(c.created) < newConnGrace {
			continue
		}
		if (st == http.StateIdle || st == http.StateNew) && c.state.CompareAndSwap(int32(st), int32(http.StateClosed)) {
			c.resumeParked()
			c.rw.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes + 4096
	}
	return http.DefaultMaxHeaderBytes + 4096
}

// conn is one client connection.
type conn struct {
	s       *Server
	rw      net.Conn
	created int64        // when accepted: nanoseconds since epoch (monotonic)
	state   atomic.Int32 // http.ConnState; StateClosed once Shutdown has claimed an idle one
	ctx     context.Context
	remote  string
	tls     *tls.ConnectionState // nil in the clear
	base    *http.Request        // an empty request carrying ctx, copied for each request; nil while parked

	// x is the request state, from the pool while a request is served; kept across requests only
	// when the client has sent bytes of the next one already (pipelining).
	x *exchange

	// idleUntil is when the idle wait handed to a new goroutine ends (idleForever: never).
	idleUntil   time.Time
	idleForever bool

	waiter *readWaiter // nil: wait by reading one byte, first
	first  [1]byte     // the byte that woke an idle connection (no waiter)
	prefix prefixReader
	park   parkState // guarded by s.idle's mutex

	parkRefused bool // the parker did not take the connection: no hand-off again
}

// resumeParked gives a parked connection its goroutine back (before it is closed: its descriptor
// leaves the parker's epoll set first).
func (c *conn) resumeParked() {
	if c.s.idle.unpark(c) {
		go c.loop(c.park.n)
	}
}

// serve runs the connection's request loop.
func (c *conn) serve() {
	c.remote = c.rw.RemoteAddr().String()
	c.waiter = newReadWaiter(c.rw)
	if tc, ok := c.rw.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := tc.ConnectionState()
		if hc, ok := c.rw.(interface{ HandshakeContext(context.Context) error }); ok && !st.HandshakeComplete {
			// From a TLS listener: the handshake first, as net/http does, so that Request.TLS
			// is the negotiated state (if it fails, so does the first read, which closes).
			if d := c.s.ReadHeaderTimeout; d > 0 {
				c.rw.SetDeadline(time.Now().Add(d))
			}
			if hc.HandshakeContext(context.Background()) == nil {
				st = tc.ConnectionState()
			}
			c.rw.SetDeadline(time.Time{})
		}
		c.tls = &st
	}
	c.ctx = context.Background()
	if c.s.ConnContext != nil {
		c.ctx = c.s.ConnContext(c.ctx, c.rw)
	}
	c.loop(0)
}

// A connection is the context of the requests it serves (no context is allocated for a request):
// the values and deadline of Server.ConnContext's, and ClientGone (gone_linux.go).
func (c *conn) Deadline() (time.Time, bool) { return c.ctx.Deadline() }
func (c *conn) Done() <-chan struct{}       { return c.ctx.Done() }
func (c *conn) Err() error                  { return c.ctx.Err() }
func (c *conn) Value(key any) any           { return c.ctx.Value(key) }

// idleHandOff is how long a connection's goroutine waits for the next request before it hands
// the wait to the server's parker (see parker) and ends: serving a request grows a goroutine's
// stack (to 8 KiB and more), and an idle goroutine keeps it, while a parked connection holds no
// goroutine at all. A busy connection never changes goroutine. Where a connection cannot be parked
// (no epoll, or the server is shutting down), a new goroutine takes the wait until the idle
// timeout: it starts with a smaller stack.
const idleHandOff = 100 * time.Millisecond

// loop serves requests from the n-th on, until the connection closes, is hijacked or its wait is
// handed to another goroutine.
func (c *conn) loop(n int) {
	keep := false // the connection lives on in another goroutine, or with a hijacker
	defer func() {
		if !keep {
			c.end()
		}
	}()
	for ; ; n++ {
		switch c.awaitRequest(n) {
		case awaitClose:
			return
		case awaitHandOff:
			keep = true
			if !c.s.idle.park(c, n) {
				c.parkRefused = true // the new goroutine waits until the idle timeout
				go c.loop(n)
			}
			return
		}
		if n == 0 && c.s.H2C != nil && c.h2Preface() {
			c.handOverH2C()
			keep = true
			return
		}
		var more bool
		more, keep = c.serveRequest()
		if keep || !more {
			return
		}
	}
}

type awaitResult uint8

const (
	awaitReady   awaitResult = iota // a request is coming: c.x is ready to read it
	awaitClose                      // the connection is to close
	awaitHandOff                    // idle for idleHandOff: continue the wait in a new goroutine
)

// awaitRequest waits for the first byte of the next request (the n-th on the connection) and
// readies c.x to read it.
func (c *conn) awaitRequest(n int) awaitResult {
	if c.x != nil && c.x.br.Buffered() > 0 {
		// Pipelined: the next request is here already.
		if c.s.ReadHeaderTimeout > 0 {
			c.rw.SetReadDeadline(time.Now().Add(c.s.ReadHeaderTimeout))
		}
		return awaitReady
	}
	if c.x != nil {
		c.x.release()
		c.x = nil
	}
	handOff, readFirst := false, false
	handOffAfter := cmp.Or(c.s.handOff, idleHandOff)
	switch {
	case n == 0:
		if c.s.ReadHeaderTimeout > 0 {
			c.rw.SetReadDeadline(time.Now().Add(c.s.ReadHeaderTimeout))
		}
	case !c.idleUntil.IsZero() || c.idleForever:
		// The wait handed over by the goroutine that served the last request, or resumed by the
		// parker: that one takes it again if the wake brought no request (part of a TLS record).
		dl := c.idleUntil
		if !c.parkRefused {
			// idleHandOff, not a benchmark's shorter handOff: the wake's bytes are at hand, and
			// a wait that timed out at once would park the connection again before reading them.
			if wake := time.Now().Add(idleHandOff); c.idleForever || wake.Before(dl) {
				dl, handOff = wake, true
			}
		}
		c.rw.SetReadDeadline(dl)
	default:
		// Yield once before waiting: while the goroutines ready meanwhile run, the client often
		// sends its next request, which is then read at once, not after a read that finds nothing
		// (EAGAIN) and a round through the poller. With nothing else to run, it returns at once.
		runtime.Gosched()
		if !c.setState(http.StateIdle) {
			return awaitClose
		}
		now := time.Now()
		wake := now.Add(handOffAfter)
		if t := c.s.IdleTimeout; t > 0 && t <= handOffAfter {
			wake = now.Add(t)
		} else {
			handOff = true
			if t > 0 {
				c.idleUntil = now.Add(t)
			} else {
				c.idleForever = true
			}
		}
		c.rw.SetReadDeadline(wake)
		// A connection that has sent two requests or more likely sends the next soon: it is read
		// at once, which saves the look (MSG_PEEK) when the request is there (a third of the time
		// under load), and holds the exchange's buffers only until idleHandOff. Others wait with
		// no buffer.
		readFirst = n >= 2 && c.waiter != nil
	}
	var err error
	if readFirst {
		c.x = getExchange()
		c.x.br.Reset(c.rw)
		_, err = c.x.br.Peek(1)
	} else if c.waiter != nil {
		err = c.waiter.wait()
		if err == nil {
			// The poller wakes for a connection the client has closed too: that one closes from
			// idle, as with net/http, without becoming active first. (This is the read the
			// request head needs.)
			c.x = getExchange()
			c.x.br.Reset(c.rw)
			_, err = c.x.br.Peek(1)
		}
	} else if m, rerr := c.rw.Read(c.first[:]); m == 0 {
		err = cmp.Or(rerr, io.EOF)
	}
	if err != nil {
		if c.x != nil {
			// Read first and nothing came, or the waiter was woken with nothing to read and the
			// read waited (a spurious wake, or a socket's earlier deadline: package sockio moves
			// read deadlines lazily). An idle connection holds no buffer.
			c.x.release()
			c.x = nil
		}
		if handOff && errors.Is(err, os.ErrDeadlineExceeded) && !c.s.shutting.Load() {
			return awaitHandOff
		}
		return awaitClose
	}
	c.idleUntil, c.idleForever = time.Time{}, false
	if !c.setState(http.StateActive) {
		return awaitClose
	}
	if n > 0 && c.s.ReadHeaderTimeout > 0 {
		c.rw.SetReadDeadline(time.Now().Add(c.s.ReadHeaderTimeout))
	} else if n > 0 {
		c.rw.SetReadDeadline(time.Time{})
	}
	if c.waiter == nil {
		c.x = getExchange()
		c.prefix = prefixReader{c: c}
		c.x.br.Reset(&c.prefix)
	}
	c.x.bw.Reset(c.rw)
	return awaitReady
}

// end closes c and tells ConnState: at the end of its loop, or, for a detached parked connection
// its client has closed or whose idle timeout has passed, in the parker (no goroutine is started
// to close it, and nothing of it is left in Go's hands that could block the close).
func (c *conn) end() {
	if c.x != nil {
		c.x.release()
		c.x = nil
	}
	c.rw.Close()
	c.s.forget(c)
	c.state.Store(int32(http.StateClosed))
	if c.s.ConnState != nil {
		c.s.ConnState(c.rw, http.StateClosed)
	}
}

// h2Preface reports whether the connection opens with the HTTP/2 client preface.
func (c *conn) h2Preface() bool {
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	for _, n := range []int{1, len("PRI * HTTP/2.0"), len(preface)} {
		// Two steps, as net/http: an HTTP/1 request shorter than the preface is not waited on
		// once its first bytes differ.
		got, err := c.x.br.Peek(n)
		if err != nil || string(got) != preface[:n] {
			return false
		}
	}
	return true
}

// handOverH2C gives the connection, with the bytes read from it so far, to H2C.
func (c *conn) handOverH2C() {
	x := c.x
	c.x = nil
	pre, _ := x.br.Peek(x.br.Buffered())
	rc := &replayConn{Conn: c.rw, pre: append([]byte(nil), pre...)}
	x.release()
	c.s.forget(c)
	c.state.Store(int32(http.StateHijacked))
	if c.s.ConnState != nil {
		c.s.ConnState(c.rw, http.StateHijacked)
	}
	c.rw.SetReadDeadline(time.Time{})
	c.s.H2C(rc)
}

// replayConn is a connection whose first reads return pre.
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// setState moves the connection to st, unless Shutdown closed it while idle.
func (c *conn) setState(st http.ConnState) bool {
	old := http.ConnState(c.state.Load())
	if old == http.StateClosed || !c.state.CompareAndSwap(int32(old), int32(st)) {
		return false
	}
	if old != st && c.s.ConnState != nil {
		c.s.ConnState(c.rw, st)
	}
	return true
}

// serveRequest reads one request and answers it. keep: the connection may carry another request.
func (c *conn) serveRequest() (keep, hijacked bool) {
	x := c.x
	x.reset(c)
	err := x.readHead(x.br, c.s.maxHeaderBytes())
	if err == nil {
		err = x.parse()
	}
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			c.refuse(re)
		}
		return false, false
	}
	if c.s.ReadHeaderTimeout > 0 && (x.chunked || x.req.ContentLength > 0) {
		// The body has no deadline, as in net/http. Without a body the head's deadline stays
		// until the wait for the next request replaces it: nothing is read until then (Hijack
		// clears it).
		c.rw.SetReadDeadline(time.Time{})
	}
	x.setBody()

	w := &x.resp
	if !c.runHandler(w, &x.req) {
		return false, w.hijacked
	}
	if w.hijacked {
		return false, true
	}
	w.finish()
	if w.closeAfter || w.werr != nil || c.s.shutting.Load() {
		if w.werr == nil && x.body.unread() {
			c.lingerClose()
		}
		return false, false
	}
	if !x.body.drain() {
		if x.body.err == nil {
			// Too large to discard: the rest may still be on its way.
			c.lingerClose()
		}
		return false, false
	}
	return true, false
}

// runHandler calls the handler; false if it panicked (the connection is then closed).
func (c *conn) runHandler(w *response, r *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler && c.s.Log != nil {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.Log.Error("panic serving a request", "client", c.remote, "panic", fmt.Sprint(v), "stack", string(buf))
			}
			if !w.hijacked && w.werr == nil {
				w.c.x.bw.Flush()
			}
		}
	}()
	c.s.Handler.ServeHTTP(w, r)
	return true
}

// refuse answers a request whose head was refused, and the connection is then closed.
func (c *conn) refuse(re *requestError) {
	body := fmt.Sprintf("%d %s: %s", re.status, http.StatusText(re.status), re.msg)
	c.rw.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.rw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		re.status, http.StatusText(re.status), len(body), body)
	c.lingerClose()
}

// lingerClose closes the connection after its last response without losing that response to a
// reset: it sends FIN, reads (and drops) what the client still sends for up to half a second.
func (c *conn) lingerClose() {
	if cw, ok := c.rw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.rw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(c.rw, 256<<10))
}

// prefixReader reads the byte that woke its connection (first), then from the connection.
type prefixReader struct {
	c    *conn
	done bool
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if !p.done && len(b) > 0 {
		b[0] = p.c.first[0]
		p.done = true
		return 1, nil
	}
	return p.c.rw.Read(b)
}

var emptyRequest = new(http.Request)

// exchange is the state of one request being served: buffers, and the request and response
// reused from one request to the next.
type exchange struct {
	br   *bufio.Reader
	bw   *bufio.Writer
	head []byte
	strs []string

	req     http.Request
	url     url.URL
	header  http.Header
	chunked bool
	expect  bool
	close   bool // the client asked to close the connection after this request
	body    body
	resp    response
	hold    [holdBack]byte
}

// writeBufSize is the response buffer of a request in flight. Buffers are held only while a
// request is served, so it can be large: a response header and a 16 KiB body go out in one write
// (with 4 KiB, in two).
const writeBufSize = 32 << 10

var exchanges = sync.Pool{New: func() any {
	x := &exchange{
		br:     bufio.NewReaderSize(nil, 4<<10),
		bw:     bufio.NewWriterSize(nil, writeBufSize),
		header: make(http.Header, 8),
	}
	x.resp.header = make(http.Header, 8)
	return x
}}

func getExchange() *exchange { return exchanges.Get().(*exchange) }

// release returns the exchange to the pool, dropping what an unusual request made it hold.
func (x *exchange) release() {
	x.br.Reset(nil)
	x.bw.Reset(nil)
	if cap(x.head) > 16<<10 {
		x.head = nil
	}
	if cap(x.strs) > 64 {
		x.strs = nil
	}
	x.req = http.Request{}
	clear(x.header)
	clear(x.resp.header)
	x.resp = response{header: x.resp.header}
	x.body = body{}
	exchanges.Put(x)
}

// reset readies the exchange for the next request on c.
func (x *exchange) reset(c *conn) {
	clear(x.header)
	clear(x.resp.header)
	x.strs = x.strs[:0]
	x.chunked, x.expect, x.close = false, false, false
	if c.base == nil {
		c.base = emptyRequest.WithContext(c)
	}
	x.req = *c.base
	x.req.Header = x.header
	x.req.RemoteAddr = c.remote
	x.req.TLS = c.tls
	x.resp = response{c: c, req: &x.req, header: x.resp.header, status: 0}
}
