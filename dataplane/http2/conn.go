package http2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Flow-control windows this server grants: per stream, and for the connection (raised from
// RFC 9113's 65,535 by a WINDOW_UPDATE right after the server's SETTINGS).
const (
	streamWindow = 256 << 10
	connWindow   = 1 << 20
	// maxFrameSize is the largest frame this server reads (SETTINGS_MAX_FRAME_SIZE, the default),
	// and the largest DATA frame it writes.
	maxFrameSize = 16 << 10
	// initialPeerWindow is a peer's window until its SETTINGS say otherwise.
	initialPeerWindow = 65535
)

// conn is one client connection. Its goroutine reads and handles frames (serve); handlers write
// their own frames under wmu.
type conn struct {
	s       *Server
	nc      net.Conn
	ctx     context.Context
	ctxDone bool // ctx can be done (streams' contexts follow it)
	remote  string
	tls     *tls.ConnectionState // nil in the clear
	r       io.Reader            // what fr reads from
	fr      *http2.Framer        // reads in serve only; writes under wmu
	canon   map[string]string    // header names seen here, lower case to canonical (serve only)

	// The write side, under wmu. bw is taken from a pool for a burst of writes and given back
	// by the writer that flushes it.
	wmu     sync.Mutex
	writers atomic.Int32 // goroutines in or waiting for the write section
	bw      *bufio.Writer
	henc    *hpack.Encoder
	hr      *headerReader // the request header blocks' decoder
	hbuf    []byte        // what henc writes
	fields  *fieldCache   // encodings of fields henc wrote as indexes (writeField); nil while idle
	open    atomic.Int32  // streams open (len(streams), read outside mu)
	werr    error         // the first write error: the connection is dead
	writeBy time.Time     // the write deadline
	closing bool          // the write deadline is the close's (goAwayLinger), not to be extended
	sw      swapWriter

	frameSize atomic.Uint32 // the client's SETTINGS_MAX_FRAME_SIZE

	// Stream and flow-control state, under mu.
	mu          sync.Mutex
	streams     map[uint32]*stream
	maxID       uint32    // the highest stream id the client has opened
	sendWindow  int64     // the connection's send window
	peerWindow  int32     // the client's SETTINGS_INITIAL_WINDOW_SIZE
	recvWindow  int64     // what the client may still send on the connection
	recvUnacked int64     // bytes consumed but not yet given back in a WINDOW_UPDATE
	waiting     int       // streams waiting for the connection's send window
	handlers    int       // handlers running (streams reset by the client may still have one)
	queued      []*stream // streams waiting for a handler: handlers of reset streams hold their places
	goingAway   bool      // GOAWAY sent, or to be sent after the server's preface: no new streams
	started     bool      // the server's preface is written: a GOAWAY may follow
	closed      bool      // the connection is closed
	gotSettings bool      // the client's first SETTINGS came
	prefaceBy   time.Time // when the client's preface and first SETTINGS are due
	lingerBy    time.Time // going away with no stream left: when the connection closes
}

// swapWriter is the Framer's writer: the connection's current pooled bufio.Writer.
type swapWriter struct{ c *conn }

func (w swapWriter) Write(p []byte) (int, error) { return w.c.bw.Write(p) }

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, streams: map[uint32]*stream{}, sendWindow: initialPeerWindow,
		peerWindow: initialPeerWindow, recvWindow: connWindow}
	c.sw = swapWriter{c}
	c.frameSize.Store(maxFrameSize)
	s.mu.Lock()
	if s.work == nil {
		s.work = make(chan *stream)
	}
	s.mu.Unlock()
	var r io.Reader = nc
	if _, ok := nc.(*tls.Conn); !ok { // tls.Conn buffers its records: frames are read from it directly
		r = bufio.NewReaderSize(nc, 4<<10)
	}
	c.r = r
	c.fr = http2.NewFramer(c.sw, r)
	c.hr = newHeaderReader(s.maxHeaderBytes())
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.SetReuseFrames()
	c.henc = hpack.NewEncoder((*appendWriter)(&c.hbuf))
	c.remote = nc.RemoteAddr().String()
	c.ctx = context.Background()
	if s.ConnContext != nil {
		c.ctx = s.ConnContext(c.ctx, nc)
	}
	c.ctxDone = c.ctx.Done() != nil
	return c
}

