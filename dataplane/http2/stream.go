package http2

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"

	"github.com/fleetgate/fleetgate/dataplane/httphead"
)

// stream is one request and its response.
type stream struct {
	c    *conn
	id   uint32
	cond sync.Cond // on c.mu: body data, window, stream end

	// Under c.mu.
	sendWindow  int64
	recvWindow  int64
	recvUnacked int64
	in          []byte // request body received and not yet read
	inErr       error  // what a read returns once in is empty: io.EOF at the end
	outErr      error  // what writes return: the stream was closed
	remoteDone  bool   // the client ended its side (END_STREAM)
	bodyClosed  bool   // the handler closed the body: data is dropped
	closed      bool   // the stream left the connection
	received    int64  // body bytes received
	declared    int64  // the request's content-length; -1 if none
	continued   bool   // a "100 Continue" was sent, or is not wanted

	localDone atomic.Bool // the response's last frame is written (or being written)
	gone      atomic.Bool // closed: no frame of the stream may be written any more
	headerOut atomic.Bool // the final response's HEADERS are written (set under the write lock)

	// Set before the handler runs.
	ctx   streamCtx // the stream is its request's context (context.go)
	req   *http.Request
	url   url.URL  // req.URL for a plain origin-form target
	trail []string // trailer keys the request declared
	w     responseWriter
	body  requestBody
}

// emptyRequest is the zero request each stream's is copied from (by WithContext).
var emptyRequest = new(http.Request)

func (c *conn) newStream(id uint32, endStream bool) *stream {
	st := &stream{c: c, id: id, sendWindow: int64(c.peerWindow), recvWindow: streamWindow,
		remoteDone: endStream, declared: -1}
	st.cond.L = &c.mu
	st.w.st = st
	st.body.st = st
	return st
}

