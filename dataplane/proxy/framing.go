package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Request framing checks.
//
// net/http's server already rejects most ambiguous HTTP/1.x framing before a handler runs:
// Content-Length headers with different values or an invalid value (400), and any
// Transfer-Encoding other than a single "chunked" (501, as RFC 9112 6.1 and nginx have it); it
// closes the connection after each. Two cases it resolves silently, removing the header it
// ignores so that a handler cannot tell:
//
//   - Content-Length together with Transfer-Encoding: chunked (HTTP/1.1): chunked wins and
//     Content-Length is dropped;
//   - Transfer-Encoding in an HTTP/1.0 request: ignored, Content-Length (or no body) used.
//
// Both are what request smuggling is made of when another proxy in front reads the message the
// other way, so the gateway answers them 400 and closes the connection, before anything is
// forwarded. To see them, GuardFraming wraps the client connection and follows the byte stream
// with a small HTTP/1.x framing parser (request line, the Content-Length and Transfer-Encoding
// fields, body lengths and chunks, trailers) that records one entry per request head; the request
// path takes the next entry for every request net/http hands it and checks that it describes the
// same request line (a keyed hash). Should the two parsers ever disagree, every later request on
// the connection is refused (fail closed) rather than misattributed. Obsolete line folding
// (a header line starting with a space or tab), which net/http would unfold, is refused too (RFC
// 9112 5.2 allows either).
//
// The guard stops on connections that switch to HTTP/2 (h2c prior knowledge) or are hijacked
// (WebSocket and other upgrades). HTTP/2 has no such ambiguity: lengths come from frames, and
// net/http rejects Transfer-Encoding and a Content-Length that disagrees with the data.

// Reasons a request's framing is refused.
const (
	reasonCLAndTE   = "the request has both Content-Length and Transfer-Encoding"
	reasonTE10      = "an HTTP/1.0 request must not use Transfer-Encoding"
	reasonFolding   = "obsolete line folding in a header field"
	reasonLongValue = "a Content-Length or Transfer-Encoding value is too long"
	reasonLost      = "the request's framing could not be verified"
)

// maxPendingHeads bounds the request heads parsed ahead of the request path. net/http reads at
// most its 4 KiB buffer ahead, so a well-behaved connection stays far below.
const maxPendingHeads = 512

var (
	lineSeed = maphash.MakeSeed()
	crByte   = []byte{'\r'}
)

// GuardFraming wraps an accepted HTTP/1.x client connection, in the clear or a *tls.Conn whose
// handshake is done, so that the request path can refuse requests with ambiguous framing. The
// connection must be served by an http.Server whose ConnContext and ConnState are a ConnHooks'
// and whose handler is this package's. Do not wrap connections that negotiated h2 by ALPN.
func GuardFraming(c net.Conn) net.Conn {
	g := &framingConn{Conn: c}
	if tc, ok := c.(*tls.Conn); ok {
		// net/http takes Request.TLS from ConnectionState when the conn is not a *tls.Conn.
		return &framingTLSConn{framingConn: g, tls: tc}
	}
	return g
}

// framingConn is a client connection whose bytes are followed by a framing parser.
type framingConn struct {
	net.Conn
	mu sync.Mutex
	f  framer
}

type framingTLSConn struct {
	*framingConn
	tls *tls.Conn
}

// ConnectionState is the TLS state of the connection, for net/http's Request.TLS.
func (c *framingTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func (c *framingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.f.feed(b[:n])
		c.mu.Unlock()
	}
	return n, err
}

// CloseWrite half-closes the connection when the one underneath can (upgrade tunnels use it).
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// stop ends the parsing: the connection was hijacked and carries something else now.
func (c *framingConn) stop() {
	c.mu.Lock()
	c.f.off = true
	c.mu.Unlock()
}

// check takes the parsed head of the request net/http just read and returns why the request must
// be refused, or "".
func (c *framingConn) check(r *http.Request) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f.check(r)
}

func framingOf(c net.Conn) *framingConn {
	switch g := c.(type) {
	case *framingConn:
		return g
	case *framingTLSConn:
		return g.framingConn
	}
	return nil
}