// appendWriter appends what is written to the slice.
type appendWriter []byte

func (w *appendWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
}

// goAwayLinger is how long a connection that has sent GOAWAY, and has no stream left, waits for
// the client to close first.
const goAwayLinger = time.Second

// prefaceTimeout bounds the wait for the preface when the server has no ReadHeaderTimeout.
const prefaceTimeout = 10 * time.Second

// serve reads and handles the connection's frames until it closes.
func (c *conn) serve() {
	defer c.end()
	c.prefaceBy = time.Now().Add(orDefault(c.s.ReadHeaderTimeout, prefaceTimeout))
	c.nc.SetReadDeadline(c.prefaceBy)
	if tc, ok := c.nc.(*tls.Conn); ok {
		// Handshaken already when it comes from the worker's acceptor; not from a tls.Listener.
		if err := tc.Handshake(); err != nil {
			return
		}
		st := tc.ConnectionState()
		c.tls = &st
	}
	// The server's preface: SETTINGS, and a WINDOW_UPDATE that opens the connection's window.
	err := c.write(func() error {
		if err := c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.maxStreams()},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.s.maxHeaderBytes()},
		); err != nil {
			return err
		}
		return c.fr.WriteWindowUpdate(0, connWindow-initialPeerWindow)
	})
	if err != nil {
		return
	}
	c.mu.Lock()
	c.started = true
	away := c.goingAway
	c.goingAway = false
	c.mu.Unlock()
	if away {
		c.goAway() // Shutdown came before the preface was out
	}
	if !c.readPreface() {
		return
	}
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.process(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			c.resetStream(se.StreamID, se.Code)
		case errors.As(err, &ce):
			c.fail(http2.ErrCode(ce), err)
			return
		case errors.Is(err, http2.ErrFrameTooLarge):
			c.fail(http2.ErrCodeFrameSize, err)
			return
		case isTimeout(err) && c.idleTimedOut():
			c.goAway() // then linger, as after any GOAWAY
		default:
			return // the client went away, or the connection was closed
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readPreface reads the client's connection preface; the SETTINGS frame that must follow is
// checked by process.
func (c *conn) readPreface() bool {
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.r, buf[:]); err != nil {
		return false
	}
	if string(buf[:]) != http2.ClientPreface {
		c.fail(http2.ErrCodeProtocol, errors.New("bad client preface"))
		return false
	}
	return true
}

// setDeadlineLocked sets the read deadline for the connection's state: the preface's until the
// client's first SETTINGS; none while a stream is open; the linger once it is going away and
// has no stream left; the idle timeout (if any) otherwise. With mu held.
func (c *conn) setDeadlineLocked() {
	var t time.Time
	switch {
	case c.closed:
		return
	case c.goingAway && c.started && len(c.streams) == 0:
		if c.lingerBy.IsZero() {
			c.lingerBy = time.Now().Add(goAwayLinger)
		}
		t = c.lingerBy
	case !c.gotSettings:
		t = c.prefaceBy
	case len(c.streams) > 0:
	case c.s.IdleTimeout > 0:
		t = time.Now().Add(c.s.IdleTimeout)
	}
	c.nc.SetReadDeadline(t)
}

// idleTimedOut reports whether a read that timed out was the idle timeout's: the others (the
// preface's, the linger's) end the connection.
func (c *conn) idleTimedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gotSettings && !c.goingAway && len(c.streams) == 0
}