// processHeaders opens a stream (or ends one with trailers).
func (c *conn) processHeaders(f *headerBlock) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		if st.remoteDone && st.localDone.Load() {
			// Closed on both sides; its handler has yet to return.
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
		c.mu.Unlock()
		return c.processTrailers(st, f)
	}
	if id <= c.maxID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeStreamClosed)
	}
	c.maxID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if c.goingAway {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	if uint32(len(c.streams)) >= c.s.maxStreams() {
		c.mu.Unlock()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	if len(c.queued) >= 4*int(c.s.maxStreams()) {
		// Streams reset while their handlers still run: a "rapid reset" attack.
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.mu.Unlock()

	st := c.newStream(id, f.StreamEnded())
	ctx := st.startContext()
	handler := c.s.Handler
	if f.truncated {
		handler = http.HandlerFunc(headerTooLarge)
		r := emptyRequest.WithContext(ctx)
		r.Method, r.URL, r.Header = f.pseudoValue("method"), &url.URL{}, http.Header{}
		r.Proto, r.ProtoMajor, r.Body, r.RemoteAddr = "HTTP/2.0", 2, http.NoBody, c.remote
		st.req = r
	} else if err := c.newRequest(st, ctx, f); err != nil {
		st.cancelContext(context.Canceled)
		return err
	}
	st.w.handler = handler
	st.w.header = http.Header{}
	st.w.head = st.req.Method == http.MethodHead

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.cancelContext(context.Canceled)
		return nil
	}
	c.streams[id] = st
	c.open.Add(1)
	if len(c.streams) == 1 {
		c.setDeadlineLocked() // no idle timeout while a stream is open
	}
	if c.handlers >= int(c.s.maxStreams()) {
		// As many handlers run as streams may be open; those of streams the client reset may
		// still be running. The stream waits for one of them to return.
		c.queued = append(c.queued, st)
		c.mu.Unlock()
		return nil
	}
	c.handlers++
	c.mu.Unlock()
	c.s.dispatch(st)
	return nil
}

func headerTooLarge(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	io.WriteString(w, "431 Request Header Fields Too Large")
}

// processTrailers ends a stream with the request's trailer fields.
func (c *conn) processTrailers(st *stream, f *headerBlock) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.remoteDone {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.pseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if st.declared >= 0 && st.received != st.declared {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if len(st.trail) > 0 {
		for _, hf := range f.regularFields() {
			k := c.canonical(hf.Name)
			if _, declared := st.req.Trailer[k]; declared {
				st.req.Trailer[k] = append(st.req.Trailer[k], hf.Value)
			}
		}
	}
	st.remoteDone = true
	if st.inErr == nil {
		st.inErr = io.EOF
	}
	st.cond.Broadcast()
	return nil
}

// newRequest builds st's request from the header block, as net/http's HTTP/2 server does; a
// malformed one is a stream error (RFC 9113 8.1.1).
func (c *conn) newRequest(st *stream, ctx context.Context, f *headerBlock) error {
	malformed := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	var method, path, scheme, authority string
	for _, hf := range f.pseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		default: // :protocol (extended CONNECT is not offered), :status
			return malformed
		}
	}
	if method == "" {
		return malformed
	}
	if method == http.MethodConnect {
		if path != "" || scheme != "" || authority == "" {
			return malformed
		}
	} else if path == "" || scheme == "" ||
		path[0] != '/' && !(path == "*" && method == http.MethodOptions) {
		return malformed
	}

	fields := f.regularFields()
	header := make(http.Header, len(fields))
	vals := make([]string, len(fields)) // one backing array for the usual single values
	var cookies []string
	for i, hf := range fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return malformed // connection-specific fields (RFC 9113 8.2.2)
		case "te":
			if hf.Value != "trailers" {
				return malformed
			}
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := c.canonical(hf.Name)
		if vv, ok := header[k]; ok {
			header[k] = append(vv, hf.Value)
			continue
		}
		vals[i] = hf.Value
		header[k] = vals[i : i+1 : i+1]
	}
	if len(cookies) > 0 {
		// Cookie fields may be split (RFC 9113 8.2.3): one field again for HTTP/1 backends.
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}

	st.declared = -1
	if vv := header["Content-Length"]; len(vv) > 0 {
		n, err := strconv.ParseUint(vv[0], 10, 63)
		if err != nil {
			return malformed
		}
		for _, v := range vv[1:] {
			if v != vv[0] {
				return malformed
			}
		}
		st.declared = int64(n)
		if st.remoteDone && n > 0 {
			return malformed
		}
	}

	var u *url.URL
	var err error
	switch {
	case method == http.MethodConnect:
		u = &url.URL{Host: authority}
		path = authority
	case path == "*":
		u = &url.URL{Path: "*"}
	default:
		if plain, ok := httphead.PlainTarget(path); ok {
			st.url = plain // the common target: no parse, no allocation of its own
			u = &st.url
		} else if u, err = url.ParseRequestURI(path); err != nil {
			return malformed
		}
	}
	host := authority
	if host == "" {
		host = header.Get("Host")
	}
	r := emptyRequest.WithContext(ctx) // the request's one allocation, with its context (the stream)
	r.Method, r.URL, r.Proto, r.ProtoMajor, r.Header = method, u, "HTTP/2.0", 2, header
	r.Host, r.RemoteAddr, r.RequestURI, r.TLS = host, c.remote, path, c.tls
	switch {
	case st.remoteDone:
		r.Body = http.NoBody
	default:
		r.Body = &st.body
		r.ContentLength = st.declared
		if vv := header["Trailer"]; len(vv) > 0 {
			r.Trailer = http.Header{}
			for k := range httphead.Announced(vv) {
				if httphead.Forbidden(k) {
					return malformed
				}
				r.Trailer[k] = nil
				st.trail = append(st.trail, k)
			}
		}
		// A client that sent "Expect: 100-continue" waits for the answer before the body.
		st.continued = !strings.EqualFold(header.Get("Expect"), "100-continue")
	}
	st.req = r
	return nil
}

// canonical is the canonical form of a lower-case header name, with the names a connection has
// seen cached (up to maxCanon).
func (c *conn) canonical(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if c.canon == nil {
		c.canon = map[string]string{}
	}
	if len(c.canon) < maxCanon {
		c.canon[name] = k
	}
	return k
}