// refuseFraming answers a request whose framing is refused: 400, and the connection closed, since
// where the next request starts is not known. On HTTP/1 the connection is taken over to do so:
// net/http would otherwise read up to 256 KiB of the body, framed as it understood it, first.
func refuseFraming(w http.ResponseWriter, r *http.Request, reason string) {
	body := "400 Bad Request: " + reason + "\n"
	if r.ProtoMajor == 1 {
		if conn, brw, err := http.NewResponseController(w).Hijack(); err == nil {
			fmt.Fprintf(brw, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"+
				"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			brw.Flush()
			go lingerClose(conn)
			return
		}
	}
	w.Header().Set("Connection", "close")
	http.Error(w, strings.TrimSuffix(body, "\n"), http.StatusBadRequest)
}

// lingerClose closes a connection after its last response without losing that response to a
// reset: it sends FIN, reads (and drops) what the client still sends for up to half a second, and
// closes.
func lingerClose(c net.Conn) {
	defer c.Close()
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(io.Discard, io.LimitReader(c, 256<<10))
}

type fstate uint8

const (
	stStart       fstate = iota // between messages
	stRequestLine               // in the request line
	stHeaderLine                // in a header field line
	stBody                      // in a Content-Length body
	stChunkSize                 // in a chunk-size line
	stChunkData                 // in a chunk's data
	stChunkEnd                  // in the CRLF after a chunk's data
	stTrailerLine               // in a trailer field line
)

// head is what the framer knows of one request head.
type head struct {
	line   uint64 // keyed hash of the request line
	reject string // why its framing is refused; "" if it is fine
}

// framer follows the HTTP/1.x framing of a client's byte stream, as net/http's server reads it
// (net/http/request.go readRequest, transfer.go readTransfer, internal/chunked.go), to the extent
// that matters to where each message ends: where net/http would fail the connection, the framer
// gives up and every later request is refused.
type framer struct {
	st    fstate
	off   bool // not parsing: HTTP/2, hijacked, refused, gave up (lose) or lost
	h2    bool // the connection speaks HTTP/2 now: no HTTP/1 requests follow
	lost  bool // out of step with net/http: every request from here on is refused
	heads []head
	first int // heads[first:] are not yet checked

	// The current line.
	crPending bool // a CR was the last byte seen: dropped if an LF follows
	lineLen   int  // content bytes of the line so far (without a CR before the LF)

	// Request line.
	hash   maphash.Hash
	spaces int
	start  [14]byte // "PRI * HTTP/2.0"
	proto  [8]byte  // "HTTP/1.1"
	protoN int

	// Header fields of the current head.
	http11    bool // HTTP/1.1 or later: Transfer-Encoding counts
	pri       bool // request line "PRI * HTTP/2.0"
	fields    int
	fold      bool
	long      bool
	teCount   int
	teChunked bool
	clCount   int
	clValue   uint64
	clBad     bool
	// The current field line.
	nameBuf   [len("transfer-encoding") + 1]byte
	nameN     int
	inValue   bool
	field     uint8 // fieldOther, fieldCL, fieldTE
	val       [32]byte
	valN      int
	owsN      int // spaces and tabs seen after the last value byte, kept only if more follows
	valueLong bool

	// Bodies.
	remain   uint64
	hex      int // chunk-size digits
	chunkSub uint8
	endN     int // bytes of the CRLF after chunk data seen
}

const (
	fieldOther uint8 = iota
	fieldCL
	fieldTE
)

const (
	csDigits uint8 = iota // hex digits of the size
	csSpace               // spaces after the digits, up to the line end
	csExt                 // a chunk extension, up to the line end
)

// maxChunkLine is the longest chunk-size line net/http reads (its 4 KiB buffer less CRLF).
const maxChunkLine = 4096 - 2

// lose gives up following the stream: net/http fails the connection at this point (or the
// framer does not know how it reads on). Requests whose heads came before are still checked;
// a request after it is refused.
func (f *framer) lose() {
	f.off = true
}

func (f *framer) check(r *http.Request) string {
	if f.h2 {
		return ""
	}
	if f.lost || f.first == len(f.heads) {
		f.lost, f.off = true, true
		return reasonLost
	}
	h := f.heads[f.first]
	if f.first++; f.first == len(f.heads) {
		f.heads, f.first = f.heads[:0], 0
	}
	if h.line != requestLineHash(r) {
		f.lost, f.off = true, true
		return reasonLost
	}
	return h.reject
}

// requestLineHash is the hash of the request line net/http parsed r from: it splits the line at
// its first two spaces into Method, RequestURI and Proto.
func requestLineHash(r *http.Request) uint64 {
	var h maphash.Hash
	h.SetSeed(lineSeed)
	h.WriteString(r.Method)
	h.WriteByte(' ')
	h.WriteString(r.RequestURI)
	h.WriteByte(' ')
	h.WriteString(r.Proto)
	return h.Sum64()
}

// feed follows b, the next bytes read from the client.
func (f *framer) feed(b []byte) {
	for len(b) > 0 && !f.off {
		switch f.st {
		case stStart:
			// net/http tolerates CR and LF before a request (after a POST); stray ones elsewhere
			// fail there.
			i := 0
			for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
				i++
			}
			b = b[i:]
			if len(b) > 0 {
				f.beginRequest()
			}
		case stRequestLine, stHeaderLine, stTrailerLine, stChunkSize:
			b = f.line(b)
		case stBody, stChunkData:
			n := min(uint64(len(b)), f.remain)
			f.remain -= n
			b = b[n:]
			if f.remain == 0 {
				if f.st == stBody {
					f.st = stStart
				} else {
					f.st, f.endN = stChunkEnd, 0
				}
			}
		case stChunkEnd:
			if b[0] != "\r\n"[f.endN] {
				f.lose() // net/http: malformed chunked encoding
				return
			}
			b = b[1:]
			if f.endN++; f.endN == 2 {
				f.beginLine(stChunkSize)
			}
		}
	}
}

