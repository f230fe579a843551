package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// readResponseHead reads one response head from c.br, with the framing rules of
// net/http's ReadResponse (RFC 9112 6.3): no body for HEAD, 1xx, 204 and 304; chunked (with
// trailers) when Transfer-Encoding says so on HTTP/1.1; Content-Length; else the body runs to the
// connection's close. The whole head becomes one string that every header value is a piece of,
// and the values share one backing array: a response costs three allocations here, against
// ReadResponse's dozen. The returned Response is c's own, valid until c's next exchange, and so is
// its header map (c's, cleared for each response); the header values are the caller's to keep.
func readResponseHead(c *conn, req *http.Request) (*http.Response, error) {
	head, err := readHeadLines(c.br, &c.head, 0)
	if err != nil {
		return nil, err
	}
	s := string(head)
	line, rest := cutLine(s)
	proto, status, ok := strings.Cut(line, " ")
	if !ok {
		return nil, badResponse("malformed HTTP response", line)
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok {
		return nil, badResponse("malformed HTTP version", proto)
	}
	status = strings.TrimLeft(status, " ")
	codeText, _, _ := strings.Cut(status, " ")
	code, err := strconv.Atoi(codeText)
	if len(codeText) != 3 || err != nil || code < 0 {
		return nil, badResponse("malformed HTTP status code", codeText)
	}
	resp := &c.resp
	*resp = http.Response{
		Status: status, StatusCode: code,
		Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Request: req,
	}

	n := strings.Count(rest, "\n")
	strs := make([]string, 0, n)
	h := c.header
	if h == nil || len(h) > maxReusedHeader {
		h = make(http.Header, n)
		c.header = h
	} else {
		clear(h)
	}
	for rest != "" {
		line, rest = cutLine(rest)
		if line == "" {
			break
		}
		if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			// Obsolete line folding: refused (RFC 9112 5.2 lets a proxy answer 502).
			return nil, badResponse("obsolete line folding in a header field", line)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil, badResponse("malformed MIME header line", line)
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, badResponse("invalid header field value", name)
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if vv, ok := h[name]; ok {
			h[name] = append(vv, value)
			continue
		}
		strs = append(strs, value)
		h[name] = strs[len(strs)-1 : len(strs) : len(strs)]
	}
	resp.Header = h
	if err := c.frame(resp, req); err != nil {
		return nil, err
	}
	return resp, nil
}

// frame sets the response's length, body, trailer and Close from its header and status.
func (c *conn) frame(resp *http.Response, req *http.Request) error {
	h := resp.Header
	resp.Close = shouldClose(resp.ProtoMinor, h["Connection"])
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		delete(h, "Connection") // as ReadResponse: Close says it
	}
	if resp.ProtoMajor != 1 {
		return badResponse("unsupported protocol version", resp.Proto)
	}
	chunked := false
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		if resp.ProtoMinor >= 1 {
			// As net/http: a single "chunked" is the only coding understood.
			if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
				return badResponse("unsupported transfer encoding", strings.Join(te, ", "))
			}
			chunked = true
			resp.TransferEncoding = chunkedCoding
		}
	}

	length := int64(-1)
	if cl := h["Content-Length"]; len(cl) > 0 {
		if chunked {
			// RFC 9112 6.3: Transfer-Encoding overrides it, and a proxy must not pass it on
			// (ReadResponse keeps it in the header).
			delete(h, "Content-Length")
		} else {
			first := strings.TrimSpace(cl[0])
			for _, v := range cl[1:] {
				if strings.TrimSpace(v) != first {
					return badResponse("message cannot contain multiple Content-Length headers", strings.Join(cl, ", "))
				}
			}
			n, err := strconv.ParseUint(first, 10, 63)
			if err != nil {
				return badResponse("bad Content-Length", first)
			}
			length = int64(n)
			if len(cl) > 1 {
				h["Content-Length"] = cl[:1]
			}
		}
	}
	resp.ContentLength = length
	if vv, ok := h["Trailer"]; ok && chunked {
		delete(h, "Trailer")
		resp.Trailer = http.Header{}
		for _, v := range vv {
			for k := range strings.SplitSeq(v, ",") {
				k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
				switch k {
				case "":
					continue
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return badResponse("bad trailer key", k)
				}
				resp.Trailer[k] = nil
			}
		}
	}
	status := resp.StatusCode
	noBody := status/100 == 1 || status == http.StatusNoContent || status == http.StatusNotModified || req.Method == http.MethodHead
	switch {
	case noBody:
		if status/100 == 1 || status == http.StatusNoContent {
			resp.ContentLength = 0
		}
		if chunked && req.Method != http.MethodHead {
			resp.ContentLength = 0
		}
		resp.Body = http.NoBody
		return nil
	case chunked:
		resp.ContentLength = -1
		c.body = respBody{c: c, resp: resp, chunked: true, cr: httputil.NewChunkedReader(c.br)}
	case length == 0:
		resp.Body = http.NoBody
		return nil
	case length > 0:
		c.body = respBody{c: c, resp: resp, n: length}
	default:
		// No length: the body ends with the connection.
		resp.Close = true
		c.body = respBody{c: c, resp: resp, toEOF: true}
	}
	resp.Body = &c.body
	return nil
}

