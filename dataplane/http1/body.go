package http1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// body is a request body: Content-Length bytes, or chunks and trailers, read from the exchange's
// buffered reader.
type body struct {
	x       *exchange
	chunked bool
	n       int64     // Content-Length bytes left
	cr      io.Reader // chunked reader
	eof     bool      // read to its end (or there is none)
	err     error     // a read failed: the connection cannot carry another request
	closed  bool
}

// setBody gives the request its body, from its framing.
func (x *exchange) setBody() {
	r := &x.req
	x.body = body{x: x, chunked: x.chunked}
	switch {
	case x.chunked:
		x.body.cr = httputil.NewChunkedReader(x.br)
	case r.ContentLength > 0:
		x.body.n = r.ContentLength
	default:
		x.body.eof = true
		r.Body = http.NoBody
		return
	}
	r.Body = &x.body
}

func (b *body) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.err != nil:
		return 0, b.err
	case b.eof:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	if b.x.expect {
		b.x.resp.sendContinue()
	}
	if !b.chunked {
		if int64(len(p)) > b.n {
			p = p[:b.n]
		}
		m, err := b.x.br.Read(p)
		b.n -= int64(m)
		if b.n == 0 {
			b.eof = true
			return m, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			b.err = err
		}
		return m, err
	}
	m, err := b.cr.Read(p)
	if err == io.EOF {
		if err = b.readTrailer(); err == nil {
			b.eof = true
			return m, io.EOF
		}
	}
	if err != nil {
		b.err = err
	}
	return m, err
}

var errTrailerTooLarge = errors.New("http1: request trailer too large")

// readTrailer reads the trailer section after the last chunk into Request.Trailer.
func (b *body) readTrailer() error {
	limit := b.x.resp.c.s.maxHeaderBytes()
	r := &b.x.req
	for {
		line, err := b.x.br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return io.ErrUnexpectedEOF
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return errTrailerTooLarge
			}
			return err
		}
		if limit -= len(line); limit < 0 {
			return errTrailerTooLarge
		}
		s, _ := nextLine(string(line))
		if s == "" {
			return nil
		}
		// Checked as header fields are: a handler may pass the trailer on.
		name, value, ok := strings.Cut(s, ":")
		value = strings.Trim(value, " \t")
		if !ok || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
			return errors.New("http1: malformed trailer line")
		}
		if r.Trailer == nil {
			r.Trailer = http.Header{}
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		r.Trailer[name] = append(r.Trailer[name], value)
	}
}

// Close marks the body closed; what is left of it is dealt with after the handler.
func (b *body) Close() error {
	b.closed = true
	return nil
}

// unread reports whether bytes of the body are still to come.
func (b *body) unread() bool { return b.x != nil && !b.eof }

// maxDiscard is how much of a request body the handler left unread is read and dropped so that
// the connection can carry the next request, as net/http does; past it the connection is closed.
const maxDiscard = 256 << 10

// drain reads and drops what the handler left of the body; false if the connection cannot carry
// another request.
func (b *body) drain() bool {
	if !b.unread() {
		return true
	}
	if b.err != nil || b.x.expect && !b.x.resp.continued {
		// The client waits for "100 Continue" before it sends the body: never asked for.
		return false
	}
	b.closed = false
	n, _ := io.Copy(io.Discard, io.LimitReader(b, maxDiscard+1))
	return b.eof && n <= maxDiscard
}