// process handles one frame.
func (c *conn) process(f http2.Frame) error {
	if !c.gotSettings {
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.mu.Lock()
		c.gotSettings = true
		c.setDeadlineLocked()
		c.mu.Unlock()
	}
	switch f := f.(type) {
	case *http2.HeadersFrame:
		b, err := c.hr.read(c.fr, f)
		if err == nil {
			err = c.processHeaders(b)
		}
		c.hr.done()
		return err
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		data := f.Data
		return c.write(func() error { return c.fr.WritePing(true, data) })
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
		return nil
	case *http2.GoAwayFrame:
		c.goAway()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		return nil // unknown frame types are ignored (RFC 9113 5.5)
	}
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	var tableSize uint32
	var setTable bool
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			return c.setPeerWindow(int32(s.Val))
		case http2.SettingMaxFrameSize:
			c.frameSize.Store(s.Val)
		case http2.SettingHeaderTableSize:
			tableSize, setTable = s.Val, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.write(func() error {
		if setTable {
			c.henc.SetMaxDynamicTableSizeLimit(tableSize)
			c.dropFieldCache() // the size update must begin the next block: through henc
		}
		return c.fr.WriteSettingsAck()
	})
}

// setPeerWindow applies a new SETTINGS_INITIAL_WINDOW_SIZE to every open stream.
func (c *conn) setPeerWindow(v int32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := int64(v) - int64(c.peerWindow)
	c.peerWindow = v
	for _, st := range c.streams {
		st.sendWindow += delta
		if st.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		st.cond.Broadcast()
	}
	return nil
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		if c.waiting > 0 {
			for _, st := range c.streams {
				st.cond.Broadcast()
			}
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
		}
		return nil // a closed stream: frames in flight are expected
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.cond.Broadcast()
	return nil
}

func (c *conn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		idle := f.StreamID > c.maxID
		c.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	inc := c.closeStreamLocked(st, errReset)
	c.mu.Unlock()
	c.windowUpdate(inc)
	return nil
}

