package http2

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fleetgate/fleetgate/dataplane/httphead"
)

// holdBack is how much of a body is held back before the response starts: a response that ends
// within it gets a content-length, and goes out with its HEADERS in one write.
const holdBack = 8 << 10

// maxReserve bounds the window one write takes, so that streams take turns.
const maxReserve = 64 << 10

// responseWriter is a stream's http.ResponseWriter.
type responseWriter struct {
	st         *stream
	handler    http.Handler
	header     http.Header
	head       bool // a HEAD request: the body is counted, not sent
	status     int
	cl         int64  // the Content-Length the handler set; -1 if none
	written    int64  // body bytes written by the handler
	buf        []byte // held back (in *bufp)
	bufp       *[]byte
	fields     []string // the head's fields, name and value pairs (in *fieldsp), taken at WriteHeader
	fieldsp    *[]string
	hasDate    bool // fields has a date
	sentHeader bool
	ended      bool // END_STREAM sent
	err        error
}

var holdBufs = sync.Pool{New: func() any { b := make([]byte, 0, holdBack); return &b }}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.sendInformational(code)
		return
	}
	w.status = code
	w.cl = -1
	if v := w.header["Content-Length"]; len(v) > 0 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.cl = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	w.snapshot()
}

// snapshot takes the header fields as they are at WriteHeader (as net/http does: what the
// handler sets later, such as trailer values, stays out of the head), as HTTP/2 names and values.
func (w *responseWriter) snapshot() {
	if w.fieldsp == nil {
		w.fieldsp = fieldBufs.Get().(*[]string)
		w.fields = *w.fieldsp
	}
	f := w.fields[:0]
	w.hasDate = false
	for k, vv := range w.header {
		if connectionSpecific(k) || strings.HasPrefix(k, http.TrailerPrefix) ||
			k == "Content-Length" && w.status != http.StatusNotModified && !bodyAllowed(w.status) ||
			!httpguts.ValidHeaderFieldName(k) {
			continue
		}
		if k == "Date" {
			w.hasDate = true
		}
		name := lowerName(k)
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				f = append(f, name, v)
			}
		}
	}
	w.fields = f
}

var fieldBufs = sync.Pool{New: func() any { b := make([]string, 0, 32); return &b }}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.head || len(p) == 0 {
		return len(p), nil
	}
	if !w.sentHeader && len(w.buf)+len(p) <= holdBack {
		if w.bufp == nil {
			w.bufp = holdBufs.Get().(*[]byte)
			w.buf = *w.bufp
		}
		w.buf = append(w.buf, p...)
		if w.written == w.cl && !httphead.HasTrailers(w.header) {
			w.send(nil, true) // complete: HEADERS and DATA go out now, with END_STREAM
		}
		return len(p), nil
	}
	end := w.written == w.cl && !httphead.HasTrailers(w.header)
	if err := w.send(p, end); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends the header and what is held back.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is Flush, with the write's error (as http.ResponseController finds it).
func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.ended || w.sentHeader && len(w.buf) == 0 {
		return nil
	}
	return w.send(nil, false)
}

// send writes the header if it is not out yet, then what is held back and p as DATA, within the
// flow-control windows; end ends the stream with the last frame.
func (w *responseWriter) send(p []byte, end bool) error {
	if w.err != nil {
		return w.err
	}
	if w.ended {
		return nil
	}
	st := w.st
	c := st.c
	held := w.buf
	if w.head {
		held, p = nil, nil
	}
	for {
		// Take the held-back bytes first, then p, as far as the windows allow.
		var chunk, chunk2 []byte
		if len(held)+len(p) > 0 {
			n, err := st.reserve(len(held) + len(p))
			if err != nil {
				w.err = err
				return err
			}
			k := min(n, len(held))
			chunk, held = held[:k], held[k:]
			chunk2, p = p[:n-k], p[n-k:]
		}
		last := end && len(held)+len(p) == 0
		headers := !w.sentHeader
		if !headers && len(chunk)+len(chunk2) == 0 && !last {
			break
		}
		w.sentHeader = true
		w.ended = last
		if last {
			st.localDone.Store(true)
		}
		err := c.write(func() error {
			if st.gone.Load() {
				// Reset: its frames stop here. Checked under the write lock, which the
				// RST_STREAM takes after.
				return errGone
			}
			if headers {
				st.headerOut.Store(true)
				if err := w.writeHeaders(w.status, last && len(chunk)+len(chunk2) == 0, last); err != nil {
					return err
				}
				if last && len(chunk)+len(chunk2) == 0 {
					return nil
				}
			}
			return c.writeData(st.id, chunk, chunk2, last)
		})
		if err == errGone {
			err = fmt.Errorf("%w: reset", errStreamGone)
		}
		if err != nil {
			w.err = err
			return err
		}
		if len(held)+len(p) == 0 {
			break
		}
	}
	if w.buf != nil {
		w.buf = w.buf[:0]
	}
	return nil
}

