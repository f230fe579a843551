package upstream

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// bodyKind is the framing used for the outbound request body.
type bodyKind uint8

const (
	bodyNone    bodyKind = iota // no body, no framing header
	bodyEmpty                   // no body, "Content-Length: 0" (POST, PUT, PATCH)
	bodyLength                  // "Content-Length: n"
	bodyChunked                 // "Transfer-Encoding: chunked"
)

// reqInfo is what Forward derives from the outbound request once, before the
// (possibly repeated) exchange. It lives on Forward's stack.
type reqInfo struct {
	method    string
	host      string
	kind      bodyKind
	length    int64  // for bodyLength
	expect    bool   // send "Expect: 100-continue" and wait for the backend
	retryable bool   // may be resent on a fresh connection if a reused one was stale
	upgrade   string // Upgrade value sent with "Connection: Upgrade" (Pool.Upgrade only)
}

// init validates out and fills ri. Errors describe what is wrong; the caller
// wraps them with ErrInvalidRequest.
func (ri *reqInfo) init(out *http.Request, defaultHost string) error {
	ri.method = out.Method
	if ri.method == "" {
		ri.method = http.MethodGet
	}
	if !validToken(ri.method) {
		return fmt.Errorf("invalid method %q", ri.method)
	}
	if ri.method == http.MethodConnect {
		return errors.New("CONNECT is not supported")
	}
	if out.URL == nil {
		return errors.New("nil URL")
	}
	ri.host = out.Host
	if ri.host == "" {
		ri.host = out.URL.Host
	}
	if ri.host == "" {
		ri.host = defaultHost
	}
	if !validTarget(ri.host) {
		return fmt.Errorf("invalid Host %q", ri.host)
	}

	hasBody := out.Body != nil && out.Body != http.NoBody
	switch {
	case !hasBody:
		if out.ContentLength > 0 {
			return fmt.Errorf("ContentLength=%d with no Body", out.ContentLength)
		}
		switch ri.method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			ri.kind = bodyEmpty
		default:
			ri.kind = bodyNone
		}
	case out.ContentLength > 0:
		ri.kind, ri.length = bodyLength, out.ContentLength
	default:
		// -1 (unknown), or 0 with a real Body, which net/http's client also
		// treats as unknown.
		ri.kind = bodyChunked
	}
	ri.expect = hasBody && tokenListed(out.Header["Expect"], "100-continue")
	ri.retryable = !hasBody && (ri.method == http.MethodGet ||
		ri.method == http.MethodHead || ri.method == http.MethodOptions)
	return nil
}

