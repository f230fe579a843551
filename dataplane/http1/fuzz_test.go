package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// testExchange returns an exchange from the pool readied for a request as serveRequest does
// (reset sets Request.Header to the exchange's map and the response's connection, which the
// body's trailer reader asks for its limit).
func testExchange() *exchange {
	x := getExchange()
	c := &conn{s: &Server{}, base: new(http.Request), remote: "192.0.2.1:1234"}
	c.x = x
	x.reset(c)
	x.bw.Reset(io.Discard) // where "100 Continue" goes
	return x
}

// parseOurs runs the package's parser over raw. The exchange must be released by the caller.
func parseOurs(raw []byte) (*exchange, error) {
	x := testExchange()
	x.br.Reset(bytes.NewReader(raw))
	err := x.readHead(x.br, (&Server{}).maxHeaderBytes())
	if err == nil {
		err = x.parse()
	}
	return x, err
}

// errNetHTTPRefuses marks a request that net/http's server would refuse after http.ReadRequest
// accepted it (the checks of its conn.readRequest and of the Expect header).
var errNetHTTPRefuses = errors.New("refused by net/http's server checks")

// parseNetHTTP reads raw as net/http's server does: http.ReadRequest, then the checks its
// conn.readRequest and serve loop apply before a handler runs.
func parseNetHTTP(raw []byte) (*http.Request, error) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, err
	}
	if req.ProtoMajor != 1 {
		// net/http lets "PRI * HTTP/2.0" through for handlers that do their own HTTP/2; here
		// that preface is H2C's, and every other version is refused by both.
		return req, errVersion
	}
	// ReadRequest has moved Host out of the header: read the head again for the fields as sent.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		return nil, err
	}
	sent, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	hosts, haveHost := sent["Host"]
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && req.Method != http.MethodConnect {
		return nil, errNetHTTPRefuses
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, errNetHTTPRefuses
	}
	for k, vv := range sent {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, errNetHTTPRefuses
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, errNetHTTPRefuses
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !netHasToken(e, "100-continue") {
		return nil, errNetHTTPRefuses // 417
	}
	return req, nil
}

// deliberateRefusal reports whether err is one of the refusals the package documents beyond
// net/http's: ambiguous framing (both Content-Length and Transfer-Encoding, Transfer-Encoding in
// HTTP/1.0, obsolete line folding), a CONNECT target that is not an authority, and the HTTP/2
// preface when no H2C takes it.
func deliberateRefusal(err error, netErr error) bool {
	var re *requestError
	if !errors.As(err, &re) {
		return false
	}
	switch re.msg {
	case reasonCLAndTE, reasonTE10, reasonFolding:
		return true
	case "empty request target", "invalid CONNECT target":
		// A CONNECT target that is no authority (RFC 9112 3.2.3): net/http takes anything that
		// parses as "http://"+target, an empty one or one with a path or a query included.
		return true
	}
	return re == errVersion && netErr == errVersion
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\nAccept: text/html\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-T, X-U\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n",
		"GET /%7Euser/a%2Fb;p?q=%20 HTTP/1.1\r\nhost: h\r\n\r\n",
		"GET http://Example.COM:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
		"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
		"GET / HTTP/1.1\nHost: h\nconnection: Close\n\n",
		"GET /? HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: h\r\nX:\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nBad Name: x\r\n\r\n",
		"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, foo\r\nExpect: bar\r\nContent-Length: 1\r\n\r\nx",
		"CONNECT h:443?q HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-A\rB: 1\r\nX-C: \x01\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		x, err := parseOurs(raw)
		defer x.release()
		// The package skips empty lines before the request line (RFC 9112 2.2); net/http's
		// ReadRequest does not (its server skips up to 4 bytes of them after a POST).
		want, netErr := parseNetHTTP(skipEmptyLines(raw))
		switch {
		case err != nil && netErr != nil:
			return
		case err == nil && netErr != nil:
			t.Fatalf("accepted what net/http refuses (%v):\n%q", netErr, raw)
		case err != nil:
			if !deliberateRefusal(err, netErr) {
				t.Fatalf("refused (%v) what net/http accepts:\n%q", err, raw)
			}
			return
		}
		got := &x.req
		// ReadRequest adds "Cache-Control: no-cache" to a request with "Pragma: no-cache" and no
		// Cache-Control (fixPragmaCacheControl); a proxy passes the header on as it came.
		if hp := want.Header["Pragma"]; len(hp) > 0 && hp[0] == "no-cache" && got.Header["Cache-Control"] == nil &&
			reflect.DeepEqual(want.Header["Cache-Control"], []string{"no-cache"}) {
			delete(want.Header, "Cache-Control")
		}
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"Method", got.Method, want.Method},
			{"RequestURI", got.RequestURI, want.RequestURI},
			{"URL", *got.URL, *want.URL},
			{"Proto", got.Proto, want.Proto},
			{"ProtoMajor", got.ProtoMajor, want.ProtoMajor},
			{"ProtoMinor", got.ProtoMinor, want.ProtoMinor},
			{"Host", got.Host, want.Host},
			{"ContentLength", got.ContentLength, want.ContentLength},
			{"TransferEncoding", got.TransferEncoding, want.TransferEncoding},
			{"Close", got.Close, want.Close},
			{"Header", got.Header, want.Header},
			{"Trailer", got.Trailer, want.Trailer},
		} {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("%s: got %#v, net/http %#v", c.name, c.got, c.want)
			}
		}
		if t.Failed() {
			t.Fatalf("request:\n%q", raw)
		}

		// The body, and the trailer after a chunked one.
		x.setBody()
		gotBody, gotErr := io.ReadAll(got.Body)
		wantBody, wantErr := io.ReadAll(want.Body)
		switch {
		case gotErr != nil && wantErr != nil:
		case gotErr != nil && !invalidTrailerName(want.Trailer):
			// net/http takes a trailer field name with spaces (its head check refuses them);
			// the package checks trailer fields as header fields.
			t.Fatalf("body: %v; net/http read %q:\n%q", gotErr, wantBody, raw)
		case gotErr != nil:
		case wantErr != nil && !bareLF(raw):
			// The package takes lines ending in LF alone in a trailer as in the head; net/http
			// only in the head.
			t.Fatalf("body read (%q), net/http: %v:\n%q", gotBody, wantErr, raw)
		case wantErr != nil:
		case !bytes.Equal(gotBody, wantBody):
			t.Fatalf("body %q, net/http %q:\n%q", gotBody, wantBody, raw)
		case !reflect.DeepEqual(got.Trailer, want.Trailer):
			t.Fatalf("trailer %#v, net/http %#v:\n%q", got.Trailer, want.Trailer, raw)
		}
	})
}

// netHasToken is net/http's hasToken, its test of the Expect header (request.go): whether v contains token,
// case-insensitively, between space, tab or comma boundaries.
func netHasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if sp > 0 && !netIsTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !netIsTokenBoundary(v[end]) {
			continue
		}
		if strings.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func netIsTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// skipEmptyLines drops the empty lines (CRLF or LF) at the start of b.
func skipEmptyLines(b []byte) []byte {
	for {
		switch {
		case bytes.HasPrefix(b, []byte("\n")):
			b = b[1:]
		case bytes.HasPrefix(b, []byte("\r\n")):
			b = b[2:]
		default:
			return b
		}
	}
}

// bareLF reports whether b has a LF not preceded by CR.
func bareLF(b []byte) bool {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
	}
	return false
}

// invalidTrailerName reports whether a trailer has a field name that is not a token.
func invalidTrailerName(h http.Header) bool {
	for k := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return true
		}
	}
	return false
}
