package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
)

const copyBufSize = 32 << 10

// copyBufPool holds the 32 KiB buffers used to copy bodies.
var copyBufPool = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// max1xx bounds the number of informational responses skipped before the
// final response.
const max1xx = 10

var (
	errUnexpected101 = errors.New("unexpected 101 Switching Protocols (upgrade was not requested)")
	errTooMany1xx    = errors.New("too many 1xx informational responses")
)

// Forward sends the outbound request to the backend and streams the response
// into w, entirely in the calling goroutine.
//
// out is the request to send: its URL path and query, Host (out.Host, else
// out.URL.Host, else the Pool address) and Header are final; the caller has
// removed hop-by-hop headers and added X-Forwarded-*. The Host, Content-Length,
// Transfer-Encoding, Trailer, Connection and Expect entries of out.Header are
// ignored: framing is generated from out.ContentLength and out.Body (a body of
// unknown length, ContentLength -1, is sent chunked together with out.Trailer;
// ContentLength 0 with a Body other than nil or http.NoBody is treated as
// unknown, as in net/http's client), "Connection: close" is sent iff out.Close,
// and Expect is described below. out.Body may be nil, http.NoBody or a
// streaming body such as the incoming server request body; it is not closed.
//
// timeout bounds the wait for the response header, measured from the moment
// the request (including its body) has been written; while the body is being
// written, every write must make progress within timeout. 0 means no limit.
// Cancellation of ctx (the client went away) aborts the exchange at any point.
// A ctx that is a ClientWatcher is asked, while the backend has not begun to
// answer, whether its client has left; if it has, the exchange ends with
// ErrCanceled.
//
// Forward returns the status code written to w, or 0 if nothing was written.
// When it returns an error with status 0, nothing was written to w (not even
// header fields) and the caller answers according to the sentinel: ErrDial and
// ErrBadResponse 502, ErrTimeout 504, ErrInvalidRequest 500, ErrRequestBody 400,
// ErrCanceled nobody is listening. With a non-zero status the header has been
// sent and the body was cut short; the caller should make sure the client
// notices (for HTTP/1, close the connection, e.g. panic(http.ErrAbortHandler)).
//
// Response header fields are added to w.Header() (appended to values the caller
// set already), without hop-by-hop fields and fields named in Connection.
// Content-Length is passed through, so net/http does not re-chunk. Responses
// without a length (chunked, SSE, read-until-close) are flushed to the client
// after every read; responses with a length are not flushed explicitly.
// Trailers are forwarded. 1xx informational responses are consumed, not
// forwarded.
//
// Expect: 100-continue is implemented, not stripped: when out carries it and
// has a body, the header is sent first and the body only after the backend's
// "100 Continue", or after Options.ExpectContinueTimeout without an answer. If
// the backend answers with a final status instead (say 401 or 413), the body
// is not sent and that response is forwarded; since the net/http server sends
// its own "100 Continue" to the client only when the body is first read, the
// client is not asked to upload either.
//
// If a reused keep-alive connection turns out to be dead (writing the request,
// or reading the first response byte, fails) and out is a GET, HEAD or OPTIONS
// without a body, the request is retried once on a newly dialed connection.
// Other requests fail with ErrBadResponse since the backend may have acted on them.
func (p *Pool) Forward(ctx context.Context, w http.ResponseWriter, out *http.Request, timeout time.Duration) (int, error) {
	return p.ForwardCut(ctx, w, out, timeout, nil)
}

// ForwardCut is Forward for an exchange that k can cut (k nil: none can).
func (p *Pool) ForwardCut(ctx context.Context, w http.ResponseWriter, out *http.Request, timeout time.Duration, k *Cutter) (int, error) {
	var gen uint64
	if k != nil {
		gen = k.gen.Load()
	}
	if ctx.Err() != nil {
		return 0, canceled(p.addr, ctx)
	}
	var ri reqInfo
	if err := ri.init(out, p.addr); err != nil {
		return 0, wrap(p.addr, ErrInvalidRequest, "", err)
	}
	c, err := p.get(ctx, ri.retryable)
	if err != nil {
		return 0, err
	}
	status, retry, err := p.exchange(ctx, c, w, out, &ri, timeout, k, gen)
	if retry && ri.retryable {
		if c, err = p.dial(ctx); err != nil {
			return 0, err
		}
		status, _, err = p.exchange(ctx, c, w, out, &ri, timeout, k, gen)
	}
	return status, err
}