// processData hands a DATA frame's payload to its stream's request body.
func (c *conn) processData(f *http2.DataFrame) error {
	n := int64(f.Length) // flow control counts the padding too
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[f.StreamID]
	if st == nil || st.remoteDone {
		closed := f.StreamID <= c.maxID
		c.mu.Unlock()
		c.refund(n) // the connection's window only: the stream is gone
		if !closed {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWindow {
		c.mu.Unlock()
		c.refund(n)
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.recvWindow -= n
	data := f.Data()
	pad := n - int64(len(data))
	st.received += int64(len(data))
	if cl := st.declared; cl >= 0 && (st.received > cl || f.StreamEnded() && st.received != cl) {
		c.mu.Unlock()
		c.refund(n)
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	}
	dropped := pad
	if st.bodyClosed {
		dropped = n // nobody will read it: give it all back
	} else if len(data) > 0 {
		st.in = append(st.in, data...)
	}
	if f.StreamEnded() {
		st.remoteDone = true
		if st.inErr == nil {
			st.inErr = io.EOF
		}
	}
	st.cond.Broadcast()
	c.mu.Unlock()
	if dropped > 0 {
		c.consumed(st, dropped)
	}
	return nil
}

// refund gives n bytes of the connection's window back (data of a stream that is gone).
func (c *conn) refund(n int64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	inc := c.ackLocked(n)
	c.mu.Unlock()
	c.windowUpdate(inc)
}

// ackLocked counts n bytes consumed from the connection's window and returns the increment to
// send, once half the window has been consumed.
func (c *conn) ackLocked(n int64) int64 {
	c.recvUnacked += n
	if c.recvUnacked < connWindow/2 && c.recvUnacked < c.recvWindow {
		// Given back later: the client may still send as much as is waiting here. (Once it
		// may send less, it could stall: the rest of the window may be held by streams whose
		// handlers do not read.)
		return 0
	}
	inc := c.recvUnacked
	c.recvUnacked = 0
	c.recvWindow += inc
	return inc
}

// consumed gives back the window of n bytes of st's body that were read (or dropped).
func (c *conn) consumed(st *stream, n int64) {
	c.mu.Lock()
	connInc := c.ackLocked(n)
	var streamInc int64
	if !st.remoteDone && !st.closed {
		st.recvUnacked += n
		if st.recvUnacked >= streamWindow/2 || st.recvUnacked >= st.recvWindow {
			streamInc = st.recvUnacked
			st.recvUnacked = 0
			st.recvWindow += streamInc
		}
	}
	c.mu.Unlock()
	if connInc == 0 && streamInc == 0 {
		return
	}
	id := st.id
	c.write(func() error {
		if connInc > 0 {
			if err := c.fr.WriteWindowUpdate(0, uint32(connInc)); err != nil {
				return err
			}
		}
		if streamInc > 0 {
			return c.fr.WriteWindowUpdate(id, uint32(streamInc))
		}
		return nil
	})
}

// errReset ends a stream that the client reset; errConnClosed those of a closed connection.
var (
	errReset      = errors.New("http2: stream reset by the client")
	errConnClosed = errors.New("http2: connection closed")
	errStreamGone = errors.New("http2: stream closed")
)

// closeStreamLocked ends st: its body reads and writes fail with err, its context is canceled,
// and it leaves the connection's streams. With mu held. It returns the increment of the
// connection's window to send (what st had received and nobody will read), as mu must be
// released before writing.
func (c *conn) closeStreamLocked(st *stream, err error) (inc int64) {
	if st.closed {
		return 0
	}
	st.closed = true
	st.gone.Store(true)
	if st.inErr == nil || st.inErr == io.EOF && len(st.in) > 0 {
		st.inErr = err
	}
	st.outErr = err
	unread := int64(len(st.in))
	st.in = st.in[:0]
	delete(c.streams, st.id)
	c.open.Add(-1)
	st.cancelContext(context.Canceled)
	st.cond.Broadcast()
	if unread > 0 {
		inc = c.ackLocked(unread)
	}
	c.streamsChanged()
	return inc
}

// windowUpdate sends a WINDOW_UPDATE for the connection, if inc is not 0.
func (c *conn) windowUpdate(inc int64) {
	if inc > 0 {
		c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(inc)) })
	}
}

// streamsChanged sets the read deadline when the last stream has ended: the idle timeout, or,
// going away, the linger. With mu held.
//
// The linger: after its GOAWAY, the reader goes on a moment (answering PINGs, refusing new
// streams), so that the client reads the GOAWAY before the close, and the close does not reset
// what it sent since.
func (c *conn) streamsChanged() {
	if len(c.streams) == 0 {
		c.setDeadlineLocked()
	}
}

// resetStream sends RST_STREAM for id and ends the stream, if it is open.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	if id > c.maxID && id%2 == 1 {
		c.maxID = id // a stream that failed as it opened is closed, not idle
	}
	var inc int64
	if st := c.streams[id]; st != nil {
		inc = c.closeStreamLocked(st, fmt.Errorf("%w (%v)", errStreamGone, code))
	}
	c.mu.Unlock()
	c.write(func() error {
		if inc > 0 {
			if err := c.fr.WriteWindowUpdate(0, uint32(inc)); err != nil {
				return err
			}
		}
		return c.fr.WriteRSTStream(id, code)
	})
}

// fail ends the connection on a connection error: GOAWAY with code, then close.
func (c *conn) fail(code http2.ErrCode, err error) {
	if c.s.Log != nil {
		c.s.Log.Debug("http2 connection error", "remote", c.remote, "code", code, "err", err)
	}
	c.mu.Lock()
	c.goingAway = true
	last := c.maxID
	c.mu.Unlock()
	c.write(func() error {
		c.closeWriteDeadline() // the connection ends: no write waits longer
		return c.fr.WriteGoAway(last, code, nil)
	})
	// Read what the client still sends for a moment, so that closing with unread data does not
	// reset the connection before the GOAWAY reaches it.
	c.nc.SetReadDeadline(time.Now().Add(goAwayLinger))
	io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
}

