package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// tunnelBufSize is the per-direction copy buffer of an upgraded connection.
// A tunnel (typically a WebSocket) is long-lived and mostly idle and holds its
// two buffers for its whole life, so they are smaller than the body copy
// buffer; 16 KiB is the largest TLS record, so TLS peers still get a full
// record per read.
const tunnelBufSize = 16 << 10

var tunnelBufPool = sync.Pool{New: func() any {
	b := make([]byte, tunnelBufSize)
	return &b
}}

// Upgrade forwards a request that asks for a protocol upgrade (WebSocket, or
// any other protocol named in an Upgrade header) and, if the backend switches
// protocols, connects the client and backend connections into a
// bidirectional byte tunnel that runs until it ends. It runs in the calling
// goroutine (plus one goroutine for the client-to-backend direction while the
// tunnel is open).
//
// upgrade is the value of the client's Upgrade header (for example
// "websocket"). The caller strips hop-by-hop headers, including Connection and
// Upgrade, from out as for Forward and passes the Upgrade value here. out is
// interpreted as by Forward, except that Expect: 100-continue is not
// performed and out.Close is ignored; it must carry the incoming request's
// protocol version (out.ProtoMajor/ProtoMinor), because only an HTTP/1.1
// client connection can be taken over. The request is sent on a newly dialed
// connection, never a pooled one, with "Connection: Upgrade" and "Upgrade:
// <upgrade>" added; that connection never returns to the pool. A request body,
// if any, is sent before the response is read, as in Forward. timeout bounds
// the wait for the response header as in Forward; it does not apply to the
// tunnel.
//
// If the request cannot be upgraded (not HTTP/1.1, or w cannot be hijacked),
// Upgrade returns ErrUpgradeNotSupported before contacting the backend, with
// status 0 and nothing written.
//
// If the backend answers with anything but 101 Switching Protocols, that
// response is forwarded to w exactly as Forward would and its status returned
// (errors as for Forward; the backend connection is then closed). No hijack
// takes place, and the client connection remains an ordinary HTTP connection.
//
// If the backend answers 101 with an Upgrade header naming only protocols the
// client offered, the client connection is hijacked from w and the 101 is
// written to it: "HTTP/1.1 101 Switching Protocols", the header fields the
// caller set in w.Header() and those of the backend's 101 without hop-by-hop
// fields (and fields named in Connection), then "Connection: Upgrade" and the
// backend's Upgrade value. A 101 switching to a protocol the client did not
// offer is treated as a bad response (ErrBadResponse, status 0, nothing
// written). Then bytes are copied both ways, starting with any bytes that were
// already buffered: frames the backend sent right behind its 101, and bytes
// the client sent right behind its request. When one direction reaches EOF,
// the write side of its destination is shut down (half-close, CloseWrite) and
// the other direction goes on; when both have ended, or an I/O error occurs,
// or ctx is done, both connections are closed and Upgrade returns 101.
//
// With status 101, the client connection has been taken over and is closed
// when Upgrade returns: the caller must not use w any more. The error is nil
// if the tunnel ended by both sides closing, otherwise it describes why it
// ended: ErrCanceled (ctx was done), ErrRequestBody (reading from the client
// failed), ErrClientWrite (writing to the client failed) or ErrBadResponse
// (reading from or writing to the backend failed), wrapping the cause. It is
// for logging only.
//
// Cancellation of ctx ends a running tunnel promptly (any blocked read or
// write fails at once); this is how connection draining ends tunnels at its
// deadline. Note that a hijacked connection is invisible to the HTTP server
// (net/http or dataplane/http1):
// Shutdown neither waits for it nor cancels the request context, so the
// context passed here should be one the drain logic can cancel. Pool.Close
// does not end tunnels. There is no idle timeout on a tunnel.
//
// track, if not nil, is called with true just before the client connection is
// hijacked (so that the connection is counted by the caller from the moment
// the server stops counting it) and with false after both connections have
// been closed, exactly once each, in the calling goroutine. It is not called
// at all if the backend did not switch protocols.
func (p *Pool) Upgrade(ctx context.Context, w http.ResponseWriter, out *http.Request, upgrade string,
	timeout time.Duration, track func(open bool)) (int, error) {
	if ctx.Err() != nil {
		return 0, canceled(p.addr, ctx)
	}
	if out.ProtoMajor != 1 || out.ProtoMinor < 1 {
		return 0, wrap(p.addr, ErrUpgradeNotSupported,
			fmt.Sprintf("HTTP/%d.%d request", out.ProtoMajor, out.ProtoMinor), nil)
	}
	if !canHijack(w) {
		return 0, wrap(p.addr, ErrUpgradeNotSupported, "ResponseWriter cannot be hijacked", nil)
	}
	upgrade = strings.Trim(upgrade, " \t")
	if upgrade == "" || !validHeaderValue(upgrade) {
		return 0, wrap(p.addr, ErrInvalidRequest, fmt.Sprintf("invalid Upgrade value %q", upgrade), nil)
	}
	var ri reqInfo
	if err := ri.init(out, p.addr); err != nil {
		return 0, wrap(p.addr, ErrInvalidRequest, "", err)
	}
	ri.expect, ri.retryable, ri.upgrade = false, false, upgrade

	c, err := p.dial(ctx)
	if err != nil {
		return 0, err
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.abortFn)
	}
	resp, err := p.upgradeHandshake(ctx, c, out, &ri, timeout)
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
		// Upgrade refused: an ordinary response, forwarded as by Forward.
		status, _, _, err := p.respond(ctx, c, w, out, resp, false)
		if stop != nil && !stop() && err != nil {
			err = canceled(p.addr, ctx)
		}
		c.close()
		return status, err
	}
	if stop != nil && !stop() {
		// The abort ran: the connection has a past deadline.
		c.close()
		return 0, canceled(p.addr, ctx)
	}
	if err == nil && !upgradeOffered(upgrade, resp.Header["Upgrade"]) {
		err = wrap(p.addr, ErrBadResponse, fmt.Sprintf("101 switches to %q, client offered %q",
			strings.Join(resp.Header["Upgrade"], ", "), upgrade), nil)
	}
	if err != nil {
		c.close()
		return 0, err
	}
	c.clearDeadlines()
	return p.tunnel(ctx, c, w, resp, track)
}

