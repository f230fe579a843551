package http1

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/fleetgate/fleetgate/dataplane/httphead"
)

// holdBack is how much of a response body with no Content-Length is held back, as net/http does,
// so that a handler that finishes within it gets a Content-Length rather than chunks.
const holdBack = 2048

// response is the http.ResponseWriter of one request.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status     int   // 0 until WriteHeader
	headerOut  bool  // the status line and header are written
	cl         int64 // the Content-Length sent, -1 if none
	written    int64
	chunked    bool
	closeAfter bool
	hijacked   bool
	continued  bool // "100 Continue" was sent
	werr       error
	pending    []byte // body bytes held back (no Content-Length, header not yet out)
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
)

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.hijacked || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("http1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: goes out now, with the header as it is.
		if w.headerOut || w.werr != nil {
			return
		}
		bw := w.c.x.bw
		bw.WriteString(statusLine(code))
		w.writeFields(false)
		bw.WriteString("\r\n")
		w.werr = bw.Flush()
		if code == http.StatusContinue {
			w.continued = true
		}
		return
	}
	w.status = code
}

// sendContinue sends "100 Continue" before the first read of a body whose client asked for it.
func (w *response) sendContinue() {
	if w.continued || w.status != 0 || w.headerOut || w.werr != nil || w.hijacked {
		return
	}
	w.continued = true
	bw := w.c.x.bw
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	w.werr = bw.Flush()
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if !w.headerOut {
		if _, ok := w.header["Content-Length"]; !ok && w.written+int64(len(p)) <= holdBack {
			// Held back (for HEAD only counted, as it is not sent): a body that ends within
			// holdBack gets a Content-Length.
			if w.req.Method != http.MethodHead {
				if w.pending == nil {
					w.pending = w.c.x.hold[:0]
				}
				w.pending = append(w.pending, p...)
			}
			w.written += int64(len(p))
			return len(p), nil
		}
		w.writeHeader(false)
		if w.werr != nil {
			return 0, w.werr
		}
	}
	if w.req.Method == http.MethodHead {
		w.written += int64(len(p))
		return len(p), nil
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	n, err := w.writeBody(p)
	w.written += int64(n)
	return n, err
}

// writeBody writes body bytes, as a chunk when chunked.
func (w *response) writeBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.c.x.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.werr = err
	}
	return n, err
}

// writeHeader writes the status line and header. final: the handler is done, so a body held back
// is the whole body and gets a Content-Length.
func (w *response) writeHeader(final bool) {
	w.headerOut = true
	h := w.header
	bw := w.c.x.bw
	w.cl = -1
	head := w.req.Method == http.MethodHead
	switch {
	case !bodyAllowed(w.status):
		delete(h, "Transfer-Encoding")
		if w.status != http.StatusNotModified {
			delete(h, "Content-Length")
		}
	default:
		if v := h["Content-Length"]; len(v) > 0 {
			if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
				w.cl = n
				delete(h, "Transfer-Encoding")
				break
			}
			delete(h, "Content-Length")
		}
		delete(h, "Transfer-Encoding")
		// Trailers need chunks (as net/http: announced in Trailer, or set with TrailerPrefix).
		trailers := final && httphead.HasTrailers(w.header)
		switch {
		case final && !trailers && (!head || w.written > 0):
			w.cl = w.written // all held back (HEAD: counted)
		case final && !trailers || head:
		case w.req.ProtoAtLeast(1, 1):
			w.chunked = true
		default:
			w.closeAfter = true // HTTP/1.0: the body ends with the connection
		}
	}

	if w.c.x.close || w.c.s.shutting.Load() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	// As net/http, the response says the connection closes when what is left of the request body
	// will not be read: the client waits for a "100 Continue" that was not sent (it will send no
	// body once it has a response), or the body is larger than what is discarded.
	if b := &w.c.x.body; b.unread() && (b.x.expect && !w.continued || !b.chunked && b.n > maxDiscard) {
		w.closeAfter = true
	}
	bw.WriteString(statusLine(w.status))
	w.writeFields(true)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(httphead.Date())
		bw.WriteString("\r\n")
	}
	if _, ok := h["Content-Length"]; !ok && w.cl >= 0 {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.cl, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter && !httpguts.HeaderValuesContainsToken(h["Connection"], "close"):
		bw.WriteString("Connection: close\r\n")
	case !w.closeAfter && w.req.ProtoMinor == 0 && !httpguts.HeaderValuesContainsToken(h["Connection"], "keep-alive"):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	_, w.werr = bw.WriteString("\r\n")
	if len(w.pending) > 0 && !head {
		p := w.pending
		w.pending = nil
		w.writeBody(p)
	}
	w.pending = nil
}

// writeFields writes the header fields of the map (trailers excepted when header is true: those
// set with http.TrailerPrefix, and those the Trailer field announces, which a head held back
// until the handler returned would otherwise carry too).
func (w *response) writeFields(header bool) {
	bw := w.c.x.bw
	var announced []string
	if header {
		announced = w.header["Trailer"]
	}
	for k, vv := range w.header {
		if header && (strings.HasPrefix(k, http.TrailerPrefix) || len(announced) > 0 && announces(announced, k)) ||
			!httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = newlinesToSpaces.Replace(v)
			}
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

// finish ends the response after the handler returned.
func (w *response) finish() {
	if w.hijacked {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	bw := w.c.x.bw
	if !w.headerOut {
		w.writeHeader(true)
	}
	if w.chunked && w.werr == nil {
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if w.req.Method != http.MethodHead && w.cl >= 0 && bodyAllowed(w.status) && w.written != w.cl {
		w.closeAfter = true
	}
	if w.werr == nil {
		w.werr = bw.Flush()
	}
}

// announces reports whether the Trailer field values vv name k.
func announces(vv []string, k string) bool {
	for name := range httphead.Announced(vv) {
		if name == k {
			return true
		}
	}
	return false
}

// writeTrailers writes the trailer fields: those the Trailer header announced, and those set with
// http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.c.x.bw
	for k, vv := range httphead.Trailers(w.header) {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(newlinesToSpaces.Replace(v))
			bw.WriteString("\r\n")
		}
	}
}

// Flush sends the header and what the body has so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush, with its error (for http.ResponseController).
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerOut {
		w.writeHeader(false)
	}
	if w.werr == nil {
		w.werr = w.c.x.bw.Flush()
	}
	return w.werr
}

// Hijack hands the connection over: the server forgets it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	x := c.x
	if w.headerOut {
		if err := x.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	w.hijacked = true
	c.rw.SetReadDeadline(time.Time{})
	c.x = nil // the buffers go with the connection
	c.s.forget(c)
	c.state.Store(int32(http.StateHijacked))
	if c.s.ConnState != nil {
		c.s.ConnState(c.rw, http.StateHijacked)
	}
	return c.rw, bufio.NewReadWriter(x.br, x.bw), nil
}

// SetReadDeadline sets the connection's read deadline (for http.ResponseController).
func (w *response) SetReadDeadline(t time.Time) error { return w.c.rw.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline (for http.ResponseController).
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.rw.SetWriteDeadline(t) }

// newlinesToSpaces keeps a field value on its line, as net/http does.
var newlinesToSpaces = strings.NewReplacer("\r", " ", "\n", " ")

// bodyAllowed reports whether a response with this status may have a body.
func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == http.StatusNoContent || status == http.StatusNotModified)
}

var statusLines = func() (t [600]string) {
	for code := range t {
		if text := http.StatusText(code); text != "" {
			t[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return t
}()

func statusLine(code int) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}