// exchange performs one request/response exchange on c and then returns c to
// the pool or closes it. retry reports that c was a reused connection that
// failed before the response began, with nothing written to w.
// afterFuncer is a context that runs functions when it is done by itself (an HTTP/2 stream of
// dataplane/http2): registering with it directly costs one allocation, where context.AfterFunc
// costs five (a child context, closures, the channel Done makes).
type afterFuncer interface {
	AfterFunc(f func()) (stop func() bool)
}

func (p *Pool) exchange(ctx context.Context, c *conn, w http.ResponseWriter, out *http.Request,
	ri *reqInfo, timeout time.Duration, k *Cutter, gen uint64) (status int, retry bool, err error) {
	var stop func() bool
	if a, ok := ctx.(afterFuncer); ok {
		stop = a.AfterFunc(c.abortFn)
	} else if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.abortFn)
	}
	if k != nil {
		k.enter(c, gen)
	}
	status, reuse, retry, err := p.roundTrip(ctx, c, w, out, ri, timeout)
	if k != nil && k.leave(c) {
		// Cut: the conn has a past deadline.
		reuse, retry = false, false
		if err != nil {
			err = wrap(p.addr, ErrCut, "", nil)
		}
	}
	if stop != nil && !stop() {
		// The abort ran (or is running): the conn has a past deadline.
		reuse, retry = false, false
		if err != nil {
			err = canceled(p.addr, ctx)
		}
	}
	if reuse && c.clearDeadlines() {
		p.put(c)
	} else {
		c.close()
	}
	return status, retry, err
}

// roundTrip writes the request, reads the response header and copies the
// response to w. reuse reports whether c is clean and may be pooled.
func (p *Pool) roundTrip(ctx context.Context, c *conn, w http.ResponseWriter, out *http.Request,
	ri *reqInfo, timeout time.Duration) (status int, reuse, retry bool, err error) {
	if err := c.writeRequestHeader(out, ri); err != nil {
		return 0, false, false, wrap(p.addr, ErrInvalidRequest, "", err)
	}

	var (
		resp      *http.Response
		reusable  = true
		bodyWrErr error // backend stopped accepting the body; it may have answered early
	)
	if ri.kind == bodyNone || ri.kind == bodyEmpty || ri.expect {
		if err := c.bw.Flush(); err != nil {
			retry = c.reused && ri.kind <= bodyEmpty && !c.aborted.Load() && !isTimeout(err)
			return 0, false, retry, p.connErr(ctx, c, "writing request", err)
		}
	}
	if ri.expect {
		resp, err = p.awaitContinue(ctx, c, out, timeout)
		if err != nil {
			return 0, false, false, err
		}
		if resp != nil {
			// Final answer without 100 Continue: the announced body was not
			// sent, so the connection cannot carry another request.
			reusable = false
		}
	}
	if resp == nil && ri.kind >= bodyLength {
		bufp := copyBufPool.Get().(*[]byte)
		bodyErr, connErr := c.writeBody(out, ri, *bufp, timeout)
		copyBufPool.Put(bufp)
		switch {
		case bodyErr != nil:
			return 0, false, false, wrap(p.addr, ErrRequestBody, "", bodyErr)
		case connErr != nil && (c.aborted.Load() || isTimeout(connErr)):
			return 0, false, false, p.connErr(ctx, c, "backend not reading request body", connErr)
		case connErr != nil:
			bodyWrErr, reusable = connErr, false
		}
	}
	if resp == nil {
		if c.br.Buffered() == 0 {
			// Yield once, as the HTTP/1 server before a keep-alive wait: the backend's answer
			// is often there when this goroutine runs again, and is read without first finding
			// nothing (EAGAIN) and waiting in the poller.
			runtime.Gosched()
		}
		resp, retry, err = p.readResponse(ctx, c, out, timeout, ri.kind <= bodyEmpty, false)
		if err != nil {
			if bodyWrErr != nil && !c.aborted.Load() {
				err = wrap(p.addr, ErrBadResponse, "writing request body", bodyWrErr)
			}
			return 0, false, retry, err
		}
	}
	return p.respond(ctx, c, w, out, resp, reusable)
}

// connErr classifies an I/O error on the backend connection before the
// response header was complete.
func (p *Pool) connErr(ctx context.Context, c *conn, what string, err error) error {
	switch {
	case c.aborted.Load():
		return canceled(p.addr, ctx)
	case isTimeout(err):
		return wrap(p.addr, ErrTimeout, what, err)
	default:
		return wrap(p.addr, ErrBadResponse, what, err)
	}
}

// startHeader enables the response header size limit and, unless dl is zero, sets the header
// read deadline. It reports false if the exchange was aborted.
func (p *Pool) startHeader(c *conn, dl time.Time) bool {
	c.limiting, c.limit = true, p.opts.MaxResponseHeaderBytes
	if !dl.IsZero() {
		return c.setReadDeadline(dl)
	}
	return !c.aborted.Load()
}