// upgradeHandshake sends the upgrade request on c and reads the response
// header, which may be a 101.
func (p *Pool) upgradeHandshake(ctx context.Context, c *conn, out *http.Request, ri *reqInfo,
	timeout time.Duration) (*http.Response, error) {
	if err := c.writeRequestHeader(out, ri); err != nil {
		return nil, wrap(p.addr, ErrInvalidRequest, "", err)
	}
	var bodyWrErr error // backend stopped accepting the body; it may have answered early
	if ri.kind <= bodyEmpty {
		if err := c.bw.Flush(); err != nil {
			return nil, p.connErr(ctx, c, "writing request", err)
		}
	} else {
		bufp := copyBufPool.Get().(*[]byte)
		bodyErr, connErr := c.writeBody(out, ri, *bufp, timeout)
		copyBufPool.Put(bufp)
		switch {
		case bodyErr != nil:
			return nil, wrap(p.addr, ErrRequestBody, "", bodyErr)
		case connErr != nil && (c.aborted.Load() || isTimeout(connErr)):
			return nil, p.connErr(ctx, c, "backend not reading request body", connErr)
		}
		bodyWrErr = connErr
	}
	resp, _, err := p.readResponse(ctx, c, out, timeout, false, true)
	switch {
	case err != nil && bodyWrErr != nil && !c.aborted.Load():
		return nil, wrap(p.addr, ErrBadResponse, "writing request body", bodyWrErr)
	case err != nil:
		return nil, err
	case bodyWrErr != nil && resp.StatusCode == http.StatusSwitchingProtocols:
		// Part of the body would end up in the new protocol.
		return nil, wrap(p.addr, ErrBadResponse, "switched protocols without reading the request body", bodyWrErr)
	}
	return resp, nil
}

// tunnel hijacks the client connection, sends it the 101 and copies bytes
// both ways until the tunnel ends. c has no deadlines.
func (p *Pool) tunnel(ctx context.Context, c *conn, w http.ResponseWriter, resp *http.Response,
	track func(open bool)) (int, error) {
	head := appendSwitchingHeader(make([]byte, 0, 512), w.Header(), resp.Header)
	if n := c.br.Buffered(); n > 0 {
		// The backend's first bytes in the new protocol, read together
		// with its 101: they go out in the same write.
		early, _ := c.br.Peek(n)
		head = append(head, early...)
	}

	if track != nil {
		track(true)
		defer track(false) // after the connections are closed below
	}
	cc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.close()
		return 0, wrap(p.addr, ErrUpgradeNotSupported, "hijacking the client connection", err)
	}
	var clientEarly []byte
	if n := brw.Reader.Buffered(); n > 0 {
		// Bytes the client sent right behind its request.
		clientEarly, _ = brw.Reader.Peek(n)
	}

	t := &tunnel{addr: p.addr, client: cc, backend: c.nc}
	stopCancel := context.AfterFunc(ctx, t.cancel)
	if _, err := cc.Write(head); err != nil {
		t.fail(wrap(p.addr, ErrClientWrite, "writing 101 response", err))
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			t.pipe(c.nc, cc, clientEarly, false)
		}()
		t.pipe(cc, c.nc, nil, true)
		<-done
	}
	stopCancel()
	return http.StatusSwitchingProtocols, t.close(ctx)
}

// tunnel is the state shared by the two copying directions of an upgraded
// connection.
type tunnel struct {
	addr            string
	client, backend net.Conn

	mu       sync.Mutex
	stopping bool  // torn down: I/O errors from now on are consequences, not causes
	canceled bool  // torn down because ctx was done
	err      error // first failure
}

