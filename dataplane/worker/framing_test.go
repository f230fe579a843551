package worker_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Ambiguous request framing, sent with a raw socket to a real listener, is answered before
// anything reaches the backend, and the connection is closed (the next request's start is not
// known). Some cases are refused as net/http's server refuses them (400, or 501 for a transfer
// coding other than chunked, as RFC 9112 6.1 and nginx have it); the others, which net/http would
// resolve silently, the gateway's HTTP/1 server (dataplane/http1) refuses with 400 and a reason.
func TestAmbiguousFramingRefused(t *testing.T) {
	const post = "POST /t HTTP/1.1\r\nHost: gw.test\r\n"
	cases := []struct {
		name   string
		raw    string
		status int
		by     string // "net/http": refused as net/http does; "gateway": refused where net/http would not refuse
	}{
		{"Content-Length then Transfer-Encoding", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"Transfer-Encoding then Content-Length", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"CL.TE smuggling", post + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400, "gateway"},
		{"TE.CL smuggling", post + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\nGPOST /t HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n", 400, "gateway"},
		{"Content-Length with Transfer-Encoding in any case", post + "content-length: 5\r\ntRaNsFeR-eNcOdInG: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"Transfer-Encoding folded onto the next line", post + "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"another field folded", post + "Content-Length: 5\r\nX-Folded: a\r\n\t b\r\n\r\nhello", 400, "gateway"},
		{"Content-Length folded into an invalid value", post + "Content-Length: 5\r\n\t 5\r\n\r\nhello", 400, "net/http"},
		{"HTTP/1.0 with Transfer-Encoding", "POST /t HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"HTTP/1.0 with Transfer-Encoding and Content-Length", "POST /t HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "gateway"},
		{"duplicate Content-Length, different values", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "net/http"},
		{"Content-Length list", post + "Content-Length: 5, 6\r\n\r\nhello!", 400, "net/http"},
		{"Content-Length list, same values", post + "Content-Length: 5, 5\r\n\r\nhello", 400, "net/http"},
		{"Content-Length signed", post + "Content-Length: +5\r\n\r\nhello", 400, "net/http"},
		{"Content-Length negative", post + "Content-Length: -1\r\n\r\nhello", 400, "net/http"},
		{"Content-Length empty", post + "Content-Length:\r\n\r\n", 400, "net/http"},
		{"Transfer-Encoding with a space before the colon", post + "Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "net/http"},
		{"Transfer-Encoding gzip", post + "Transfer-Encoding: gzip\r\n\r\nhello", 501, "net/http"},
		{"Transfer-Encoding gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "net/http"},
		{"Transfer-Encoding identity with Content-Length", post + "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", 501, "net/http"},
		{"Transfer-Encoding chunked twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "net/http"},
		{"Transfer-Encoding chunked, chunked", post + "Transfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "net/http"},
		{"Transfer-Encoding xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "net/http"},
		{"Transfer-Encoding empty", post + "Transfer-Encoding:\r\n\r\n", 501, "net/http"},
	}
	for _, protocol := range []string{"Http", "Https"} {
		t.Run(protocol, func(t *testing.T) {
			b := newBackend(t)
			w := startWorker(t)
			port := freePort(t)
			apply(t, w, 1, gatewayDoc(t, protocol, port, b.port, ""))
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := len(b.requests())
					c := dial(t, port, protocol == "Https")
					resps, bodies := exchange(t, c, tc.raw, 1)
					must(t, resps[0].StatusCode == tc.status, "status %d %q, want %d (by %s)", resps[0].StatusCode, bodies[0], tc.status, tc.by)
					if tc.by == "gateway" {
						must(t, strings.HasPrefix(bodies[0], "400 Bad Request: "), "body %q, want the gateway's reason", bodies[0])
					}
					must(t, closedByPeer(c, 5*time.Second), "connection left open after a refused request")
					if got := b.requests()[before:]; len(got) != 0 {
						t.Fatalf("backend received %d request(s): %+v", len(got), got)
					}
				})
			}
		})
	}
}

// A refused request after good ones on the same keep-alive connection: the good ones are
// forwarded, the bad one and everything after it are not.
func TestPipelinedSmugglingRefused(t *testing.T) {
	for _, protocol := range []string{"Http", "Https"} {
		t.Run(protocol, func(t *testing.T) {
			b := newBackend(t)
			w := startWorker(t)
			port := freePort(t)
			apply(t, w, 1, gatewayDoc(t, protocol, port, b.port, ""))
			c := dial(t, port, protocol == "Https")
			raw := "GET /a HTTP/1.1\r\nHost: gw.test\r\n\r\n" +
				"POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc" +
				"POST /c HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				"GET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
			resps, bodies := exchange(t, c, raw, 3)
			want := []int{200, 200, 400}
			for i, r := range resps {
				must(t, r.StatusCode == want[i], "response %d: %d %q, want %d", i+1, r.StatusCode, bodies[i], want[i])
			}
			must(t, closedByPeer(c, 5*time.Second), "connection left open after a refused request")
			var paths []string
			for _, r := range b.requests() {
				paths = append(paths, r.path)
			}
			must(t, strings.Join(paths, ",") == "/a,/b", "backend received %v, want [/a /b]", paths)
		})
	}
}

// Well-framed requests of every shape pass the guard unchanged, pipelined on one connection.
func TestWellFramedRequestsPass(t *testing.T) {
	for _, protocol := range []string{"Http", "Https"} {
		t.Run(protocol, func(t *testing.T) {
			b := newBackend(t)
			w := startWorker(t)
			port := freePort(t)
			apply(t, w, 1, gatewayDoc(t, protocol, port, b.port, ""))
			c := dial(t, port, protocol == "Https")
			reqs := []struct{ raw, want string }{
				{"GET /get HTTP/1.1\r\nHost: gw.test\r\n\r\n", "ok GET /get 0"},
				{"POST /cl HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello", "ok POST /cl 5"},
				{"POST /dup HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "ok POST /dup 3"},
				{"POST /chunked HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
					"5;name=value\r\nhello\r\nA  \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n", "ok POST /chunked 15"},
				{"POST /lf HTTP/1.1\nHost: gw.test\nContent-Length: 2\n\nhi", "ok POST /lf 2"},
				{"GET /body HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\n\r\nbody", "ok GET /body 4"},
				{"OPTIONS * HTTP/1.1\r\nHost: gw.test\r\n\r\n", ""},
				{"POST /after-options HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n", "ok POST /after-options 0"},
				{"\r\nPOST /leading-crlf HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\n\r\nx", "ok POST /leading-crlf 1"},
				{"GET http://gw.test/absolute?q=1 HTTP/1.1\r\nHost: gw.test\r\n\r\n", "ok GET /absolute 0"},
				{"GET /http10 HTTP/1.0\r\nHost: gw.test\r\nConnection: keep-alive\r\n\r\n", "ok GET /http10 0"},
				{"GET /last HTTP/1.1\r\nHost: gw.test\r\n\r\n", "ok GET /last 0"},
			}
			var raw strings.Builder
			for _, r := range reqs {
				raw.WriteString(r.raw)
			}
			resps, bodies := exchange(t, c, raw.String(), len(reqs))
			for i, r := range resps {
				if r.StatusCode != http.StatusOK || bodies[i] != reqs[i].want {
					t.Errorf("request %d (%q): %d %q, want 200 %q", i+1, strings.SplitN(reqs[i].raw, "\n", 2)[0], r.StatusCode, bodies[i], reqs[i].want)
				}
			}
			// The chunked body arrived whole, trailers and all.
			for _, r := range b.requests() {
				if r.path == "/chunked" && r.body != "hello0123456789" {
					t.Errorf("backend got chunked body %q (err %v)", r.body, r.bodyErr)
				}
			}
			must(t, !closedByPeer(c, 200*time.Millisecond), "connection closed after well-framed requests")
			fmt.Fprint(c, "GET /still-open HTTP/1.1\r\nHost: gw.test\r\n\r\n")
			c.SetDeadline(time.Now().Add(5 * time.Second))
			resps, _ = exchange(t, c, "", 1)
			must(t, resps[0].StatusCode == 200, "keep-alive connection: %d", resps[0].StatusCode)

			// The client's "Connection: close" ends the connection after the response.
			resps, _ = exchange(t, c, "GET /close HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n", 1)
			must(t, resps[0].StatusCode == 200 && resps[0].Close, "Connection: close: %d, Close %v", resps[0].StatusCode, resps[0].Close)
			must(t, closedByPeer(c, 5*time.Second), "connection left open after Connection: close")
		})
	}
}

// A request reaches the backend framed as the client framed it, over HTTP/1.1, HTTP/2 (TLS) and
// h2c alike: no body framing for a GET (HTTP/2 hands the handler a GET with a body that ends at
// once: it must not go on chunked), Content-Length: 0 for an empty POST, the length when known,
// chunked when not.
func TestBodyFramingAcrossProtocols(t *testing.T) {
	type framing struct {
		te     []string
		length int64
		body   string
	}
	got := make(chan framing, 1)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			return // a health probe
		}
		b, _ := io.ReadAll(r.Body)
		got <- framing{r.TransferEncoding, r.ContentLength, string(b)}
	}))
	t.Cleanup(origin.Close)
	originPort := portOf(origin.Listener.Addr())

	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "h2c"} {
		t.Run(strings.ReplaceAll(proto, "/", ""), func(t *testing.T) {
			w := startWorker(t)
			port := freePort(t)
			listener, scheme := "Https", "https"
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the test's own certificate
			switch proto {
			case "HTTP/2":
				tr.ForceAttemptHTTP2 = true
			case "h2c":
				listener, scheme = "Http", "http"
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			apply(t, w, 1, gatewayDoc(t, listener, port, originPort, ""))
			url := scheme + "://127.0.0.1:" + strconv.Itoa(port) + "/x"
			for _, tc := range []struct {
				method string
				body   io.Reader
				want   framing
			}{
				{"GET", nil, framing{nil, 0, ""}},
				{"POST", http.NoBody, framing{nil, 0, ""}},
				{"POST", strings.NewReader("hello"), framing{nil, 5, "hello"}},
				{"POST", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")), framing{[]string{"chunked"}, -1, "hello"}},
			} {
				req, _ := http.NewRequest(tc.method, url, tc.body)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("%s: %v", tc.method, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				must(t, resp.ProtoMajor == 2 == (proto != "HTTP/1.1"), "served over %s, want %s", resp.Proto, proto)
				select {
				case f := <-got:
					must(t, slices.Equal(f.te, tc.want.te) && f.length == tc.want.length && f.body == tc.want.body,
						"%s %s: the backend got Transfer-Encoding %v, length %d, body %q; want %v, %d, %q",
						proto, tc.method, f.te, f.length, f.body, tc.want.te, tc.want.length, tc.want.body)
				case <-time.After(5 * time.Second):
					t.Fatalf("%s %s: nothing reached the backend (status %d)", proto, tc.method, resp.StatusCode)
				}
			}
		})
	}
}
