package proxy

import (
	"net/http"
	"strings"
	"testing"
)

// The framer on its own: the verdict for each request net/http would hand to the request path,
// whatever the pieces the bytes arrive in (every split point is tried).
func TestFramerVerdicts(t *testing.T) {
	const (
		get  = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
		post = "POST /p HTTP/1.1\r\nHost: a\r\n"
	)
	cases := []struct {
		name   string
		stream string
		want   []string
	}{
		{"pipelined GETs", get + get + get, []string{"", "", ""}},
		{"Content-Length bodies", post + "Content-Length: 5\r\n\r\nhello" + post + "Content-Length: 0\r\n\r\n" + get, []string{"", "", ""}},
		{"chunked with extensions and trailers", post + "Transfer-Encoding: chunked\r\n\r\n5;a=\"b;c\"\r\nhello\r\na \t\r\n0123456789\r\n0\r\nX-T: 1\r\nY-T: 2\r\n\r\n" + get, []string{"", ""}},
		{"chunked, bare LF trailer end", post + "Transfer-Encoding: chunked\r\n\r\n0\r\n\n" + get, []string{"", ""}},
		{"bare LF heads", "POST /p HTTP/1.1\nHost: a\nContent-Length: 2\n\nhi" + "GET /b HTTP/1.1\nHost: a\n\n", []string{"", ""}},
		{"duplicate equal Content-Length", post + "Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi" + get, []string{"", ""}},
		{"Content-Length with spaces", post + "Content-Length: \t 2 \t\r\n\r\nhi" + get, []string{"", ""}},
		{"Transfer-Encoding with spaces, any case", post + "Transfer-Encoding:  ChUnKeD  \r\n\r\n0\r\n\r\n" + get, []string{"", ""}},
		{"leading CRLF after a POST", post + "Content-Length: 0\r\n\r\n\r\n" + get, []string{"", ""}},
		{"HTTP/1.0 keep-alive", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx" + get, []string{"", ""}},
		{"HTTP/1.0 without body", "GET /a HTTP/1.0\r\n\r\n", []string{""}},

		{"CL then TE", post + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []string{reasonCLAndTE}},
		{"TE then CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", []string{reasonCLAndTE}},
		{"CL+TE after good requests", get + post + "Content-Length: 1\r\n\r\nx" + post + "Content-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get,
			[]string{"", "", reasonCLAndTE}},
		{"HTTP/1.0 with TE", "POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []string{reasonTE10}},
		{"HTTP/1.0 with TE and CL", "POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", []string{reasonTE10}},
		{"folded field", post + "X-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", []string{reasonFolding}},
		{"folded TE", post + "Transfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\n", []string{reasonFolding}},
		{"overlong Content-Length", post + "Content-Length: " + strings.Repeat("0", 40) + "1\r\n\r\nx", []string{reasonLongValue}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqs := serverRequests([]byte(tc.stream))
			if len(reqs) < len(tc.want) {
				t.Fatalf("net/http reads %d requests from the stream, the case expects at least %d", len(reqs), len(tc.want))
			}
			for split := 0; split <= len(tc.stream); split++ {
				var f framer
				f.feed([]byte(tc.stream[:split]))
				f.feed([]byte(tc.stream[split:]))
				if got := verdicts(&f, reqs); strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Fatalf("split at %d: verdicts %q, want %q", split, got, tc.want)
				}
			}
			var f framer // a byte at a time
			for i := range len(tc.stream) {
				f.feed([]byte{tc.stream[i]})
			}
			if got := verdicts(&f, reqs); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("byte by byte: verdicts %q, want %q", got, tc.want)
			}
		})
	}
}

func verdicts(f *framer, reqs []*http.Request) []string {
	var out []string
	for _, r := range reqs {
		v := f.check(r)
		out = append(out, v)
		if v != "" {
			break
		}
	}
	return out
}

// A request the framer has no head for, or whose request line differs, is refused, and so is every
// request after it.
func TestFramerOutOfStep(t *testing.T) {
	var f framer
	f.feed([]byte("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"))
	other, _ := http.NewRequest("GET", "/x", nil)
	other.RequestURI, other.Proto = "/x", "HTTP/1.1"
	if got := f.check(other); got != reasonLost {
		t.Fatalf("mismatched request line: %q, want %q", got, reasonLost)
	}
	b, _ := http.NewRequest("GET", "/b", nil)
	b.RequestURI, b.Proto = "/b", "HTTP/1.1"
	f.feed([]byte("GET /c HTTP/1.1\r\nHost: a\r\n\r\n"))
	if got := f.check(b); got == "" {
		t.Fatal("a request after the framer lost step was let through")
	}
	var g framer
	if got := g.check(b); got != reasonLost {
		t.Fatalf("no head parsed: %q, want %q", got, reasonLost)
	}
}

// The HTTP/2 preface turns the framer off: requests on the connection are HTTP/2 from there on.
func TestFramerHTTP2(t *testing.T) {
	var f framer
	f.feed([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"))
	r, _ := http.NewRequest("POST", "/", nil)
	r.ProtoMajor, r.Proto = 2, "HTTP/2.0"
	if got := f.check(r); got != "" {
		t.Fatalf("HTTP/2 request refused: %q", got)
	}
}

// BenchmarkFramer is the guard's cost per request: following a typical request head and checking it.
func BenchmarkFramer(b *testing.B) {
	head := []byte("GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: */*\r\nAccept-Encoding: gzip\r\nCookie: session=0123456789abcdef\r\n\r\n")
	r, _ := http.NewRequest("GET", "/api/v1/items?page=2", nil)
	r.RequestURI, r.Proto = "/api/v1/items?page=2", "HTTP/1.1"
	var f framer
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		f.feed(head)
		if f.check(r) != "" {
			b.Fatal("refused")
		}
	}
}