var chunkedCoding = []string{"chunked"}

// respBody is a response body read from its connection's buffered reader.
type respBody struct {
	c       *conn
	resp    *http.Response
	chunked bool
	toEOF   bool
	n       int64 // bytes left (Content-Length)
	cr      io.Reader
	done    bool
	err     error
}

func (b *respBody) Read(p []byte) (int, error) {
	switch {
	case b.err != nil:
		return 0, b.err
	case b.done:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	br := b.c.br
	var (
		m   int
		err error
	)
	switch {
	case b.chunked:
		m, err = b.cr.Read(p)
		if err == io.EOF {
			if err = b.readTrailer(); err == nil {
				err = io.EOF
			}
		}
	case b.toEOF:
		m, err = br.Read(p)
	default:
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		m, err = br.Read(p)
		b.n -= int64(m)
		if b.n == 0 {
			err = io.EOF
		} else if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == io.EOF {
		b.done = true
	} else if err != nil {
		b.err = err
	}
	return m, err
}

func (b *respBody) Close() error { return nil }

// readTrailer reads the trailer section after the last chunk into the response's Trailer.
func (b *respBody) readTrailer() error {
	head, err := readHeadLines(b.c.br, &b.c.head, maxTrailerBytes)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	rest := string(head)
	for rest != "" {
		var line string
		line, rest = cutLine(rest)
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		value = strings.Trim(value, " \t")
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return badResponse("malformed trailer line", line)
		}
		if b.resp.Trailer == nil {
			b.resp.Trailer = http.Header{}
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		b.resp.Trailer[name] = append(b.resp.Trailer[name], value)
	}
	return nil
}

// maxTrailerBytes bounds a response's trailer section.
const maxTrailerBytes = 64 << 10

var errTrailerTooLarge = errors.New("response trailer too large")

// readHeadLines reads lines up to and including an empty one into *buf (reused) and returns
// them. max bounds their size (0: no bound here; the connection's header limit applies).
func readHeadLines(br *bufio.Reader, buf *[]byte, max int) ([]byte, error) {
	b := (*buf)[:0]
	defer func() { *buf = b[:0] }()
	for {
		line, err := br.ReadSlice('\n')
		b = append(b, line...)
		if max > 0 && len(b) > max {
			return nil, errTrailerTooLarge
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if n := len(line); n == 1 || n == 2 && line[0] == '\r' {
			if len(b) == n || b[len(b)-n-1] == '\n' {
				return b, nil
			}
		}
	}
}

// cutLine splits off the first line of s, without its CRLF or LF.
func cutLine(s string) (line, rest string) {
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

// shouldClose reports whether the backend closes the connection after this response.
func shouldClose(minor int, conn []string) bool {
	if minor == 0 {
		return !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	return httpguts.HeaderValuesContainsToken(conn, "close")
}

// badResponse is an error in the words of net/http's ReadResponse.
func badResponse(what, v string) error { return fmt.Errorf("%s %q", what, v) }
