package l4

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one proxied client connection: the client side (its TCP connection, and the TLS one over it
// on Tls listeners), and once connected the backend side.
type conn struct {
	clientRaw net.Conn // what was accepted

	mu         sync.Mutex
	backendRaw net.Conn           // the backend TCP connection, once dialled
	dialCancel context.CancelFunc // stops a dial in progress
	aborted    bool

	// Accounting: the server counted against (handler goroutine only).
	stats *serverStats

	// Idle timeout, shared by both directions.
	idle time.Duration
	last atomic.Int64 // nanoseconds since epoch of the last byte moved, either way
}

// epoch is the origin of conn.last: a monotonic clock reading, so that activity times are cheap
// integers and deadlines derived from them are immune to wall-clock steps.
var epoch = time.Now()

func (c *conn) touch() { c.last.Store(int64(time.Since(epoch))) }

// idleDeadline is when the connection becomes idle if nothing moves before.
func (c *conn) idleDeadline() time.Time { return epoch.Add(time.Duration(c.last.Load()) + c.idle) }

// idleExpired tells whether nothing moved for the idle timeout.
func (c *conn) idleExpired() bool { return !time.Now().Before(c.idleDeadline()) }

// abort closes both sides at once (and stops a dial in progress); blocked reads and writes return.
// The TCP connections are closed rather than the TLS ones: no close_notify that could block.
// It reports whether this call was the first.
func (c *conn) abort() bool {
	c.mu.Lock()
	first := !c.aborted
	c.aborted = true
	b, cancel := c.backendRaw, c.dialCancel
	c.mu.Unlock()
	c.clientRaw.Close()
	if b != nil {
		b.Close()
	}
	if cancel != nil {
		cancel()
	}
	return first
}

// setBackend records the backend TCP connection so that abort reaches it; false (and the
// connection closed) if the connection was aborted already.
func (c *conn) setBackend(b net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		b.Close()
		return false
	}
	c.backendRaw = b
	return true
}

// setDialCancel records the cancel function of a dial; false if the connection was aborted already.
func (c *conn) setDialCancel(cancel context.CancelFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.dialCancel = cancel
	return true
}

func (c *conn) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// errIdle ends a connection whose idle timeout passed.
var errIdle = errors.New("idle timeout")

// side is one end of a proxied connection: the connection data is read from and written to, and the
// TCP connection under it (the same one for plain TCP).
type side struct {
	conn net.Conn
	raw  net.Conn
}

// closeWrite passes a half-close on: close_notify for TLS, then FIN.
func (s side) closeWrite() {
	if tc, ok := s.conn.(*tls.Conn); ok {
		tc.CloseWrite()
	}
	if cw, ok := s.raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// relay copies both ways until both directions ended (each passing its EOF on as a half-close), or
// until an error or the idle timeout in either direction ends the whole connection.
func (c *conn) relay(p *Proxy, client, backend side, idle time.Duration) {
	c.idle = idle
	c.touch()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.finishDirection(p, backend, client)
	}()
	c.finishDirection(p, client, backend)
	<-done
}

// finishDirection copies src to dst; anything but a clean EOF (an error, the idle timeout, a panic)
// aborts the whole connection, which ends the other direction too.
func (c *conn) finishDirection(p *Proxy, src, dst side) {
	defer p.recoverPanic(c, "relay")
	err := c.copyDirection(src, dst, p.splice)
	if err == nil {
		return
	}
	if c.abort() && err == errIdle {
		p.log.Debug("layer-4 connection idle; closed", "client", c.clientRaw.RemoteAddr().String(), "idle", c.idle)
	}
}

// copyDirection copies src to dst until src's EOF, passed on to dst as a half-close (nil), or an
// error. Plain TCP on both sides is spliced where the kernel can (see splice_linux.go). A TLS side
// cannot be: its records are encrypted and decrypted in user space (Go has no kernel TLS), so those
// connections go through a pooled 32 KiB buffer, held while a read waits (64 KiB per connection).
func (c *conn) copyDirection(src, dst side, splice bool) error {
	if splice {
		s, sok := src.conn.(*net.TCPConn)
		d, dok := dst.conn.(*net.TCPConn)
		if sok && dok {
			if handled, err := c.splice(s, d); handled {
				return err
			}
		}
	}
	return c.copyBuffered(src, dst)
}

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// copyBuffered copies through a pooled buffer.
//
// Idle timeout: every successful read stamps the connection's shared last-activity time (one clock
// read and one atomic store: no timer work per read). The read deadline is set only when the copy
// starts and when it fires: then, if the other direction moved bytes meanwhile, the deadline moves
// to that activity plus the timeout and the read is retried (a read timeout leaves a *net.TCPConn
// and a *tls.Conn usable); otherwise the connection has been idle for the whole timeout and ends.
// So a quiet direction does not end a connection that is busy the other way, and a quiet connection
// ends within timer precision of its idle timeout.
//
// A write blocked because the peer does not read moves nothing: if it stays blocked for the whole
// timeout, the connection counts as idle.
func (c *conn) copyBuffered(src, dst side) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	if err := src.conn.SetReadDeadline(c.idleDeadline()); err != nil {
		return err
	}
	for {
		n, err := src.conn.Read(buf)
		if n > 0 {
			c.touch()
			if _, werr := dst.conn.Write(buf[:n]); werr != nil {
				return werr
			}
			c.touch()
		}
		switch {
		case err == nil:
		case err == io.EOF:
			dst.closeWrite()
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if c.idleExpired() {
				return errIdle
			}
			if err := src.conn.SetReadDeadline(c.idleDeadline()); err != nil {
				return err
			}
		default:
			return err
		}
	}
}