// ClientWatcher is a request context that can tell whether its client has left (dataplane/http1's
// connection: HTTP/1 has no other sign of it; an HTTP/2 client resets its stream, which ends the
// context).
type ClientWatcher interface {
	ClientGone() bool
}

// clientCheckInterval is how often a client is checked while its backend has not begun to answer.
const clientCheckInterval = time.Second

// errClientGone is why an exchange ended when its client left while the backend was silent.
var errClientGone = errors.New("the client closed its connection before the backend answered")

// readResponse waits for and parses the final response header. noBody
// reports that no request body was sent, so that a reused connection that
// yields nothing at all may be retried. want101 accepts a 101 Switching
// Protocols as the answer (an upgrade was requested).
//
// A client that can say whether it has left (ClientWatcher) is asked every clientCheckInterval
// while the backend has not begun to answer, and one that has ends the exchange, as nginx ends it
// (unless proxy_ignore_client_abort), rather than the header timeout: a backend no one waits for
// any more is not kept busy, nor a connection held for it. The wait is then cut in slices of
// clientCheckInterval, the first set where the header deadline would be (no extra system call
// for an answer that comes within a second).
func (p *Pool) readResponse(ctx context.Context, c *conn, out *http.Request, timeout time.Duration,
	noBody, want101 bool) (resp *http.Response, retry bool, err error) {
	defer c.endHeader()
	w, watch := ctx.(ClientWatcher)
	watch = watch && (timeout <= 0 || timeout > clientCheckInterval)
	now := time.Now()
	var end time.Time // the whole header's deadline (zero: none)
	if timeout > 0 {
		end = now.Add(timeout)
	}
	first := end
	if watch {
		first = now.Add(clientCheckInterval)
	}
	if !p.startHeader(c, first) {
		return nil, false, canceled(p.addr, ctx)
	}
	_, err = c.br.Peek(1)
	if watch && err != nil && isTimeout(err) && !c.aborted.Load() {
		err = p.awaitAnswer(ctx, c, w, end)
		if errors.Is(err, errClientGone) {
			return nil, false, wrap(p.addr, ErrCanceled, "", err)
		}
	}
	if err != nil {
		retry = noBody && c.reused && !c.aborted.Load() && !isTimeout(err)
		return nil, retry, p.connErr(ctx, c, "connection closed before response", err)
	}
	if watch {
		// The answer has begun: the rest of the header (1xx responses included) has what is
		// left of the header's deadline, not of the slice, set by the next read from the
		// backend (a head that came whole needs none: no system call).
		c.rearm, c.headerEnd = true, end
	}
	resp, err = readHeader(c, out, false, want101)
	if err != nil {
		return nil, false, p.connErr(ctx, c, "reading response header", err)
	}
	if c.readDeadline && p.opts.BodyReadTimeout <= 0 && !c.setReadDeadline(time.Time{}) {
		return nil, false, canceled(p.addr, ctx)
	}
	return resp, false, nil
}

// awaitAnswer goes on waiting for the first byte of the backend's answer after the first slice,
// until end (zero: no limit), asking w between slices whether the client has left.
func (p *Pool) awaitAnswer(ctx context.Context, c *conn, w ClientWatcher, end time.Time) error {
	for {
		if w.ClientGone() {
			return errClientGone
		}
		next := time.Now().Add(clientCheckInterval)
		if !end.IsZero() && end.Before(next) {
			next = end
		}
		if !c.setReadDeadline(next) {
			return canceled(p.addr, ctx)
		}
		_, err := c.br.Peek(1)
		if err == nil || !isTimeout(err) || c.aborted.Load() || next.Equal(end) {
			return err
		}
	}
}

