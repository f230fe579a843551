package upstream

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzResponseHead compares readResponseHead with net/http's ReadResponse on the same bytes:
// where ReadResponse accepts a response, readResponseHead must too (except for the documented
// differences below) and give the same status, protocol, header, length, Close, body and trailer.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: t\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nx-lower: v\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req := &http.Request{Method: method}
		want, werr := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), req)
		var wantBody []byte
		if werr == nil {
			wantBody, werr = io.ReadAll(want.Body)
		}
		c := &conn{br: bufio.NewReader(bytes.NewReader(data))}
		got, gerr := readResponseHead(c, req)
		var gotBody []byte
		if gerr == nil {
			gotBody, gerr = io.ReadAll(got.Body)
		}
		if werr != nil {
			return // ReadResponse refuses it; readResponseHead may be stricter or not
		}
		if gerr != nil {
			// Deliberately stricter: a header or trailer field name that is not a token or a value with control
			// bytes (ReadResponse lets some through), obsolete line folding, a protocol other
			// than HTTP/1.x.
			if strings.Contains(gerr.Error(), "malformed MIME header line") || strings.Contains(gerr.Error(), "malformed trailer line") ||
				strings.Contains(gerr.Error(), "obsolete line folding") || strings.Contains(gerr.Error(), "invalid header field value") ||
				strings.Contains(gerr.Error(), "unsupported protocol version") {
				return
			}
			t.Fatalf("ReadResponse accepts %q, readResponseHead: %v", data, gerr)
		}
		wh := want.Header.Clone()
		if want.TransferEncoding != nil {
			delete(wh, "Content-Length") // dropped with a chunked body, see frame
		}
		if _, ok := want.Header["Pragma"]; ok {
			// ReadResponse adds Cache-Control: no-cache for Pragma: no-cache; a proxy passes
			// the header on as it came.
			delete(wh, "Cache-Control")
			delete(got.Header, "Cache-Control")
		}
		switch {
		case got.StatusCode != want.StatusCode || got.Status != want.Status:
			t.Fatalf("%q: status %d %q, want %d %q", data, got.StatusCode, got.Status, want.StatusCode, want.Status)
		case got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor:
			t.Fatalf("%q: proto %s, want %s", data, got.Proto, want.Proto)
		case !maps.EqualFunc(got.Header, wh, slices.Equal):
			t.Fatalf("%q: header %q, want %q", data, got.Header, wh)
		case got.Close != want.Close:
			t.Fatalf("%q: Close %v, want %v", data, got.Close, want.Close)
		case !bytes.Equal(gotBody, wantBody):
			t.Fatalf("%q: body %q, want %q", data, gotBody, wantBody)
		case len(got.Trailer) != len(want.Trailer) || !maps.EqualFunc(got.Trailer, want.Trailer, slices.Equal):
			t.Fatalf("%q: trailer %q, want %q", data, got.Trailer, want.Trailer)
		case want.Body != http.NoBody && got.ContentLength != want.ContentLength:
			t.Fatalf("%q: length %d, want %d", data, got.ContentLength, want.ContentLength)
		}
	})
}
