package http1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/fleetgate/fleetgate/dataplane/httphead"
)

// requestError is why a request head is refused: the status and the text of the answer. The
// connection is closed after it, since where the next request starts is not known.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, msg} }

// Reasons a request's framing is refused (the same words as the framing guard in package proxy,
// which follows connections that net/http serves).
const (
	reasonCLAndTE = "the request has both Content-Length and Transfer-Encoding"
	reasonTE10    = "an HTTP/1.0 request must not use Transfer-Encoding"
	reasonFolding = "obsolete line folding in a header field"
)

var (
	errHeadTooLarge    = &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"}
	errVersion         = &requestError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	errTransferEncUnsp = &requestError{http.StatusNotImplemented, "unsupported transfer encoding"}
)

// readHead reads a request head (request line, header lines, the empty line) from br into
// x.head, at most limit bytes. Lines may end in CRLF or LF.
func (x *exchange) readHead(br *bufio.Reader, limit int) error {
	x.head = x.head[:0]
	partial := false // the last slice read ended inside a line too long for br's buffer
	for {
		line, err := br.ReadSlice('\n')
		if len(x.head)+len(line) > limit {
			return errHeadTooLarge
		}
		if err == bufio.ErrBufferFull {
			x.head = append(x.head, line...)
			partial = true
			continue
		}
		if err != nil {
			if len(x.head)+len(line) > 0 && errors.Is(err, io.EOF) {
				return badRequest("unexpected end of the request head")
			}
			return err
		}
		empty := !partial && (len(line) == 1 || len(line) == 2 && line[0] == '\r')
		partial = false
		if empty && len(x.head) == 0 {
			// An empty line before the request line: RFC 9112 2.2 lets a server skip it.
			continue
		}
		x.head = append(x.head, line...)
		if empty {
			return nil
		}
	}
}

// parse fills the exchange's request from its head. It applies what net/http's server checks
// (request line, header names and values, Host, Content-Length, Transfer-Encoding) and refuses,
// as the gateway's framing checks do, Content-Length with Transfer-Encoding, Transfer-Encoding in
// HTTP/1.0, and obsolete line folding.
func (x *exchange) parse() error {
	// One string holds the whole head; every field of the request is a piece of it.
	s := string(x.head)
	r := &x.req
	line, rest := nextLine(s)
	method, after, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(after, " ")
	if !ok1 || !ok2 {
		return badRequest("malformed request line")
	}
	if !validMethod(method) {
		return badRequest("invalid method")
	}
	switch proto {
	case "HTTP/1.1":
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		major, minor, ok := http.ParseHTTPVersion(proto)
		if !ok {
			return badRequest("malformed HTTP version")
		}
		if major != 1 {
			return errVersion
		}
		r.Proto, r.ProtoMajor, r.ProtoMinor = proto, major, minor
	}
	r.Method = method
	if err := x.parseTarget(target); err != nil {
		return err
	}

	h := r.Header
	var (
		hosts, cls, tes int
		host, cl, te    string
	)
	for rest != "" {
		line, rest = nextLine(rest)
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badRequest(reasonFolding)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return badRequest("invalid header name")
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return badRequest("invalid header value")
		}
		if !canonical(name) {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		switch name {
		case "Host":
			hosts++
			host = value
			continue // not kept in the header map, as net/http does: it is Request.Host
		case "Content-Length":
			if cls > 0 && value != cl {
				return badRequest("conflicting Content-Length values")
			}
			cls++
			cl = value
			if cls > 1 {
				continue
			}
		case "Transfer-Encoding":
			tes++
			te = value
			continue // Request.TransferEncoding
		}
		x.add(name, value)
	}

	if r.ProtoMinor == 0 && tes > 0 {
		return badRequest(reasonTE10)
	}
	if tes > 1 || tes == 1 && !strings.EqualFold(te, "chunked") {
		return errTransferEncUnsp
	}
	if tes > 0 && cls > 0 {
		return badRequest(reasonCLAndTE)
	}
	switch {
	case hosts > 1:
		return badRequest("too many Host headers")
	case hosts == 0 && r.ProtoMinor >= 1 && r.Method != http.MethodConnect:
		return badRequest("missing required Host header")
	case hosts == 1 && !httpguts.ValidHostHeader(host):
		return badRequest("malformed Host header")
	}
	r.Host = host
	if r.URL.Host != "" {
		r.Host = r.URL.Host // absolute form: the target's host wins (RFC 9112 3.2.2)
	}

	x.chunked = false
	r.ContentLength = 0
	switch {
	case tes > 0:
		x.chunked = true
		r.ContentLength = -1
		r.TransferEncoding = chunkedOnly
	case cls > 0:
		n, err := strconv.ParseUint(cl, 10, 63)
		if err != nil || cl[0] == '+' {
			return badRequest("bad Content-Length")
		}
		r.ContentLength = int64(n)
	}
	if vv, ok := h["Trailer"]; ok && x.chunked {
		delete(h, "Trailer")
		var err error
		for k := range httphead.Announced(vv) {
			if httphead.Forbidden(k) {
				err = badRequest("bad trailer key")
			}
			if r.Trailer == nil {
				r.Trailer = http.Header{}
			}
			r.Trailer[k] = nil
		}
		if err != nil {
			return err
		}
	}

	r.Close = shouldClose(r.ProtoMinor, h["Connection"])
	x.close = r.Close // the handler may change r.Close (a proxy does, for its own hop)
	// As net/http's server: the first Expect field is looked at; "100-continue" is ignored in
	// HTTP/1.0 (RFC 9110 10.1.1) and when there is no body, any other expectation gets a 417.
	if e := h["Expect"]; len(e) > 0 {
		if hasToken(e[0], "100-continue") {
			x.expect = r.ProtoMinor >= 1 && r.ContentLength != 0
		} else if e[0] != "" {
			return &requestError{http.StatusExpectationFailed, "unsupported Expect"}
		}
	}
	return nil
}

