package http1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, req string
		check     func(*exchange) bool
	}{
		{"origin form", "GET /a/b?c=d HTTP/1.1\r\nHost: h:8080\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n", func(x *exchange) bool {
			r := &x.req
			return r.Method == "GET" && r.URL.Path == "/a/b" && r.URL.RawQuery == "c=d" && r.Host == "h:8080" &&
				reflect.DeepEqual(r.Header, http.Header{"X-Multi": {"1", "2"}}) && !r.Close && r.ContentLength == 0 && !x.chunked
		}},
		{"escaped path", "GET /a%2Fb%20c HTTP/1.1\r\nHost: h\r\n\r\n", func(x *exchange) bool {
			return x.req.URL.Path == "/a/b c" && x.req.URL.RawPath == "/a%2Fb%20c"
		}},
		{"absolute form", "GET http://Example.com/x HTTP/1.1\r\nHost: other\r\n\r\n", func(x *exchange) bool {
			return x.req.Host == "Example.com" && x.req.URL.Scheme == "http" && x.req.URL.Path == "/x"
		}},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", func(x *exchange) bool {
			return *x.req.URL == url.URL{Host: "example.com:443"} && x.req.Host == "example.com:443"
		}},
		{"chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nTrailer: x-a, X-B\r\n\r\n", func(x *exchange) bool {
			r := &x.req
			return x.chunked && r.ContentLength == -1 && reflect.DeepEqual(r.TransferEncoding, []string{"chunked"}) &&
				reflect.DeepEqual(r.Trailer, http.Header{"X-A": nil, "X-B": nil}) && r.Header["Trailer"] == nil
		}},
		{"same Content-Length twice", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length:  7 \r\n\r\n", func(x *exchange) bool {
			return x.req.ContentLength == 7 && reflect.DeepEqual(x.req.Header["Content-Length"], []string{"7"})
		}},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", func(x *exchange) bool {
			return x.req.Close && x.req.ProtoMinor == 0 && x.req.Host == ""
		}},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", func(x *exchange) bool { return !x.req.Close }},
		{"close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n", func(x *exchange) bool { return x.req.Close }},
		{"LF only, empty lines first", "\r\n\nGET / HTTP/1.1\nHost: h\n\n", func(x *exchange) bool { return x.req.Host == "h" }},
		{"100-continue", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", func(x *exchange) bool { return x.expect }},
		{"100-continue, no body", "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", func(x *exchange) bool { return !x.expect }},
		{"100-continue, HTTP/1.0", "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", func(x *exchange) bool { return !x.expect }},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: h\r\n\r\n", func(x *exchange) bool { return x.req.Proto == "HTTP/1.2" && x.req.ProtoMinor == 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := parseOurs([]byte(tc.req))
			defer x.release()
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.check(x) {
				t.Errorf("%q: got %+v, URL %+v", tc.req, x.req, x.req.URL)
			}
		})
	}
}