// stop tears the tunnel down: blocked and future I/O on both connections
// fails at once. The first call decides the outcome (err, canceled).
func (t *tunnel) stop(err error, canceled bool) {
	t.mu.Lock()
	if t.stopping {
		t.mu.Unlock()
		return
	}
	t.stopping, t.err, t.canceled = true, err, canceled
	t.mu.Unlock()
	_ = t.client.SetDeadline(aLongTimeAgo)
	_ = t.backend.SetDeadline(aLongTimeAgo)
}

// cancel is run by context.AfterFunc when the context is done.
func (t *tunnel) cancel() { t.stop(nil, true) }

// fail records an I/O failure and tears the tunnel down.
func (t *tunnel) fail(err error) { t.stop(err, false) }

// pipe copies src to dst, first writing early (bytes of src already read),
// until src reaches EOF, then half-closes dst. On an error, or if dst cannot
// be half-closed, it tears the tunnel down. toClient tells the direction.
func (t *tunnel) pipe(dst, src net.Conn, early []byte, toClient bool) {
	if len(early) > 0 {
		if _, err := dst.Write(early); err != nil {
			t.fail(t.ioErr(false, toClient, err))
			return
		}
	}
	bufp := tunnelBufPool.Get().(*[]byte)
	rerr, werr := copyConn(dst, src, *bufp)
	tunnelBufPool.Put(bufp)
	switch {
	case werr != nil:
		t.fail(t.ioErr(false, toClient, werr))
	case rerr != nil:
		t.fail(t.ioErr(true, toClient, rerr))
	default:
		// src is done sending: pass that on and keep the other
		// direction open. Without half-close support, end the tunnel.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
		t.stop(nil, false)
	}
}

// ioErr wraps an I/O error of the direction toClient (backend to client) or
// not (client to backend); read tells whether reading src or writing dst
// failed. Errors after the tunnel was torn down are dropped by stop.
func (t *tunnel) ioErr(read, toClient bool, err error) error {
	switch {
	case toClient && read:
		return wrap(t.addr, ErrBadResponse, "tunnel: reading from backend", err)
	case toClient:
		return wrap(t.addr, ErrClientWrite, "tunnel: writing to client", err)
	case read:
		return wrap(t.addr, ErrRequestBody, "tunnel: reading from client", err)
	default:
		return wrap(t.addr, ErrBadResponse, "tunnel: writing to backend", err)
	}
}

// close closes both connections after both directions have finished and
// returns the outcome for Upgrade.
func (t *tunnel) close(ctx context.Context) error {
	t.mu.Lock()
	stopped, err, canceledByCtx := t.stopping, t.err, t.canceled
	t.mu.Unlock()
	closeConn(t.client, stopped)
	closeConn(t.backend, stopped)
	if err == nil && canceledByCtx {
		err = canceled(t.addr, ctx)
	}
	return err
}

// closeConn closes nc. After an abnormal end (abrupt), a TLS connection is
// closed without the close_notify alert, whose write could block for seconds
// if the peer does not read.
func closeConn(nc net.Conn, abrupt bool) {
	if tc, ok := nc.(*tls.Conn); ok && abrupt {
		_ = tc.NetConn().Close()
		return
	}
	_ = nc.Close()
}

// copyConn copies src to dst until src reports EOF (rerr and werr nil) or an
// error: rerr reading src, werr writing dst.
func copyConn(dst io.Writer, src io.Reader, buf []byte) (rerr, werr error) {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil, werr
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// canHijack reports whether w, or a ResponseWriter it wraps (found through
// Unwrap methods, as http.ResponseController does), implements Hijack.
func canHijack(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// upgradeOffered reports whether the Upgrade header of a 101 names at least
// one protocol and only protocols listed in offered (the client's Upgrade
// value), compared case-insensitively.
func upgradeOffered(offered string, switched []string) bool {
	offeredList := []string{offered}
	n := 0
	for _, v := range switched {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = strings.Trim(tok, " \t"); tok == "" {
				continue
			}
			if !tokenListed(offeredList, tok) {
				return false
			}
			n++
		}
	}
	return n > 0
}

// appendSwitchingHeader appends the 101 response sent to the client: the
// caller's header fields, the backend's end-to-end fields, and the
// Connection and Upgrade fields.
func appendSwitchingHeader(b []byte, caller, backend http.Header) []byte {
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\n"...)
	b = appendHeaderFields(b, caller, nil)
	b = appendHeaderFields(b, backend, backend["Connection"])
	b = append(b, "Connection: Upgrade\r\n"...)
	for _, v := range backend["Upgrade"] {
		if validHeaderValue(v) {
			b = append(b, "Upgrade: "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return append(b, "\r\n"...)
}

// appendHeaderFields appends the fields of h except hop-by-hop fields, fields
// named in connTokens, Content-Length (not allowed in a 1xx) and invalid
// names or values.
func appendHeaderFields(b []byte, h http.Header, connTokens []string) []byte {
	for k, vv := range h {
		if !validToken(k) {
			continue
		}
		ck := http.CanonicalHeaderKey(k)
		if isHopByHop(ck) || ck == "Content-Length" || (len(connTokens) > 0 && tokenListed(connTokens, ck)) {
			continue
		}
		for _, v := range vv {
			if !validHeaderValue(v) {
				continue
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}
