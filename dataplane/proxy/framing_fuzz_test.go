package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzFramingGuard is a differential test of the framing guard against net/http's own request
// parser. The input is a client's byte stream, fed to the guard in pieces (split) as reads would
// deliver it, and parsed by net/http as its server does. For every request net/http would hand to
// the request path, the guard's check must find that request's head, in order (no "could not be
// verified" where net/http is content), until the guard refuses one for its framing; and the
// guard must never panic, whatever the bytes.
func FuzzFramingGuard(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /f HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
		"POST /g HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi\r\nGET /h HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /i HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"PRI * HTTP/2.0\r\nHost: a\r\n\r\nGET /j HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /k HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000000000000000000000000001\r\n\r\nx",
		"POST /l HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:   chunked   \r\n\r\n10  \r\n0123456789abcdef\r\n0\r\n\r\n",
		"GET /m HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var fr framer
		for rest, i := data, 0; len(rest) > 0; i++ {
			n := len(rest)
			if split > 0 {
				n = min(n, 1+(int(split)*(i+1))%13)
			}
			fr.feed(rest[:n])
			rest = rest[n:]
		}
		for i, req := range serverRequests(data) {
			switch reason := fr.check(req); reason {
			case "":
			case reasonLost:
				t.Fatalf("request %d (%s %s %s): the guard lost step with net/http", i+1, req.Method, req.RequestURI, req.Proto)
			default:
				return // refused: the connection ends here
			}
		}
	})
}

// serverRequests parses a byte stream the way net/http's server reads a connection (server.go
// readRequest: leading CRLF after a POST, the checks that fail a connection; bodies read to their
// end) and returns the requests that would reach the handler, in order.
func serverRequests(data []byte) []*http.Request {
	br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
	var out []*http.Request
	last := ""
	for {
		if last == "POST" {
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			br.Discard(n)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		pri := req.Method == "PRI" && req.RequestURI == "*" && req.ProtoMajor == 2 && req.ProtoMinor == 0
		if req.ProtoMajor != 1 && !pri {
			return out // 505
		}
		if pri && len(req.Header) == 0 {
			return out // the HTTP/2 preface
		}
		// (The server's Host checks are left out: ReadRequest drops the Host field, and the guard
		// reads past a request the server would refuse for its Host just the same.)
		for k, vv := range req.Header {
			if !validFieldName(k) {
				return out
			}
			for _, v := range vv {
				if !validFieldValue(v) {
					return out
				}
			}
		}
		if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
			return out // 417, connection closed, handler not called
		}
		out = append(out, req)
		if _, err := io.Copy(io.Discard, req.Body); err != nil || req.Close {
			return out
		}
		last = req.Method
	}
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