func (f *framer) beginRequest() {
	f.hash.SetSeed(lineSeed) // also resets it
	f.spaces, f.protoN = 0, 0
	f.fields, f.fold, f.long = 0, false, false
	f.teCount, f.teChunked = 0, false
	f.clCount, f.clValue, f.clBad = 0, 0, false
	f.beginLine(stRequestLine)
}

func (f *framer) beginLine(st fstate) {
	f.st = st
	f.crPending, f.lineLen = false, 0
	f.nameN, f.inValue, f.field = 0, false, fieldOther
	f.valN, f.owsN, f.valueLong = 0, 0, false
	f.hex, f.chunkSub, f.remain = 0, csDigits, 0
}

// line follows the bytes of a line up to and including its LF, and returns the rest of b.
func (f *framer) line(b []byte) []byte {
	i := bytes.IndexByte(b, '\n')
	seg := b
	if i >= 0 {
		seg = b[:i]
	}
	if len(seg) > 0 {
		if f.crPending {
			f.crPending = false
			f.content(crByte)
		}
		if seg[len(seg)-1] == '\r' {
			seg, f.crPending = seg[:len(seg)-1], true
		}
		f.content(seg)
	}
	if i < 0 || f.off {
		return nil
	}
	f.endLine()
	return b[i+1:]
}

// content follows the content bytes of the current line (a CR before the LF excluded).
func (f *framer) content(p []byte) {
	if len(p) == 0 {
		return
	}
	switch f.st {
	case stRequestLine:
		f.requestLineBytes(p)
	case stHeaderLine:
		f.fieldBytes(p)
	case stChunkSize:
		f.chunkSizeBytes(p)
	}
	f.lineLen += len(p)
}

func (f *framer) requestLineBytes(p []byte) {
	f.hash.Write(p)
	if f.lineLen < len(f.start) {
		copy(f.start[f.lineLen:], p)
	}
	for len(p) > 0 && f.spaces < 2 {
		j := bytes.IndexByte(p, ' ')
		if j < 0 {
			return
		}
		f.spaces++
		p = p[j+1:]
	}
	if f.spaces == 2 {
		if f.protoN < len(f.proto) {
			copy(f.proto[f.protoN:], p)
		}
		f.protoN += len(p)
	}
}

func (f *framer) fieldBytes(p []byte) {
	if f.lineLen == 0 && (p[0] == ' ' || p[0] == '\t') {
		f.fold = true // a continuation line: refused at the end of the head
	}
	if !f.inValue {
		j := bytes.IndexByte(p, ':')
		name := p
		if j >= 0 {
			name = p[:j]
		}
		for _, c := range name {
			if f.nameN < len(f.nameBuf) {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				f.nameBuf[f.nameN] = c
			}
			f.nameN++
		}
		if j < 0 {
			return
		}
		f.inValue = true
		switch string(f.nameBuf[:min(f.nameN, len(f.nameBuf))]) {
		case "content-length":
			f.field = fieldCL
		case "transfer-encoding":
			f.field = fieldTE
		}
		p = p[j+1:]
	}
	if f.field == fieldOther {
		return
	}
	// The value, trimmed of spaces and tabs at both ends as net/http's textproto does.
	for _, c := range p {
		if c == ' ' || c == '\t' {
			if f.valN > 0 {
				f.owsN++
			}
			continue
		}
		for ; f.owsN > 0; f.owsN-- {
			f.valByte(' ')
		}
		f.valByte(c)
	}
}

func (f *framer) valByte(c byte) {
	if f.valN < len(f.val) {
		f.val[f.valN] = c
	} else {
		f.valueLong = true
	}
	f.valN++
}