// awaitContinue waits for the backend's reaction to "Expect: 100-continue".
// It returns (nil, nil) when the body should be sent now (100 Continue, or no
// answer within ExpectContinueTimeout), or the backend's final response.
func (p *Pool) awaitContinue(ctx context.Context, c *conn, out *http.Request, timeout time.Duration) (*http.Response, error) {
	defer c.endHeader()
	wait := p.opts.ExpectContinueTimeout
	headerLimited := timeout > 0 && timeout <= wait
	if headerLimited {
		wait = timeout
	}
	var waitEnd time.Time
	if wait > 0 {
		waitEnd = time.Now().Add(wait)
	}
	if !p.startHeader(c, waitEnd) {
		return nil, canceled(p.addr, ctx)
	}
	if _, err := c.br.Peek(1); err != nil {
		if isTimeout(err) && !headerLimited && !c.aborted.Load() {
			// Backend does not do 100-continue: send the body anyway.
			if !c.setReadDeadline(time.Time{}) {
				return nil, canceled(p.addr, ctx)
			}
			return nil, nil
		}
		return nil, p.connErr(ctx, c, "waiting for 100 Continue", err)
	}
	// Something arrived; the rest of the header gets the full header timeout.
	var dl time.Time
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	if !c.setReadDeadline(dl) {
		return nil, canceled(p.addr, ctx)
	}
	resp, err := readHeader(c, out, true, false)
	if err != nil {
		return nil, p.connErr(ctx, c, "reading response header", err)
	}
	if resp.StatusCode == http.StatusContinue {
		resp = nil
	}
	if (resp == nil || p.opts.BodyReadTimeout <= 0) && c.readDeadline && !c.setReadDeadline(time.Time{}) {
		return nil, canceled(p.addr, ctx)
	}
	return resp, nil
}

// readHeader parses responses until a final one (or a 100 Continue when
// want100, or a 101 Switching Protocols when want101), skipping other
// informational responses.
func readHeader(c *conn, out *http.Request, want100, want101 bool) (*http.Response, error) {
	for n := 0; ; n++ {
		resp, err := readResponseHead(c, out)
		if err != nil {
			return nil, err
		}
		switch code := resp.StatusCode; {
		case code >= 200:
			return resp, nil
		case code == http.StatusContinue && want100:
			return resp, nil
		case code == http.StatusSwitchingProtocols && want101:
			return resp, nil
		case code == http.StatusSwitchingProtocols:
			return nil, errUnexpected101
		case code < 100:
			return nil, errors.New("malformed status code " + resp.Status)
		case n >= max1xx:
			return nil, errTooMany1xx
		}
	}
}

// endHeader disables the header size limit.
func (c *conn) endHeader() { c.limiting, c.rearm = false, false }

// respond writes the response header to w and copies the body.
func (p *Pool) respond(ctx context.Context, c *conn, w http.ResponseWriter, out *http.Request,
	resp *http.Response, reusable bool) (status int, reuse, retry bool, err error) {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	status = resp.StatusCode

	if resp.Body != http.NoBody {
		var rc *http.ResponseController
		if resp.ContentLength < 0 {
			// Streaming: get the header out now unless body bytes are
			// already here to go with it.
			rc = http.NewResponseController(w)
			if c.br.Buffered() == 0 {
				if err := flush(rc); err != nil {
					return status, false, false, wrap(p.addr, ErrClientWrite, "", err)
				}
			}
		}
		bufp := copyBufPool.Get().(*[]byte)
		rerr, werr := p.copyBody(c, w, resp.Body, *bufp, rc)
		copyBufPool.Put(bufp)
		switch {
		case c.aborted.Load() && (rerr != nil || werr != nil):
			return status, false, false, canceled(p.addr, ctx)
		case werr != nil:
			return status, false, false, wrap(p.addr, ErrClientWrite, "", werr)
		case rerr != nil && isTimeout(rerr):
			return status, false, false, wrap(p.addr, ErrTimeout, "response body stalled", rerr)
		case rerr != nil:
			return status, false, false, wrap(p.addr, ErrBadResponse, "reading response body", rerr)
		}
	}

	if len(resp.Trailer) > 0 {
		if len(resp.Trailer) == announced {
			for k, vv := range resp.Trailer {
				h[k] = vv
			}
		} else {
			for k, vv := range resp.Trailer {
				h[http.TrailerPrefix+k] = vv
			}
		}
	}
	reuse = reusable && !resp.Close && !out.Close && c.br.Buffered() == 0
	return status, reuse, false, nil
}

// copyBody copies the response body to w. With rc non-nil (streaming
// response) w is flushed after every write. rerr is a backend read error,
// werr a client write error.
func (p *Pool) copyBody(c *conn, w io.Writer, body io.Reader, buf []byte, rc *http.ResponseController) (rerr, werr error) {
	rt := p.opts.BodyReadTimeout
	for {
		if rt > 0 && !c.setReadDeadline(time.Now().Add(rt)) {
			return errAborted, nil
		}
		n, err := body.Read(buf)
		if n > 0 {
			m, we := w.Write(buf[:n])
			if we == nil && m < n {
				we = io.ErrShortWrite
			}
			if we == nil && rc != nil {
				we = flush(rc)
			}
			if we != nil {
				return nil, we
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

// flush flushes w through rc; writers that cannot flush are not an error.
func flush(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
