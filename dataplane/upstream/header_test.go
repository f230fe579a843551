package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestTokenListed(t *testing.T) {
	tests := []struct {
		values []string
		name   string
		want   bool
	}{
		{[]string{"close"}, "close", true},
		{[]string{"Keep-Alive, X-Foo"}, "x-foo", true},
		{[]string{"keep-alive", " x-foo ,\tx-bar"}, "X-Bar", true},
		{[]string{"x-foobar"}, "x-foo", false},
		{[]string{""}, "x", false},
		{nil, "x", false},
		{[]string{"a,,b"}, "b", true},
	}
	for _, tt := range tests {
		if got := tokenListed(tt.values, tt.name); got != tt.want {
			t.Errorf("tokenListed(%q, %q) = %v, want %v", tt.values, tt.name, got, tt.want)
		}
	}
}

func TestCopyResponseHeader(t *testing.T) {
	src := http.Header{
		"Connection":          {"X-Internal, keep-alive"},
		"X-Internal":          {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-Sum"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"h2c"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authenticate":  {"Basic"},
		"Proxy-Authorization": {"Basic x"},
		"Content-Length":      {"10"},
		"Content-Type":        {"text/plain"},
		"Vary":                {"Accept"},
	}
	dst := http.Header{"Vary": {"Origin"}, "X-Gateway": {"1"}}
	copyResponseHeader(dst, src)
	want := http.Header{
		"Content-Length": {"10"},
		"Content-Type":   {"text/plain"},
		"Vary":           {"Origin", "Accept"},
		"X-Gateway":      {"1"},
	}
	if !reflect.DeepEqual(dst, want) {
		t.Errorf("got %v\nwant %v", dst, want)
	}
}

func TestValidators(t *testing.T) {
	for _, tt := range []struct {
		fn   func(string) bool
		name string
		in   string
		want bool
	}{
		{validToken, "token", "X-Forwarded-For", true},
		{validToken, "token", "", false},
		{validToken, "token", "a b", false},
		{validToken, "token", "a:b", false},
		{validToken, "token", "PROPFIND", true},
		{validHeaderValue, "value", "text/html; q=0.9\tx", true},
		{validHeaderValue, "value", "caf\xc3\xa9", true},
		{validHeaderValue, "value", "a\r\nb", false},
		{validHeaderValue, "value", "a\x00", false},
		{validHeaderValue, "value", "a\x7f", false},
		{validTarget, "target", "/a/b?c=d", true},
		{validTarget, "target", "/a b", false},
		{validTarget, "target", "/a\tb", false},
		{validTarget, "target", "example.com:8080", true},
	} {
		if got := tt.fn(tt.in); got != tt.want {
			t.Errorf("%s(%q) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestWriteRequestHeader checks the exact bytes of serialized requests.
func TestWriteRequestHeader(t *testing.T) {
	tests := []struct {
		name string
		req  func() *http.Request
		want string
	}{
		{
			name: "get",
			req: func() *http.Request {
				return &http.Request{Method: "GET", URL: &url.URL{Path: "/x", RawQuery: "a=1"}, Host: "h",
					Header: http.Header{"Accept": {"*/*"}}}
			},
			want: "GET /x?a=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
		},
		{
			name: "empty path, host from URL, force query",
			req: func() *http.Request {
				return &http.Request{URL: &url.URL{Host: "u.example", ForceQuery: true}}
			},
			want: "GET /? HTTP/1.1\r\nHost: u.example\r\n\r\n",
		},
		{
			name: "escaped path kept",
			req: func() *http.Request {
				return &http.Request{Method: "GET", URL: &url.URL{Path: "/a/b c", RawPath: "/a%2Fb%20c"}, Host: "h"}
			},
			want: "GET /a%2Fb%20c HTTP/1.1\r\nHost: h\r\n\r\n", // RawPath preserved (%2F is not /)
		},
		{
			name: "options asterisk",
			req: func() *http.Request {
				return &http.Request{Method: "OPTIONS", URL: &url.URL{Path: "*"}, Host: "h"}
			},
			want: "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		},
		{
			name: "empty post, close",
			req: func() *http.Request {
				return &http.Request{Method: "POST", URL: &url.URL{Path: "/"}, Host: "h", Close: true,
					Header: http.Header{"Expect": {"100-continue"}, "Host": {"ignored"}}}
			},
			want: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		},
		{
			name: "length body with expect",
			req: func() *http.Request {
				return &http.Request{Method: "PUT", URL: &url.URL{Path: "/f"}, Host: "h", ContentLength: 3,
					Body: io.NopCloser(strings.NewReader("abc")), Header: http.Header{"Expect": {"100-Continue"}}}
			},
			want: "PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
		},
		{
			name: "chunked with trailer",
			req: func() *http.Request {
				return &http.Request{Method: "POST", URL: &url.URL{Path: "/"}, Host: "h", ContentLength: -1,
					Body: io.NopCloser(strings.NewReader("abc")), Trailer: http.Header{"X-Sum": nil}}
			},
			want: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := &conn{bw: bufio.NewWriter(&buf)}
			out := tt.req()
			var ri reqInfo
			if err := ri.init(out, "default.example"); err != nil {
				t.Fatal(err)
			}
			if err := c.writeRequestHeader(out, &ri); err != nil {
				t.Fatal(err)
			}
			c.bw.Flush()
			if got := buf.String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestReqInfoDefaults(t *testing.T) {
	p := NewPool("backend.internal:8080", Options{})
	defer p.Close()
	if p.Addr() != "backend.internal:8080" {
		t.Errorf("Addr = %q", p.Addr())
	}
	var ri reqInfo
	if err := ri.init(&http.Request{URL: &url.URL{Path: "/"}}, p.Addr()); err != nil {
		t.Fatal(err)
	}
	if ri.method != "GET" || ri.host != "backend.internal:8080" || ri.kind != bodyNone || !ri.retryable {
		t.Errorf("defaults: %+v", ri)
	}
	if err := ri.init(&http.Request{Method: "CONNECT", URL: &url.URL{Host: "x:443"}}, "h"); err == nil {
		t.Error("CONNECT accepted")
	}
	if err := ri.init(&http.Request{Method: "GET"}, "h"); err == nil {
		t.Error("nil URL accepted")
	}
}