// hasToken reports whether v has token, in any case, between spaces, tabs or commas (net/http's
// test of Expect).
func hasToken(v, token string) bool {
	for i := 0; i+len(token) <= len(v); i++ {
		if (i == 0 || isTokenBoundary(v[i-1])) &&
			(i+len(token) == len(v) || isTokenBoundary(v[i+len(token)])) &&
			strings.EqualFold(v[i:i+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

var chunkedOnly = []string{"chunked"}

// parseTarget sets RequestURI and URL from the request target.
func (x *exchange) parseTarget(target string) error {
	r := &x.req
	r.RequestURI = target
	if target == "" {
		return badRequest("empty request target")
	}
	if u, ok := httphead.PlainTarget(target); ok {
		// The common origin form, with nothing to unescape: no allocation.
		x.url = u
		r.URL = &x.url
		return nil
	}
	if r.Method == http.MethodConnect && target[0] != '/' {
		// Authority form: host:port, parsed as net/http parses it; a target with more than an
		// authority (userinfo, path or query) is refused.
		u, err := url.ParseRequestURI("http://" + target)
		if err != nil || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery {
			return badRequest("invalid CONNECT target")
		}
		x.url = url.URL{Host: u.Host}
		r.URL = &x.url
		return nil
	}
	if target == "*" {
		x.url = url.URL{Path: "*"}
		r.URL = &x.url
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return badRequest("invalid request target")
	}
	x.url = *u
	r.URL = &x.url
	return nil
}

// add appends a header value, using the exchange's backing array so that a header of one value
// costs no allocation.
func (x *exchange) add(name, value string) {
	h := x.req.Header
	if vv, ok := h[name]; ok {
		h[name] = append(vv, value)
		return
	}
	if len(x.strs) == cap(x.strs) {
		x.strs = make([]string, 0, max(16, 2*cap(x.strs)))
	}
	x.strs = append(x.strs, value)
	n := len(x.strs)
	h[name] = x.strs[n-1 : n : n]
}

// nextLine splits off the first line of s, without its CRLF or LF.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// shouldClose reports whether the connection ends after this request: HTTP/1.1 if "Connection:
// close", HTTP/1.0 unless "Connection: keep-alive" without "close", as net/http's shouldClose.
func shouldClose(minor int, conn []string) bool {
	closing := httpguts.HeaderValuesContainsToken(conn, "close")
	if minor == 0 {
		return closing || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	return closing
}

// canonical reports whether a valid header name is in canonical form already.
func canonical(s string) bool {
	upper := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH":
		return true
	}
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}