// reserve takes up to want bytes of the stream's and the connection's send windows, waiting for
// them to open.
func (st *stream) reserve(want int) (int, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.outErr != nil {
			return 0, st.outErr
		}
		if st.sendWindow > 0 && c.sendWindow > 0 {
			n := min(int64(want), st.sendWindow, c.sendWindow, maxReserve)
			st.sendWindow -= n
			c.sendWindow -= n
			return int(n), nil
		}
		onConn := c.sendWindow <= 0
		if onConn {
			c.waiting++
		}
		st.cond.Wait()
		if onConn {
			c.waiting--
		}
	}
}

// finish ends the response after the handler returned: the header if it is not out, what is
// held back, and the trailers or END_STREAM.
func (w *responseWriter) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.ended || w.err != nil {
		return
	}
	trailers := w.trailerFields()
	if w.cl >= 0 && w.written != w.cl && bodyAllowed(w.status) && !w.head {
		// Shorter than its Content-Length: the client must not take it as complete.
		w.st.c.resetStream(w.st.id, http2.ErrCodeInternal)
		return
	}
	if err := w.send(nil, len(trailers) == 0); err != nil || len(trailers) == 0 {
		return
	}
	c := w.st.c
	w.ended = true
	w.st.localDone.Store(true)
	w.err = c.write(func() error {
		if w.st.gone.Load() {
			return errGone
		}
		c.hbuf = c.hbuf[:0]
		for i := 0; i < len(trailers); i += 2 {
			c.writeField(trailers[i], trailers[i+1])
		}
		return c.writeHeaderBlock(w.st.id, c.hbuf, true)
	})
}

// trailerFields are the trailer fields set, as name and value pairs: those the Trailer header
// announced, and those set with http.TrailerPrefix.
func (w *responseWriter) trailerFields() []string {
	if !httphead.HasTrailers(w.header) {
		return nil
	}
	var out []string
	for k, vv := range httphead.Trailers(w.header) {
		if !httpguts.ValidHeaderFieldName(k) || connectionSpecific(k) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				out = append(out, lowerName(k), v)
			}
		}
	}
	return out
}

// sendInformational sends a 1xx response (with the header fields set so far, as for 103 Early
// Hints).
func (w *responseWriter) sendInformational(code int) {
	if w.sentHeader {
		return
	}
	c := w.st.c
	if err := c.write(func() error {
		if w.st.gone.Load() {
			return errGone
		}
		return w.writeHeaders(code, false, false)
	}); err != nil {
		w.err = err
	}
}

// sendContinue answers "Expect: 100-continue" as the handler starts reading the body.
func (w *responseWriter) sendContinue() {
	c := w.st.c
	c.write(func() error {
		if w.st.gone.Load() || w.st.headerOut.Load() {
			return errGone // no 100 after the final response's HEADERS
		}
		c.hbuf = c.hbuf[:0]
		c.writeField(":status", "100")
		return c.writeHeaderBlock(w.st.id, c.hbuf, false)
	})
}

// writeHeaders writes the response's HEADERS (and CONTINUATION) frames; complete: all of the body
// follows in this write section, so its length is known. In the write section.
func (w *responseWriter) writeHeaders(code int, end, complete bool) error {
	c := w.st.c
	c.hbuf = c.hbuf[:0]
	c.writeField(":status", statusValue(code))
	if code < 200 {
		w.snapshot() // an informational response carries the fields set so far
	}
	for i := 0; i+1 < len(w.fields); i += 2 {
		c.writeField(w.fields[i], w.fields[i+1])
	}
	if code >= 200 {
		if w.cl < 0 && complete && bodyAllowed(code) && (!w.head || w.written > 0) {
			// All of the body is here: it gets a content-length.
			cl := strconv.FormatInt(w.written, 10)
			c.writeField("content-length", cl)
		}
		if !w.hasDate {
			c.writeField("date", httphead.DateString())
		}
	}
	return c.writeHeaderBlock(w.st.id, c.hbuf, end)
}