func (f *framer) chunkSizeBytes(p []byte) {
	if f.lineLen+len(p) > maxChunkLine {
		f.lose() // net/http: header line too long
		return
	}
	for _, c := range p {
		if c == '\r' {
			f.lose() // net/http: invalid CR in chunked line
			return
		}
		switch f.chunkSub {
		case csDigits:
			var d byte
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				d = c - 'A' + 10
			case c == ';' && f.hex > 0:
				f.chunkSub = csExt
				continue
			case (c == ' ' || c == '\t') && f.hex > 0:
				f.chunkSub = csSpace
				continue
			default:
				f.lose() // net/http: invalid byte in chunk length
				return
			}
			if f.hex == 16 {
				f.lose() // net/http: http chunk length too large
				return
			}
			f.hex++
			f.remain = f.remain<<4 | uint64(d)
		case csSpace:
			if c != ' ' && c != '\t' {
				f.lose() // net/http trims trailing spaces only, before cutting the extension
				return
			}
		case csExt:
		}
	}
}

// endLine acts on a complete line.
func (f *framer) endLine() {
	crlf := f.crPending
	f.crPending = false
	switch f.st {
	case stRequestLine:
		f.endRequestLine()
	case stHeaderLine:
		if f.lineLen == 0 {
			f.endHead()
			return
		}
		f.endField()
		f.beginLine(stHeaderLine)
	case stChunkSize:
		if !crlf || f.hex == 0 {
			f.lose() // net/http: chunked line ends with bare LF, or empty chunk length
			return
		}
		if size := f.remain; size > 0 {
			f.beginLine(stChunkData)
			f.remain = size
		} else {
			f.beginLine(stTrailerLine)
		}
	case stTrailerLine:
		if f.lineLen == 0 {
			f.st = stStart
			return
		}
		f.beginLine(stTrailerLine)
	}
}

func (f *framer) endRequestLine() {
	if f.spaces < 2 {
		f.lose() // net/http: malformed HTTP request
		return
	}
	major, minor, ok := parseHTTPVersion(f.proto[:min(f.protoN, len(f.proto))], f.protoN)
	f.pri = f.lineLen == len(f.start) && string(f.start[:]) == "PRI * HTTP/2.0"
	if !ok || (major != 1 && !f.pri) {
		f.lose() // net/http: malformed or unsupported HTTP version
		return
	}
	f.http11 = major > 1 || minor >= 1
	f.beginLine(stHeaderLine)
}

// parseHTTPVersion is net/http's ParseHTTPVersion on the first bytes of the version, n long.
func parseHTTPVersion(v []byte, n int) (major, minor int, ok bool) {
	if n != len("HTTP/X.Y") || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

func (f *framer) endField() {
	f.fields++
	if !f.inValue {
		if !f.fold {
			f.lose() // net/http: malformed MIME header line
		}
		return
	}
	v := f.val[:min(f.valN, len(f.val))]
	switch f.field {
	case fieldCL:
		f.clCount++
		if f.valueLong {
			f.long = true
			return
		}
		n, ok := parseContentLength(v)
		if !ok || (f.clCount > 1 && n != f.clValue) {
			f.clBad = true // net/http: bad or conflicting Content-Length
		}
		f.clValue = n
	case fieldTE:
		f.teCount++
		if f.valueLong {
			f.long = true
			return
		}
		f.teChunked = len(v) == len("chunked") && bytes.EqualFold(v, []byte("chunked"))
	}
}

// parseContentLength parses a trimmed Content-Length value as net/http does: decimal digits, at
// most 2^63-1.
func parseContentLength(v []byte) (uint64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<63-1 {
			return 0, false
		}
	}
	return n, true
}

// endHead records a complete request head and moves on to its body.
func (f *framer) endHead() {
	if f.pri && f.fields == 0 {
		// The HTTP/2 connection preface: net/http serves HTTP/2 from here, or answers it and
		// closes the connection.
		f.h2, f.off = true, true
		return
	}
	h := head{line: f.hash.Sum64()}
	switch {
	case f.fold:
		h.reject = reasonFolding
	case f.long:
		h.reject = reasonLongValue
	case f.teCount > 0 && !f.http11:
		h.reject = reasonTE10
	case f.teCount > 0 && f.clCount > 0:
		h.reject = reasonCLAndTE
	}
	if len(f.heads)-f.first == maxPendingHeads {
		f.lose()
		return
	}
	f.heads = append(f.heads, h)
	switch {
	case h.reject != "":
		f.off = true // the request path refuses it and closes the connection
	case f.teCount > 0:
		if f.teCount > 1 || !f.teChunked {
			f.lose() // net/http answers 501 and closes the connection
			return
		}
		f.beginLine(stChunkSize)
	case f.clBad:
		f.lose() // net/http answers 400 and closes the connection
	case f.clCount > 0 && f.clValue > 0:
		f.st, f.remain = stBody, f.clValue
	default:
		f.st = stStart
	}
}