func TestParseRefused(t *testing.T) {
	for _, tc := range []struct {
		req    string
		status int
		msg    string
	}{
		{"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400, "malformed HTTP version"},
		{"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"},
		{"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505, "unsupported protocol version"},
		{"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505, "unsupported protocol version"},
		{"GET a HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"},
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "malformed Host header"},
		{"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, reasonFolding},
		{"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400, "invalid header name"},
		{"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400, "invalid header value"},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400, "bad Content-Length"},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n", 400, "bad Content-Length"},
		{"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400, "bad Content-Length"},
		{"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "unsupported transfer encoding"},
		{"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported transfer encoding"},
		{"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n", 400, "bad trailer key"},
		{"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continued\r\nContent-Length: 1\r\n\r\n", 417, "unsupported Expect"},
		{"CONNECT h:1/x HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid CONNECT target"},
		{"CONNECT u@h:1 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid CONNECT target"},
		{"GET / HTTP/1.1\r\nHost: h\r\n", 400, "unexpected end of the request head"},
	} {
		x, err := parseOurs([]byte(tc.req))
		x.release()
		var re *requestError
		if !errors.As(err, &re) || re.status != tc.status || re.msg != tc.msg {
			t.Errorf("%q: got %v, want %d %s", tc.req, err, tc.status, tc.msg)
		}
	}
}

func TestReadHead(t *testing.T) {
	long := strings.Repeat("v", 10<<10) // longer than the reader's buffer
	head := "GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + long + "\r\n\r\n"
	x, err := parseOurs([]byte(head + "body"))
	if err != nil || x.req.Header.Get("X-Long") != long || string(x.head) != head {
		t.Errorf("long line: %v, head of %d bytes", err, len(x.head))
	}
	if rest, _ := io.ReadAll(x.br); string(rest) != "body" {
		t.Errorf("after the head: %q", rest)
	}
	x.release()

	// The limit is the head's size, empty line included.
	for _, limit := range []int{len(head) - 1, len(head)} {
		x := testExchange()
		err := x.readHead(bufio.NewReader(strings.NewReader(head)), limit)
		if want := limit < len(head); (err == errHeadTooLarge) != want {
			t.Errorf("limit %d for %d bytes: %v", limit, len(head), err)
		}
		x.release()
	}

	// The end of the connection before any byte is io.EOF, not a request to answer.
	x = testExchange()
	if err := x.readHead(bufio.NewReader(strings.NewReader("")), 100); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	x.release()
}

// parseTarget gives the URL url.ParseRequestURI gives, for targets that take the plain path
// (httphead.PlainTarget) and for those that do not.
func TestParseTarget(t *testing.T) {
	for _, target := range []string{
		"/", "/a/b", "/a?b=c&d", "/a?", "/a??", "/a?b?c", "/~user/$&+,;=:@-._", "/a%20b", "/a!b",
		"/a/../b", "/a?b#c", "/%41", "/a?%zz",
	} {
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("%q: url.ParseRequestURI: %v", target, err)
		}
		x := testExchange()
		x.req.Method = "GET"
		if err := x.parseTarget(target); err != nil || !reflect.DeepEqual(*x.req.URL, *want) {
			t.Errorf("%q: %+v, %v; url.ParseRequestURI %+v", target, x.req.URL, err, want)
		}
		x.release()
	}
}

func TestCanonical(t *testing.T) {
	for _, name := range []string{"Host", "host", "Content-Length", "content-length", "X-Forwarded-For", "X-forwarded-For", "X_y", "x_Y", "A-", "-a", "WWW-Authenticate", "Www-Authenticate", "1a", "A1b-C"} {
		if got, want := canonical(name), textproto.CanonicalMIMEHeaderKey(name) == name; got != want {
			t.Errorf("canonical(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestHasToken(t *testing.T) {
	for _, v := range []string{"100-continue", "100-Continue", " 100-continue", "a, 100-continue", "a,100-continue,b", "100-continuee", "x100-continue", "100-continue;q", "100-continue\t", "", "100", "foo 100-continue"} {
		if got, want := hasToken(v, "100-continue"), netHasToken(v, "100-continue"); got != want {
			t.Errorf("hasToken(%q) = %v, net/http %v", v, got, want)
		}
	}
}

func TestShouldClose(t *testing.T) {
	for _, tc := range []struct {
		minor int
		conn  []string
		want  bool
	}{
		{1, nil, false},
		{1, []string{"close"}, true},
		{1, []string{"keep-alive", "Close"}, true},
		{0, nil, true},
		{0, []string{"keep-alive"}, false},
		{0, []string{"keep-alive, close"}, true},
		{0, []string{"upgrade"}, true},
	} {
		if got := shouldClose(tc.minor, tc.conn); got != tc.want {
			t.Errorf("HTTP/1.%d %q: %v, want %v", tc.minor, tc.conn, got, tc.want)
		}
	}
}