// connectionSpecific reports the fields HTTP/2 does not carry (RFC 9113 8.2.2).
func connectionSpecific(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

var statusValues = func() []string {
	s := make([]string, 600)
	for i := 100; i < len(s); i++ {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func statusValue(code int) string {
	if code < len(statusValues) {
		return statusValues[code]
	}
	return strconv.Itoa(code)
}

// writeHeaderBlock writes a header block as HEADERS and, past the client's frame size,
// CONTINUATION frames. In the write section.
func (c *conn) writeHeaderBlock(id uint32, block []byte, end bool) error {
	max := int(c.frameSize.Load())
	n := min(len(block), max)
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n],
		EndStream: end, EndHeaders: n == len(block)})
	for block = block[n:]; err == nil && len(block) > 0; block = block[n:] {
		n = min(len(block), max)
		err = c.fr.WriteContinuation(id, n == len(block), block[:n])
	}
	return err
}

// writeData writes a and b as DATA frames of at most the client's frame size, the last with
// END_STREAM if end. In the write section.
func (c *conn) writeData(id uint32, a, b []byte, end bool) error {
	max := int(c.frameSize.Load())
	for len(a)+len(b) > 0 || end {
		n := min(len(a)+len(b), max)
		var flags byte
		if end && n == len(a)+len(b) {
			flags = byte(http2.FlagDataEndStream)
		}
		c.bw.Write(append(c.bw.AvailableBuffer(), byte(n>>16), byte(n>>8), byte(n),
			byte(http2.FrameData), flags, byte(id>>24), byte(id>>16), byte(id>>8), byte(id)))
		k := min(n, len(a))
		c.bw.Write(a[:k])
		a = a[k:]
		_, err := c.bw.Write(b[:n-k])
		b = b[n-k:]
		if err != nil || flags != 0 {
			return err
		}
		if len(a)+len(b) == 0 {
			return nil
		}
	}
	return nil
}

// release gives back the response's buffer after its handler.
func (w *responseWriter) release() {
	if w.fieldsp != nil {
		clear(w.fields) // the strings may be large: the pool must not hold them
		*w.fieldsp = w.fields[:0]
		fieldBufs.Put(w.fieldsp)
		w.fields, w.fieldsp = nil, nil
	}
	if w.bufp != nil {
		*w.bufp = w.buf[:0]
		holdBufs.Put(w.bufp)
		w.buf, w.bufp = nil, nil
	}
}

// fieldCache keeps the encodings of the last fields the encoder wrote as an index into its tables
// (an indexed representation, RFC 7541 6.1). While the encoder's dynamic table is unchanged, such a
// field has the same encoding, and is copied rather than looked up in the encoder's two tables (two
// or three map lookups, each hashing the name and the value: 2.5 % of the CPU under h2load). A
// field written otherwise (a literal, which may add to the table and so move every index; a table
// size update first) begins a new generation. A new table size, which must be the first thing of
// the next block, drops the cache, as does a connection left with no stream open after a write
// (an idle connection holds no cache, nor the strings in it).
type fieldCache struct {
	gen  uint64
	next int
	e    [8]struct {
		name, value string
		gen         uint64
		n           uint8
		enc         [3]byte // an index below 2^21
	}
}

// fieldCaches holds the caches of idle connections for the next busy one: a connection that serves
// one request at a time goes idle after each, and takes one back from here rather than allocating it.
var fieldCaches = sync.Pool{New: func() any { return new(fieldCache) }}

// dropFieldCache gives c's field cache back, emptied (it holds strings of c's responses). In the
// write section.
func (c *conn) dropFieldCache() {
	if c.fields != nil {
		*c.fields = fieldCache{}
		fieldCaches.Put(c.fields)
		c.fields = nil
	}
}

// writeField encodes one field into c.hbuf. In the write section.
func (c *conn) writeField(name, value string) {
	fc := c.fields
	if fc == nil {
		fc = fieldCaches.Get().(*fieldCache)
		c.fields = fc
	}
	for i := range fc.e {
		if e := &fc.e[i]; e.n > 0 && e.gen == fc.gen && e.name == name && e.value == value {
			c.hbuf = append(c.hbuf, e.enc[:e.n]...)
			return
		}
	}
	start := len(c.hbuf)
	c.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
	b := c.hbuf[start:]
	if len(b) == 0 || b[0]&0x80 == 0 || len(b) > len(fc.e[0].enc) {
		fc.gen++
		return
	}
	e := &fc.e[fc.next]
	fc.next = (fc.next + 1) % len(fc.e)
	e.name, e.value, e.gen = name, value, fc.gen
	e.n = uint8(copy(e.enc[:], b))
}