const maxCanon = 64

var commonCanonical, commonLower = func() (map[string]string, map[string]string) {
	names := []string{"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Age", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
		"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
		"Access-Control-Request-Headers", "Access-Control-Request-Method", "Allow", "Authorization",
		"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires",
		"From", "Host", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since",
		"Last-Modified", "Link", "Location", "Max-Forwards", "Origin", "Proxy-Authenticate",
		"Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Te", "Trailer", "User-Agent", "Vary", "Via", "Www-Authenticate",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Real-Ip",
		"X-Request-Id", "X-Content-Type-Options", "X-Frame-Options", "Traceparent", "Tracestate",
		"Forwarded", "Upgrade", "Connection", "Keep-Alive", "Transfer-Encoding", "Proxy-Connection"}
	canon, lower := make(map[string]string, len(names)), make(map[string]string, len(names))
	for _, n := range names {
		l := strings.ToLower(n)
		canon[l], lower[n] = n, l
	}
	return canon, lower
}()

// lowerName is a header name as HTTP/2 sends it.
func lowerName(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// runHandler serves st's request and ends the stream. It returns the connection's next queued
// stream, which the caller is to serve next.
func (c *conn) runHandler(st *stream) (next *stream) {
	defer func() { next = c.handlerDone(st) }()
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler && c.s.Log != nil {
				c.s.Log.Error("http2 handler panicked", "remote", c.remote, "panic", p)
			}
			c.resetStream(st.id, http2.ErrCodeInternal)
		}
	}()
	st.w.handler.ServeHTTP(&st.w, st.req)
	st.w.finish()
	return nil // set by handlerDone
}

// handlerDone ends the stream after its handler: a client still sending a body it will not read
// is told to stop (RST_STREAM NO_ERROR, RFC 9113 8.1).
func (c *conn) handlerDone(st *stream) (next *stream) {
	c.mu.Lock()
	stop := !st.closed && !st.remoteDone
	inc := c.closeStreamLocked(st, errStreamGone)
	for len(c.queued) > 0 && next == nil {
		next, c.queued[0] = c.queued[0], nil
		c.queued = c.queued[1:]
		if next.closed {
			next = nil
		}
	}
	if next == nil {
		c.handlers--
	}
	c.mu.Unlock()
	st.w.release()
	if stop || inc > 0 {
		c.write(func() error {
			if inc > 0 {
				if err := c.fr.WriteWindowUpdate(0, uint32(inc)); err != nil {
					return err
				}
			}
			if stop {
				return c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
			}
			return nil
		})
	} else if c.open.Load() == 0 {
		// The stream closed after its last write: the write that left no stream open, which
		// drops the field cache (endWrite), came before. The connection is idle now.
		c.wmu.Lock()
		if c.open.Load() == 0 {
			c.dropFieldCache()
		}
		c.wmu.Unlock()
	}
	return next
}

// requestBody is a request's body: the DATA the client sent.
type requestBody struct{ st *stream }

func (b *requestBody) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	if !st.continued {
		st.continued = true
		if len(st.in) == 0 && st.inErr == nil && !st.headerOut.Load() {
			c.mu.Unlock()
			st.w.sendContinue()
			c.mu.Lock()
		}
	}
	for len(st.in) == 0 && st.inErr == nil {
		st.cond.Wait()
	}
	if len(st.in) == 0 {
		err := st.inErr
		c.mu.Unlock()
		return 0, err
	}
	n := copy(p, st.in)
	st.in = st.in[n:]
	if len(st.in) == 0 {
		st.in = st.in[:0:0] // let the buffer go
	}
	c.mu.Unlock()
	c.consumed(st, int64(n))
	return n, nil
}

// Close drops the rest of the body: data that comes for it is given back to the window at once.
func (b *requestBody) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	st.bodyClosed = true
	unread := int64(len(st.in))
	st.in = nil
	if st.inErr == nil {
		st.inErr = http.ErrBodyReadAfterClose
	}
	c.mu.Unlock()
	if unread > 0 {
		c.consumed(st, unread)
	}
	return nil
}