// writeRequestHeader writes the request line and header block into c.bw
// without flushing. Host, Content-Length, Transfer-Encoding, Trailer, Expect
// and Connection (and, for an upgrade, Upgrade) are generated from ri and out
// rather than copied from out.Header. Invalid names or values are reported,
// not sanitized.
func (c *conn) writeRequestHeader(out *http.Request, ri *reqInfo) error {
	bw := c.bw
	bw.WriteString(ri.method)
	bw.WriteByte(' ')
	if err := writeTarget(c, out.URL); err != nil {
		return err
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(ri.host)
	bw.WriteString("\r\n")
	for k, vv := range out.Header {
		if skipRequestHeader(k) || (ri.upgrade != "" && len(k) == 7 && strings.EqualFold(k, "Upgrade")) {
			continue
		}
		if !validToken(k) {
			return fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vv {
			if !validHeaderValue(v) {
				return fmt.Errorf("invalid value for header %q", k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch ri.kind {
	case bodyEmpty:
		bw.WriteString("Content-Length: 0\r\n")
	case bodyLength:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(c.scratch[:0], ri.length, 10))
		bw.WriteString("\r\n")
	case bodyChunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(out.Trailer) > 0 {
			if err := writeTrailerAnnouncement(c, out.Trailer); err != nil {
				return err
			}
		}
	}
	if ri.expect {
		bw.WriteString("Expect: 100-continue\r\n")
	}
	switch {
	case ri.upgrade != "":
		// out.Close is ignored: the connection is never reused anyway, and
		// "close" next to "Upgrade" would contradict a 101.
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(ri.upgrade)
		bw.WriteString("\r\n")
	case out.Close:
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	return nil
}

// writeTarget writes the origin-form request target (path and query).
func writeTarget(c *conn, u *url.URL) error {
	bw := c.bw
	if u.Opaque != "" {
		t := u.RequestURI()
		if !validTarget(t) {
			return fmt.Errorf("invalid request target %q", t)
		}
		bw.WriteString(t)
		return nil
	}
	path := u.EscapedPath()
	if !validTarget(path) {
		return fmt.Errorf("invalid request path %q", path)
	}
	if path == "" || (path[0] != '/' && path != "*") {
		bw.WriteByte('/')
	}
	bw.WriteString(path)
	if u.ForceQuery || u.RawQuery != "" {
		if !validTarget(u.RawQuery) {
			return fmt.Errorf("invalid request query %q", u.RawQuery)
		}
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
	return nil
}

// writeTrailerAnnouncement writes the "Trailer" header listing the trailer
// fields that will follow a chunked body.
func writeTrailerAnnouncement(c *conn, trailer http.Header) error {
	bw := c.bw
	bw.WriteString("Trailer: ")
	first := true
	for k := range trailer {
		if !validToken(k) {
			return fmt.Errorf("invalid trailer name %q", k)
		}
		if !first {
			bw.WriteString(", ")
		}
		first = false
		bw.WriteString(k)
	}
	bw.WriteString("\r\n")
	return nil
}

// writeBody streams out.Body to the backend with the framing chosen in ri,
// flushing after every piece read so a streaming upload is not held back, and
// flushes at the end. Exactly one of the results is non-nil on failure:
// bodyErr when reading out.Body failed (client side), connErr when writing to
// the backend failed. If timeout > 0, each write must make progress within it.
func (c *conn) writeBody(out *http.Request, ri *reqInfo, buf []byte, timeout time.Duration) (bodyErr, connErr error) {
	bw := c.bw
	remaining := ri.length
	for {
		p := buf
		if ri.kind == bodyLength {
			if remaining == 0 {
				break
			}
			if int64(len(p)) > remaining {
				p = p[:remaining]
			}
		}
		n, rerr := out.Body.Read(p)
		if n > 0 {
			if timeout > 0 && !c.setWriteDeadline(time.Now().Add(timeout)) {
				return nil, errAborted
			}
			if ri.kind == bodyChunked {
				bw.Write(strconv.AppendInt(c.scratch[:0], int64(n), 16))
				bw.WriteString("\r\n")
				bw.Write(p[:n])
				bw.WriteString("\r\n")
			} else {
				bw.Write(p[:n])
				remaining -= int64(n)
			}
			if err := bw.Flush(); err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF {
			if ri.kind == bodyLength && remaining > 0 {
				return fmt.Errorf("body ended %d bytes short of ContentLength %d: %w",
					remaining, ri.length, io.ErrUnexpectedEOF), nil
			}
			break
		}
		if rerr != nil {
			return rerr, nil
		}
	}
	if ri.kind == bodyChunked {
		bw.WriteString("0\r\n")
		for k, vv := range out.Trailer {
			if !validToken(k) {
				continue
			}
			for _, v := range vv {
				if validHeaderValue(v) {
					bw.WriteString(k)
					bw.WriteString(": ")
					bw.WriteString(strings.TrimSpace(v))
					bw.WriteString("\r\n")
				}
			}
		}
		bw.WriteString("\r\n")
	}
	if timeout > 0 && !c.setWriteDeadline(time.Now().Add(timeout)) {
		return nil, errAborted
	}
	return nil, bw.Flush()
}

// errAborted is the internal marker for "the context's AfterFunc fired";
// callers turn it into an ErrCanceled error.
var errAborted = errors.New("aborted")