// goAway starts a graceful close: GOAWAY (NO_ERROR) with the last stream id this connection will
// serve; the connection closes once its streams have ended.
func (c *conn) goAway() {
	c.mu.Lock()
	if c.goingAway || c.closed {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	if !c.started {
		c.mu.Unlock()
		return // serve sends it after the server's preface, which must come first
	}
	last := c.maxID
	idle := len(c.streams) == 0
	c.mu.Unlock()
	c.write(func() error {
		if idle {
			// Nothing is left to send: a client that does not read must not hold the connection.
			c.closeWriteDeadline()
		}
		return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
	})
	c.mu.Lock()
	c.streamsChanged()
	c.mu.Unlock()
}

// end closes the connection and ends its streams.
func (c *conn) end() {
	c.mu.Lock()
	c.closed = true
	for _, st := range c.streams {
		c.closeStreamLocked(st, errConnClosed)
	}
	c.mu.Unlock()
	c.nc.Close()
	c.s.forget(c)
	if c.s.ConnState != nil {
		c.s.ConnState(c.nc, http.StateClosed)
	}
}

// write runs fn, which writes frames, in the write section; the last writer out flushes.
func (c *conn) write(fn func() error) error {
	c.writers.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var gone bool
	if c.werr == nil {
		if c.bw == nil {
			c.bw = getWriter(c.nc)
		}
		c.extendWriteDeadline()
		if err := fn(); err == errGone {
			gone = true // the stream's, not the connection's
		} else {
			c.werr = err
		}
	}
	if err := c.endWrite(); err != nil || !gone {
		return err
	}
	return errGone
}

// extendWriteDeadline moves the write deadline to the write timeout from now, when that moves it
// by a second (or a tenth of the timeout) or more: a client that takes longer than that to take
// what one write section writes is gone. In the write section.
func (c *conn) extendWriteDeadline() {
	if c.closing {
		return
	}
	d := orDefault(c.s.WriteTimeout, sendTimeout)
	if t := time.Now().Add(d); t.Sub(c.writeBy) >= min(time.Second, d/10) {
		c.writeBy = t
		c.nc.SetWriteDeadline(t)
	}
}

// sendTimeout is the default WriteTimeout.
const sendTimeout = 60 * time.Second

// closeWriteDeadline bounds the writes of a connection about to close by goAwayLinger. In the
// write section.
func (c *conn) closeWriteDeadline() {
	c.closing = true
	c.nc.SetWriteDeadline(time.Now().Add(goAwayLinger))
}

// errGone is what a write function returns, having written nothing, for a stream that was
// closed.
var errGone = errors.New("http2: stream gone")

// endWrite leaves the write section: the last writer flushes and gives back the buffer. With
// wmu held.
//
// Before it flushes, the last writer yields its processor once, keeping wmu: handlers that were
// ready to run (their backend's response came in the same poll) queue their frames behind it,
// and the last of them flushes all in one write. With 64 streams in flight on 16 connections
// (h2load -c16 -m4), the client writes fall from 0.77 to 0.23 a response (strace -c), and the
// CPU a request by about a tenth. With nothing else to run, Gosched returns at once.
func (c *conn) endWrite() error {
	if c.writers.Load() == 1 && c.bw != nil && c.bw.Buffered() > 0 && c.werr == nil {
		runtime.Gosched()
	}
	if c.writers.Add(-1) == 0 && c.bw != nil {
		if c.werr == nil {
			c.werr = c.bw.Flush()
		}
		putWriter(c.bw)
		c.bw = nil
		if c.open.Load() == 0 {
			c.dropFieldCache() // an idle connection keeps no cache (nor the strings it holds)
		}
	}
	if c.werr != nil {
		c.nc.Close() // the reader stops, and ends the streams
	}
	return c.werr
}

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func getWriter(w io.Writer) *bufio.Writer {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}
