package upstream

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	connReadBufSize  = 4 << 10
	connWriteBufSize = 4 << 10
)

// aLongTimeAgo is a deadline in the past, used to make blocked I/O on a
// connection return immediately.
var aLongTimeAgo = time.Unix(1, 0)

var errHeaderTooLarge = errors.New("response header too large")

// conn is one backend connection. Its buffered reader and writer live as long
// as the connection, so a keep-alive exchange allocates no buffers. A conn is
// owned by exactly one goroutine at a time (the pool hands it out); the only
// concurrent access is abort, called from a context.AfterFunc goroutine.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader // reads through conn.Read (header size limit)
	bw   *bufio.Writer
	pool *Pool

	idleSince time.Time // when it was put in the idle list
	reused    bool      // completed at least one exchange

	// limit is the number of bytes Read may still return while limiting is
	// set (during the response header read).
	limit    int64
	limiting bool

	// rearm: the next Read sets the read deadline to headerEnd first (zero: none), for the rest
	// of a response header whose first byte came in a slice of the wait (readResponse).
	rearm     bool
	headerEnd time.Time

	// Deadline bookkeeping: whether a read/write deadline is currently set and
	// must be cleared before the conn can be reused.
	readDeadline  bool
	writeDeadline bool

	aborted atomic.Bool
	abortFn func() // c.abort, bound once so AfterFunc registration does not allocate it

	// raw is the socket used by the liveness check; nil when unavailable.
	raw    syscall.RawConn
	probe  func(fd uintptr) bool // c.probeFd, bound once
	dead   bool                  // result of the last probe
	probeB [1]byte

	scratch [32]byte // for formatting integers

	// The response being read (readResponseHead): reused from one exchange to the next.
	head   []byte
	header http.Header
	resp   http.Response
	body   respBody
}

// maxReusedHeader is the most header fields a response may have for its header map to be kept
// for the connection's next response: a map grown by an unusual response is dropped, not kept.
const maxReusedHeader = 32

func newConn(nc net.Conn, p *Pool) *conn {
	c := &conn{nc: nc, pool: p}
	c.br = bufio.NewReaderSize(c, connReadBufSize)
	c.bw = bufio.NewWriterSize(nc, connWriteBufSize)
	c.abortFn = c.abort
	under := nc
	if tc, ok := nc.(*tls.Conn); ok {
		under = tc.NetConn()
	}
	if sc, ok := under.(syscall.Conn); ok && canProbe {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			c.probe = c.probeFd
		}
	}
	return c
}

// Read implements io.Reader for the buffered reader, enforcing the response
// header size limit while limiting is set.
func (c *conn) Read(p []byte) (int, error) {
	if !c.limiting {
		return c.nc.Read(p)
	}
	if c.rearm {
		c.rearm = false
		if !c.setReadDeadline(c.headerEnd) {
			return 0, errAborted
		}
	}
	if c.limit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	return n, err
}

// abort makes any blocked or future I/O on the connection fail at once. It is
// run by context.AfterFunc when the request context is done.
func (c *conn) abort() {
	c.aborted.Store(true)
	_ = c.nc.SetDeadline(aLongTimeAgo)
}

// setReadDeadline sets (or, for the zero time, clears) the read deadline and
// reports false if the exchange was aborted meanwhile: abort's past deadline
// must not be overwritten by a later one.
func (c *conn) setReadDeadline(t time.Time) bool {
	_ = c.nc.SetReadDeadline(t)
	c.readDeadline = !t.IsZero()
	return !c.aborted.Load()
}

// setWriteDeadline is setReadDeadline for writes.
func (c *conn) setWriteDeadline(t time.Time) bool {
	_ = c.nc.SetWriteDeadline(t)
	c.writeDeadline = !t.IsZero()
	return !c.aborted.Load()
}

// clearDeadlines removes any deadline left by the exchange so the conn can
// sit idle. It reports false if the exchange was aborted.
func (c *conn) clearDeadlines() bool {
	switch {
	case c.readDeadline && c.writeDeadline:
		_ = c.nc.SetDeadline(time.Time{})
	case c.readDeadline:
		_ = c.nc.SetReadDeadline(time.Time{})
	case c.writeDeadline:
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	c.readDeadline, c.writeDeadline = false, false
	return !c.aborted.Load()
}

// alive reports whether an idle connection still looks usable: the backend
// has not closed it and has not sent anything unsolicited. It costs one
// non-blocking read system call; without access to the socket it reports true
// and the stale-connection retry in Forward is the only safety net.
func (c *conn) alive() bool {
	if c.raw == nil {
		return true
	}
	c.dead = false
	if err := c.raw.Read(c.probe); err != nil {
		return false
	}
	return !c.dead
}

func (c *conn) close() {
	_ = c.nc.Close()
}
