package http2_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// reqInfo is what a handler saw of its request, copied out while it ran.
type reqInfo struct {
	Method, Proto          string
	ProtoMajor, ProtoMinor int
	Host, RequestURI       string
	Path, RawQuery         string
	RemoteAddr             string
	TLS                    bool
	TLSHandshakeComplete   bool
	ALPN, SNI              string
	ContentLength          int64
	Cookie                 []string // r.Header["Cookie"]
	XMulti                 []string // r.Header["X-Multi"]
	PseudoKeys             []string // keys of r.Header that start with ':' (none, in net/http)
	Body                   string
	BodyErr                string
}

func capture(r *http.Request) reqInfo {
	in := reqInfo{
		Method: r.Method, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
		Host: r.Host, RequestURI: r.RequestURI, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		RemoteAddr: r.RemoteAddr, TLS: r.TLS != nil, ContentLength: r.ContentLength,
		Cookie: r.Header["Cookie"], XMulti: r.Header["X-Multi"],
	}
	if r.TLS != nil {
		in.TLSHandshakeComplete, in.ALPN, in.SNI = r.TLS.HandshakeComplete, r.TLS.NegotiatedProtocol, r.TLS.ServerName
	}
	for k := range r.Header {
		if strings.HasPrefix(k, ":") {
			in.PseudoKeys = append(in.PseudoKeys, k)
		}
	}
	if r.Body == nil {
		in.BodyErr = "nil Body"
	} else if b, err := io.ReadAll(r.Body); err != nil {
		in.BodyErr = err.Error()
	} else {
		in.Body = string(b)
	}
	return in
}

// TestGet serves GET requests over TLS (ALPN h2) and over h2c, from x/net/http2's Transport and
// from a raw framer client, and checks both ends: the response's status, repeated header fields,
// body and the content-length the server adds to a small response the handler finished; and a
// request as net/http's HTTP/2 server makes it: Proto HTTP/2.0, Host from :authority, RequestURI
// and URL from :path, r.TLS (handshake complete, ALPN h2, SNI) only over TLS, RemoteAddr the
// client's address, ContentLength 0 and an empty non-nil Body, repeated fields kept, cookie fields
// (the Transport splits a Cookie header into one field per cookie) joined with "; ", and no
// pseudo-header in r.Header. A HEAD response carries no body.
func TestGet(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		infos := make(chan reqInfo, 8)
		ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			infos <- capture(r)
			h := w.Header()
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Add("X-Multi", "1")
			h.Add("X-Multi", "2")
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "hello, "+r.URL.Path)
		})}, useTLS)
		wantInfo := func(got reqInfo, host, uri, path, query, remote string) reqInfo {
			w := reqInfo{
				Method: "GET", Proto: "HTTP/2.0", ProtoMajor: 2, Host: host, RequestURI: uri, Path: path,
				RawQuery: query, RemoteAddr: remote, TLS: useTLS, Cookie: []string{"a=1; b=2"},
				XMulti: []string{"x", "y"},
			}
			if useTLS {
				w.TLSHandshakeComplete, w.ALPN, w.SNI = true, "h2", testHost
			}
			return w
		}

		t.Run("transport", func(t *testing.T) {
			req, err := http.NewRequest("GET", ts.base()+"/path/a%20b?q=1&r=2", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Cookie", "a=1; b=2")
			req.Header.Add("X-Multi", "x")
			req.Header.Add("X-Multi", "y")
			resp, err := ts.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			const wantBody = "hello, /path/a b"
			if resp.StatusCode != http.StatusAccepted || resp.ProtoMajor != 2 || string(body) != wantBody {
				t.Errorf("got %s %d %q, want HTTP/2.0 202 %q", resp.Proto, resp.StatusCode, body, wantBody)
			}
			if got := resp.Header["X-Multi"]; !slices.Equal(got, []string{"1", "2"}) {
				t.Errorf("X-Multi %q, want [1 2]", got)
			}
			if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", got)
			}
			if resp.ContentLength != int64(len(wantBody)) {
				t.Errorf("ContentLength %d, want %d: a small response the handler finished gets a content-length", resp.ContentLength, len(wantBody))
			}
			got := recv(t, infos, "the handler")
			if host, port, err := net.SplitHostPort(got.RemoteAddr); err != nil || host != "127.0.0.1" || port == "0" {
				t.Errorf("RemoteAddr %q, want 127.0.0.1:port", got.RemoteAddr)
			}
			if want := wantInfo(got, ts.addr, "/path/a%20b?q=1&r=2", "/path/a b", "q=1&r=2", got.RemoteAddr); !reflect.DeepEqual(got, want) {
				t.Errorf("request\n got %+v\nwant %+v", got, want)
			}
		})

		t.Run("raw", func(t *testing.T) {
			rc := ts.raw(t)
			rc.handshake()
			rc.writeHeaders(1, true, rc.request("GET", "/raw?x=1", "cookie", "a=1", "cookie", "b=2", "x-multi", "x", "x-multi", "y")...)
			res := rc.response(1)
			if res.status != "202" || string(res.body) != "hello, /raw" || res.rst != nil {
				t.Errorf("got %s %q (reset %v), want 202 %q", res.status, res.body, res.rst, "hello, /raw")
			}
			if cl := res.get("content-length"); cl != "11" {
				t.Errorf("content-length %q, want 11", cl)
			}
			var multi []string
			for _, hf := range res.header {
				if hf.Name == "x-multi" {
					multi = append(multi, hf.Value)
				}
				if hf.Name != strings.ToLower(hf.Name) {
					t.Errorf("header field name %q is not lowercase (RFC 9113 8.2.1)", hf.Name)
				}
				if hf.Name == "connection" || hf.Name == "transfer-encoding" || hf.Name == "keep-alive" {
					t.Errorf("connection-specific field %q in an HTTP/2 response (RFC 9113 8.2.2)", hf.Name)
				}
			}
			if !slices.Equal(multi, []string{"1", "2"}) {
				t.Errorf("x-multi %q, want [1 2]", multi)
			}
			got := recv(t, infos, "the handler")
			if want := wantInfo(got, testHost, "/raw?x=1", "/raw", "x=1", rc.c.LocalAddr().String()); !reflect.DeepEqual(got, want) {
				t.Errorf("request\n got %+v\nwant %+v", got, want)
			}

			rc.writeHeaders(3, true, rc.request("HEAD", "/raw")...)
			res = rc.response(3)
			if res.status != "202" || len(res.body) != 0 || res.rst != nil {
				t.Errorf("HEAD: got %s with %d body bytes (reset %v), want 202 and no body", res.status, len(res.body), res.rst)
			}
			if got := recv(t, infos, "the HEAD handler"); got.Method != "HEAD" {
				t.Errorf("method %q, want HEAD", got.Method)
			}
		})
	})
}

// TestServeTLSListener serves a listener made with tls.NewListener, whose connections Accept
// returns before their handshake, and checks that the request's r.TLS is still the finished
// handshake's (HandshakeComplete, ALPN h2, SNI), as net/http's server makes it: the server must
// complete the handshake (tls.Conn.HandshakeContext, a no-op once done) before it reads the
// connection's state.
func TestServeTLSListener(t *testing.T) {
	t.Parallel()
	infos := make(chan reqInfo, 1)
	s := &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infos <- capture(r)
		io.WriteString(w, "ok")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(tls.NewListener(l, pki(t).serverConfig())) }()
	t.Cleanup(func() {
		s.Close()
		if err := recv(t, served, "Serve to return"); !errors.Is(err, srv.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	cc, _ := newClientConn(t, dialAddr(t, l.Addr().String(), true))
	if _, body := get(t, cc, "https://"+testHost+"/"); body != "ok" {
		t.Errorf("got %q", body)
	}
	got := recv(t, infos, "the handler")
	if !got.TLS || !got.TLSHandshakeComplete || got.ALPN != "h2" || got.SNI != testHost {
		t.Errorf("r.TLS: set %v, HandshakeComplete %v, NegotiatedProtocol %q, ServerName %q; want true, true, h2, %s",
			got.TLS, got.TLSHandshakeComplete, got.ALPN, got.SNI, testHost)
	}
}

// TestHeaderSnapshot checks that the response head is the header map as it was at WriteHeader
// (or the first Write), as net/http documents: fields set or deleted afterwards do not reach the
// head, even while the whole small response is still buffered when the handler returns.
func TestHeaderSnapshot(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Before", "1")
		w.Header().Set("X-Deleted", "1")
		if r.URL.Path == "/write" {
			io.WriteString(w, "bo")
		} else {
			w.WriteHeader(http.StatusOK)
		}
		w.Header().Set("X-After", "1")
		w.Header().Del("X-Deleted")
		io.WriteString(w, "dy")
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	for i, path := range []string{"/writeheader", "/write"} {
		stream := uint32(2*i + 1)
		rc.writeHeaders(stream, true, rc.request("GET", path)...)
		res := rc.response(stream)
		want := "dy"
		if path == "/write" {
			want = "body"
		}
		if res.status != "200" || string(res.body) != want {
			t.Errorf("%s: %s %q, want 200 %q", path, res.status, res.body, want)
		}
		if res.get("x-before") != "1" || res.get("x-deleted") != "1" || res.get("x-after") != "" {
			t.Errorf("%s: head %v, want x-before and x-deleted, and not x-after", path, res.header)
		}
	}
}

// TestRequestContentLength checks r.ContentLength as net/http sets it: the declared length, -1
// when a body follows without one (the Transport sends no content-length for a body of unknown
// length), 0 when the HEADERS frame ends the stream; and that the handler reads the body.
func TestRequestContentLength(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %q %v", r.ContentLength, b, err)
		})}, useTLS)
		cc, _ := ts.clientConn(t)
		for _, tc := range []struct {
			name string
			body io.Reader
			n    int64 // req.ContentLength
			want string
		}{
			{"none", nil, 0, `0 "" <nil>`},
			{"known", strings.NewReader("hello"), 5, `5 "hello" <nil>`},
			{"unknown", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")), -1, `-1 "hello" <nil>`},
		} {
			method := "POST"
			if tc.body == nil {
				method = "GET"
			}
			req, err := http.NewRequest(method, ts.url("/"), tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.n
			if _, body := roundTrip(t, cc, req); body != tc.want {
				t.Errorf("%s: handler saw %s, want %s", tc.name, body, tc.want)
			}
		}
	})
}

// TestConcurrentStreams sends 200 requests on one connection, 50 at a time, each with its own
// response body. The first 50 handlers wait until all 50 run: that proves the server runs a
// connection's streams concurrently (a server serving them one at a time fails the wait). Every
// request was served on the same connection (one RemoteAddr).
func TestConcurrentStreams(t *testing.T) {
	t.Parallel()
	const total, parallel = 200, 50
	bothModes(t, func(t *testing.T, useTLS bool) {
		var waiting atomic.Int32
		all := make(chan struct{})
		giveUp := make(chan struct{}) // one deadline for the whole wave: a serializing server fails once
		timer := time.AfterFunc(ioTimeout, func() { close(giveUp) })
		defer timer.Stop()
		ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/n/"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if i < parallel {
				if waiting.Add(1) == parallel {
					close(all)
				}
				select {
				case <-all:
				case <-giveUp:
					http.Error(w, fmt.Sprintf("only %d of the first %d streams ran at once", waiting.Load(), parallel), http.StatusInternalServerError)
					return
				}
			}
			w.Header().Set("X-Remote", r.RemoteAddr)
			io.WriteString(w, strings.Repeat(strconv.Itoa(i)+",", i+1))
		})}, useTLS)
		cc, conn := ts.clientConn(t)

		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failures []string
		fail := func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		for i := range total {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", ts.url(fmt.Sprintf("/n/%d", i)), nil)
				resp, err := cc.RoundTrip(req)
				if err != nil {
					fail("request %d: %v", i, err)
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				want := strings.Repeat(strconv.Itoa(i)+",", i+1)
				if err != nil || resp.StatusCode != 200 || string(b) != want {
					fail("request %d: %d %q (%v), want 200 %q", i, resp.StatusCode, clip(string(b)), err, clip(want))
				}
				if got := resp.Header.Get("X-Remote"); got != conn.LocalAddr().String() {
					fail("request %d: served for %s, want the one connection from %s", i, got, conn.LocalAddr())
				}
			}()
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Errorf("%d of %d requests failed:\n%s", len(failures), total, strings.Join(failures[:min(len(failures), 20)], "\n"))
		}
	})
}

// TestConcurrentConnections runs 8 connections at once, each with 25 requests in flight
// together, with request and response bodies of sizes from a few bytes to 100 KB, distinct for
// every request: each response must be its own request's (echoed with the connection's address
// and its ConnContext value), whatever buffers or handler goroutines the server shares between
// connections.
func TestConcurrentConnections(t *testing.T) {
	t.Parallel()
	const conns, perConn = 8, 25
	bothModes(t, func(t *testing.T, useTLS bool) {
		ts := serve(t, &srv.Server{
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, ctxKey{}, c.RemoteAddr().String())
			},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v, _ := r.Context().Value(ctxKey{}).(string)
				w.Header().Set("X-Conn", v+" "+r.RemoteAddr)
				io.Copy(w, r.Body)
			}),
		}, useTLS)
		var wg sync.WaitGroup
		errs := make(chan string, conns*perConn)
		for c := range conns {
			cc, conn := ts.clientConn(t)
			want := conn.LocalAddr().String()
			for i := range perConn {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body := randomBytes(1+(c*perConn+i)*(100_000/(conns*perConn)), byte(c*perConn+i))
					ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, "POST", ts.url("/"), bytes.NewReader(body))
					resp, err := cc.RoundTrip(req)
					if err != nil {
						errs <- fmt.Sprintf("conn %d request %d: %v", c, i, err)
						return
					}
					defer resp.Body.Close()
					got, err := io.ReadAll(resp.Body)
					if err != nil || !bytes.Equal(got, body) {
						errs <- fmt.Sprintf("conn %d request %d: %d bytes back (%v), want its own %d", c, i, len(got), err, len(body))
					}
					if h := resp.Header.Get("X-Conn"); h != want+" "+want {
						errs <- fmt.Sprintf("conn %d request %d: served as %q, want %q", c, i, h, want+" "+want)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		var failures []string
		for e := range errs {
			failures = append(failures, e)
		}
		if len(failures) > 0 {
			t.Errorf("%d of %d requests failed:\n%s", len(failures), conns*perConn, strings.Join(failures[:min(len(failures), 20)], "\n"))
		}
	})
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// TestLargeBodies moves bodies far beyond the flow-control windows (65,535 bytes initially; the
// server's own are not assumed), so both ends must send WINDOW_UPDATEs as data is consumed:
// a 5 MiB upload echoed back as it is read (full duplex), a 5 MiB download, a 2 MiB upload the
// handler reads 16 KiB at a time with pauses, and uploads the handler never reads (the server
// must give back the connection window they took, or the next request on the connection stalls).
func TestLargeBodies(t *testing.T) {
	t.Parallel()
	big := randomBytes(5<<20, 1)
	bigSum := sha256.Sum256(big)
	bothModes(t, func(t *testing.T, useTLS bool) {
		mux := http.NewServeMux()
		mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-Length", strconv.FormatInt(r.ContentLength, 10))
			io.Copy(w, r.Body)
		})
		mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
			w.Write(big)
		})
		mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
			h, n, buf := sha256.New(), 0, make([]byte, 16<<10)
			for range 10_000 {
				k, err := r.Body.Read(buf)
				h.Write(buf[:k])
				n += k
				if err == io.EOF {
					break
				}
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				time.Sleep(time.Millisecond)
			}
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		})
		mux.HandleFunc("/ignore", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ignored")
		})
		ts := serve(t, &srv.Server{Handler: mux}, useTLS)

		t.Run("echo", func(t *testing.T) {
			cc, _ := ts.clientConn(t)
			req, _ := http.NewRequest("POST", ts.url("/echo"), bytes.NewReader(big))
			resp, body := roundTrip(t, cc, req)
			if got := resp.Header.Get("X-Request-Length"); got != strconv.Itoa(len(big)) {
				t.Errorf("r.ContentLength %s, want %d", got, len(big))
			}
			if len(body) != len(big) || sha256.Sum256([]byte(body)) != bigSum {
				t.Errorf("echoed %d bytes (sha256 %x), want %d (sha256 %x)", len(body), sha256.Sum256([]byte(body)), len(big), bigSum)
			}
		})

		t.Run("download", func(t *testing.T) {
			cc, _ := ts.clientConn(t)
			_, body := get(t, cc, ts.url("/download"))
			if len(body) != len(big) || sha256.Sum256([]byte(body)) != bigSum {
				t.Errorf("got %d bytes (sha256 %x), want %d (sha256 %x)", len(body), sha256.Sum256([]byte(body)), len(big), bigSum)
			}
		})

		t.Run("slow reader", func(t *testing.T) {
			cc, _ := ts.clientConn(t)
			data := big[:2<<20]
			req, _ := http.NewRequest("POST", ts.url("/slow"), bytes.NewReader(data))
			if _, body := roundTrip(t, cc, req); body != fmt.Sprintf("%d %x", len(data), sha256.Sum256(data)) {
				t.Errorf("the handler read %s, want %d %x", body, len(data), sha256.Sum256(data))
			}
		})

		t.Run("unread", func(t *testing.T) {
			cc, _ := ts.clientConn(t)
			for i := range 4 {
				req, _ := http.NewRequest("POST", ts.url("/ignore"), bytes.NewReader(big[:1<<20]))
				if resp, body := roundTrip(t, cc, req); resp.StatusCode != 200 || body != "ignored" {
					t.Fatalf("upload %d: %d %q", i, resp.StatusCode, body)
				}
			}
			data := big[:256<<10]
			req, _ := http.NewRequest("POST", ts.url("/echo"), bytes.NewReader(data))
			if _, body := roundTrip(t, cc, req); body != string(data) {
				t.Errorf("after the unread uploads, echoed %d bytes, want the %d sent", len(body), len(data))
			}
		})
	})
}

// TestFlush proves that Flush sends at once what the handler wrote: the handler sends the head,
// then three chunks, flushing after each (with http.Flusher, and with FlushError through
// http.ResponseController), and does not go on until the client has read what it flushed. A
// server that holds flushed data back deadlocks the exchange (bounded). The streamed response has
// no content-length.
func TestFlush(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		read := make(chan struct{}, 1) // the client has read what the handler flushed
		errs := make(chan error, 8)
		ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			waitRead := func(what string) bool {
				select {
				case <-read:
					return true
				case <-r.Context().Done():
					errs <- fmt.Errorf("the request ended while the handler waited for the client to read %s: %w", what, r.Context().Err())
				case <-time.After(ioTimeout):
					errs <- fmt.Errorf("the client never read %s: Flush did not send it", what)
				}
				return false
			}
			if _, ok := w.(interface{ FlushError() error }); !ok {
				errs <- fmt.Errorf("the ResponseWriter (%T) has no FlushError method", w)
			}
			w.Header().Set("X-Streamed", "yes")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			if !waitRead("the head") {
				return
			}
			rc := http.NewResponseController(w)
			for i := range 3 {
				fmt.Fprintf(w, "chunk %d\n", i)
				if i%2 == 0 {
					w.(http.Flusher).Flush()
				} else if err := rc.Flush(); err != nil {
					errs <- fmt.Errorf("FlushError: %w", err)
					return
				}
				if !waitRead(fmt.Sprintf("chunk %d", i)) {
					return
				}
			}
			io.WriteString(w, "end\n")
		})}, useTLS)
		cc, _ := ts.clientConn(t)
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/stream"), nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("RoundTrip: %v; handler: %v", err, drain(errs))
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Streamed") != "yes" {
			t.Errorf("head: %d %v", resp.StatusCode, resp.Header)
		}
		read <- struct{}{}
		for i := range 3 {
			want := fmt.Sprintf("chunk %d\n", i)
			buf := make([]byte, len(want))
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != want {
				t.Fatalf("read %q, %v; want %q; handler: %v", buf, err, want, drain(errs))
			}
			read <- struct{}{}
		}
		rest, err := io.ReadAll(resp.Body)
		if string(rest) != "end\n" || err != nil {
			t.Errorf("the rest: %q, %v", rest, err)
		}
		if resp.ContentLength != -1 {
			t.Errorf("ContentLength %d, want -1 for a response flushed before it ended", resp.ContentLength)
		}
		for _, err := range drain(errs) {
			t.Error(err)
		}
	})
}

// TestTrailers checks response trailers both ways net/http has: declared with a "Trailer" header
// before WriteHeader and set after the body (also after a Flush), and set with http.TrailerPrefix;
// the client finds them in resp.Trailer after the body, not in resp.Header. And request trailers
// the Transport sends (req.Trailer) reach r.Trailer once the handler has read the body.
func TestTrailers(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		mux := http.NewServeMux()
		mux.HandleFunc("/declared", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Declared, X-Other")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "body")
			w.Header().Set("X-Declared", "d")
			w.Header().Set("X-Other", "o")
		})
		mux.HandleFunc("/declared-flushed", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Declared")
			io.WriteString(w, "bo")
			w.(http.Flusher).Flush()
			io.WriteString(w, "dy")
			w.Header().Set("X-Declared", "df")
		})
		mux.HandleFunc("/prefixed", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+"X-Prefixed", "p")
		})
		mux.HandleFunc("/request", func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s|%v|%s", b, err, r.Trailer.Get("X-Req-Trailer"))
		})
		ts := serve(t, &srv.Server{Handler: mux}, useTLS)
		cc, _ := ts.clientConn(t)

		for _, tc := range []struct {
			path string
			want map[string]string
		}{
			{"/declared", map[string]string{"X-Declared": "d", "X-Other": "o"}},
			{"/declared-flushed", map[string]string{"X-Declared": "df"}},
			{"/prefixed", map[string]string{"X-Prefixed": "p"}},
		} {
			resp, body := get(t, cc, ts.url(tc.path))
			if body != "body" {
				t.Errorf("%s: body %q", tc.path, body)
			}
			for k, v := range tc.want {
				if got := resp.Trailer.Get(k); got != v {
					t.Errorf("%s: trailer %s=%q, want %q (trailers %v)", tc.path, k, got, v, resp.Trailer)
				}
				if got := resp.Header.Get(k); got != "" {
					t.Errorf("%s: %s=%q sent in the head, want it only as a trailer", tc.path, k, got)
				}
			}
		}

		req, _ := http.NewRequest("POST", ts.url("/request"), io.MultiReader(strings.NewReader("payload")))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Req-Trailer": {"rt"}}
		if _, body := roundTrip(t, cc, req); body != "payload|<nil>|rt" {
			t.Errorf("the handler saw %q, want body, no error and the trailer: %q", body, "payload|<nil>|rt")
		}
	})
}

// TestCancel checks that the handler learns when its request goes away: when the client cancels
// the request mid-response (the Transport resets the stream: RST_STREAM CANCEL), r.Context() is
// done (context.Canceled) and writing to the stream soon fails, while the connection goes on
// serving other streams; and when the client closes the connection, r.Context() is done too.
func TestCancel(t *testing.T) {
	t.Parallel()
	type result struct {
		ctxErr   error
		writeErr error
	}
	bothModes(t, func(t *testing.T, useTLS bool) {
		started := make(chan struct{}, 1)
		done := make(chan result, 1)
		ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/stream" {
				io.WriteString(w, "ok")
				return
			}
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			started <- struct{}{}
			var res result
			select {
			case <-r.Context().Done():
				res.ctxErr = r.Context().Err()
			case <-time.After(ioTimeout):
				res.ctxErr = errors.New("r.Context() is not done")
				done <- res
				return
			}
			rc := http.NewResponseController(w)
			chunk := bytes.Repeat([]byte("x"), 1024)
			for range 1000 {
				if _, err := w.Write(chunk); err != nil {
					res.writeErr = err
					break
				}
				if err := rc.Flush(); err != nil {
					res.writeErr = err
					break
				}
			}
			done <- res
		})}, useTLS)

		t.Run("reset", func(t *testing.T) {
			cc, _ := ts.clientConn(t)
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/stream"), nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
				t.Fatalf("read %q, %v", buf, err)
			}
			recv(t, started, "the handler")
			cancel()
			res := recv(t, done, "the handler to end after the cancel")
			if !errors.Is(res.ctxErr, context.Canceled) {
				t.Errorf("r.Context(): %v, want context.Canceled", res.ctxErr)
			}
			if res.writeErr == nil {
				t.Error("1000 KiB of writes and flushes to the reset stream all succeeded")
			}
			if _, body := get(t, cc, ts.url("/other")); body != "ok" {
				t.Errorf("after the reset: %q", body)
			}
		})

		t.Run("connection closed", func(t *testing.T) {
			rc := ts.raw(t)
			rc.handshake()
			rc.writeHeaders(1, true, rc.request("GET", "/stream")...)
			rc.waitFor("the first DATA", func(f frame) bool { return f.Type == http2.FrameData && f.StreamID == 1 })
			recv(t, started, "the handler")
			rc.c.Close()
			if res := recv(t, done, "the handler to end after the close"); !errors.Is(res.ctxErr, context.Canceled) {
				t.Errorf("r.Context(): %v, want context.Canceled", res.ctxErr)
			}
		})
	})
}

// TestLargeHeaders moves header blocks larger than a frame (16 KiB, the client's
// SETTINGS_MAX_FRAME_SIZE) both ways: a request header block of 40 KB the client sends as HEADERS
// and CONTINUATIONs reaches the handler intact; a 40 KB response header field and a 40 KB trailer
// reach the client intact, split by the server into frames the raw client's 16 KiB limit accepts.
func TestLargeHeaders(t *testing.T) {
	t.Parallel()
	bigValue := func(c byte) string { return strings.Repeat(string(c), 40_000) }
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Big-Trailer")
		w.Header().Set("X-Big-Response", bigValue('r'))
		fmt.Fprintf(w, "%v", r.Header.Get("X-Big-Request") == bigValue('q'))
		w.Header().Set("X-Big-Trailer", bigValue('t'))
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/", "x-big-request", bigValue('q'))...)
	res := rc.response(1)
	if res.ended || res.rst != nil {
		t.Fatalf("ended %v, reset %v", res.ended, res.rst)
	}
	if res.status != "200" || string(res.body) != "true" {
		t.Errorf("got %s %q, want 200 true (the handler got the 40 KB request field intact)", res.status, res.body)
	}
	if got := res.get("x-big-response"); got != bigValue('r') {
		t.Errorf("x-big-response: %d bytes, want the 40,000 set", len(got))
	}
	var trailer string
	for _, hf := range res.trailer {
		if hf.Name == "x-big-trailer" {
			trailer = hf.Value
		}
	}
	if trailer != bigValue('t') {
		t.Errorf("x-big-trailer: %d bytes, want the 40,000 set (trailers %d fields)", len(trailer), len(res.trailer))
	}
}

// TestFlowControl checks the server's side of the client's flow control with a raw client that
// advertises SETTINGS_INITIAL_WINDOW_SIZE=100: a 70,000-byte response sends 100 bytes, then
// nothing more on that stream until the client's WINDOW_UPDATE (DATA past the window is a
// violation whenever it comes). While that stream is stalled, another stream's response goes
// through (a stalled stream blocks neither the connection nor its writer); resetting the
// stalled stream makes the handler's blocked Write return an error; WINDOW_UPDATEs for a stream
// let its response finish.
func TestFlowControl(t *testing.T) {
	t.Parallel()
	const window, size = 100, 70_000
	writeErrs := make(chan error, 2)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			io.WriteString(w, "ok")
			return
		}
		_, err := w.Write(bytes.Repeat([]byte("b"), size))
		if err == nil {
			err = http.NewResponseController(w).Flush()
		}
		writeErrs <- err
	})}, false)
	rc := ts.raw(t)
	rc.writeRaw([]byte(http2.ClientPreface))
	rc.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	if f := rc.next(); f.Type != http2.FrameSettings || f.ack() {
		t.Fatalf("the server's first frame is %v, want SETTINGS", f)
	}
	rc.note("-> SETTINGS ack")
	rc.check(rc.w.WriteSettingsAck(), "SETTINGS ack")
	// The server must have our SETTINGS applied before it sends on a stream: wait for its ACK.
	rc.waitFor("the SETTINGS ACK", func(f frame) bool { return f.Type == http2.FrameSettings && f.ack() })

	// received counts DATA bytes by stream among frames read from here on.
	received := map[uint32]int{}
	count := func(f frame) {
		if f.Type == http2.FrameData {
			received[f.StreamID] += len(f.Data)
		}
	}
	rc.writeHeaders(1, true, rc.request("GET", "/big")...)
	rc.waitFor("stream 1's first window of DATA", func(f frame) bool {
		count(f)
		return received[1] >= window
	})

	// Stream 3 is served while stream 1 is stalled.
	rc.writeHeaders(3, true, rc.request("GET", "/small")...)
	for {
		f := rc.next()
		count(f)
		if f.StreamID == 3 && (f.endStream() || f.Type == http2.FrameRSTStream) {
			if f.Type == http2.FrameRSTStream || received[3] != 2 {
				t.Fatalf("stream 3 ended with %v after %d DATA bytes, want its 2-byte response", f, received[3])
			}
			break
		}
	}
	rc.sync()
	if received[1] != window {
		t.Errorf("stream 1 got %d DATA bytes with a window of %d", received[1], window)
	}
	select {
	case err := <-writeErrs:
		t.Fatalf("the handler's %d-byte write returned (%v) with %d bytes of window", size, err, window)
	default:
	}

	// Resetting the stalled stream unblocks its handler's Write with an error.
	rc.writeRST(1, http2.ErrCodeCancel)
	if err := recv(t, writeErrs, "the stalled handler's Write to return after RST_STREAM"); err == nil {
		t.Error("the stalled Write succeeded on a stream the client reset")
	}

	// Window updates let a response finish.
	rc.writeHeaders(5, true, rc.request("GET", "/big")...)
	rc.writeWindowUpdate(5, size-window)
	rc.writeWindowUpdate(0, size)
	for {
		f := rc.next()
		count(f)
		if f.StreamID == 5 && (f.endStream() || f.Type == http2.FrameRSTStream) {
			if f.Type == http2.FrameRSTStream || received[5] != size {
				t.Errorf("stream 5 ended with %v after %d DATA bytes, want %d", f, received[5], size)
			}
			break
		}
	}
	if err := recv(t, writeErrs, "stream 5's handler"); err != nil {
		t.Errorf("stream 5's handler: %v", err)
	}
}

// TestRapidReset opens and at once resets 200 streams (HEADERS then RST_STREAM, CVE-2023-44487)
// on a server with MaxConcurrentStreams=4 whose handlers keep running after the reset (they do not
// watch r.Context()). Resetting a stream must not free its slot while its handler still runs: no
// more than 4 handlers may run at once. The server may end the connection (GOAWAY) or refuse
// streams; either way it keeps serving new connections.
func TestRapidReset(t *testing.T) {
	t.Parallel()
	const limit, streams = 4, 200
	var running, maxRunning, calls atomic.Int32
	release := make(chan struct{})
	ts := serve(t, &srv.Server{MaxConcurrentStreams: limit, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			io.WriteString(w, "ok")
			return
		}
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-time.After(ioTimeout):
		}
	})}, false)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)

	rc := ts.raw(t)
	rc.handshake()
	for i := range streams {
		id := uint32(2*i + 1)
		rc.writeHeaders(id, true, rc.request("GET", "/slow")...)
		rc.writeRST(id, http2.ErrCodeCancel)
	}
	// Let the server read them all (or give up on the connection).
	var data [8]byte
	copy(data[:], "rapidrst")
	rc.writePing(data)
	for {
		f, ok := rc.nextOrEnd()
		if !ok || f.Type == http2.FrameGoAway || f.Type == http2.FramePing && f.ack() && f.Ping == data {
			break
		}
	}
	t.Logf("%d of %d reset streams reached a handler; at most %d ran at once", calls.Load(), streams, maxRunning.Load())
	if n := maxRunning.Load(); n > limit {
		t.Errorf("%d handlers ran at once (of %d started) with MaxConcurrentStreams=%d", n, calls.Load(), limit)
	}
	releaseAll()
	cc, _ := ts.clientConn(t)
	if _, body := get(t, cc, ts.url("/ok")); body != "ok" {
		t.Errorf("a new connection after the resets: %q", body)
	}
}

// TestRequestContextEnds checks that a request's context is canceled once its handler has
// returned and the response is sent (as net/http does), so goroutines a handler leaves tied to
// r.Context() end.
func TestRequestContextEnds(t *testing.T) {
	t.Parallel()
	ctxs := make(chan context.Context, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctxs <- r.Context()
		io.WriteString(w, "ok")
	})}, false)
	cc, _ := ts.clientConn(t)
	if _, body := get(t, cc, ts.url("/")); body != "ok" {
		t.Fatalf("got %q", body)
	}
	ctx := recv(t, ctxs, "the handler")
	select {
	case <-ctx.Done():
	case <-time.After(ioTimeout):
		t.Error("r.Context() is not done after the handler returned and the response was sent")
	}
}

// TestExpectContinue checks "Expect: 100-continue" from a raw client that waits for the
// interim response before it sends the body: the server answers 100 (an informational HEADERS)
// when the handler first reads the body, then the final response; and a handler that does not
// read the body gets its final response sent with no 100 before it.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ignore" {
			io.WriteString(w, "ignored")
			return
		}
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %v", b, err)
	})}, false)
	rc := ts.raw(t)
	rc.handshake()

	rc.writeHeaders(1, false, rc.request("POST", "/read", "expect", "100-continue", "content-length", "5")...)
	f := rc.waitFor("stream 1's first HEADERS", func(f frame) bool { return f.StreamID == 1 })
	status := ""
	for _, hf := range f.Fields {
		if hf.Name == ":status" {
			status = hf.Value
		}
	}
	if f.Type != http2.FrameHeaders || status != "100" || f.endStream() {
		t.Fatalf("got %v before sending the body, want HEADERS :status 100", f)
	}
	rc.writeData(1, true, []byte("hello"))
	rc.mustOK(1, "hello <nil>")

	rc.writeHeaders(3, false, rc.request("POST", "/ignore", "expect", "100-continue", "content-length", "5")...)
	res := rc.response(3)
	if res.status != "200" || string(res.body) != "ignored" {
		t.Errorf("stream 3: %s %q, want 200 ignored", res.status, res.body)
	}
	for _, hf := range res.header {
		if hf.Name == ":status" && hf.Value != "200" {
			t.Errorf("stream 3: %v", res.header)
		}
	}
}

// TestResponseContentLength checks a handler's declared Content-Length: it is sent as is, and a
// write past it fails (http.ErrContentLength in net/http) instead of sending a body longer than
// the head says — a malformed response (RFC 9113 8.1.1).
func TestResponseContentLength(t *testing.T) {
	t.Parallel()
	writeErrs := make(chan error, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
		_, err := io.WriteString(w, " world")
		writeErrs <- err
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	res := rc.response(1)
	if res.get("content-length") != "5" {
		t.Errorf("content-length %q, want the handler's 5", res.get("content-length"))
	}
	if res.rst == nil && string(res.body) != "hello" {
		t.Errorf("body %q with content-length 5", res.body)
	}
	if err := recv(t, writeErrs, "the handler"); err == nil {
		t.Error("a write past the declared Content-Length succeeded")
	}
}

// TestContentLengthMismatch sends, from a raw client, a request whose DATA disagrees with its
// content-length (fewer bytes, then END_STREAM; more bytes). Such a request is malformed (RFC 9113
// 8.1.1): the handler must not read it as a complete body, and the stream is reset with
// PROTOCOL_ERROR, or the handler's read fails (or both). Unless the server ended the connection
// (allowed: a stream error may be treated as a connection error), the connection serves on.
func TestContentLengthMismatch(t *testing.T) {
	t.Parallel()
	type result struct {
		n   int
		err error
	}
	for _, tc := range []struct{ name, declared, sent string }{
		{"short", "10", "hello"},
		{"long", "3", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var entered atomic.Bool
			results := make(chan result, 1)
			ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/upload" {
					entered.Store(true)
					b, err := io.ReadAll(r.Body)
					results <- result{len(b), err}
				}
				io.WriteString(w, "ok")
			})}, false)
			rc := ts.raw(t)
			rc.handshake()
			rc.writeHeaders(1, false, rc.request("POST", "/upload", "content-length", tc.declared)...)
			rc.writeData(1, true, []byte(tc.sent))
			res := rc.response(1)
			connGone := res.ended || res.goaway != nil
			switch {
			case res.rst != nil:
				if res.rst.ErrCode != http2.ErrCodeProtocol {
					t.Errorf("stream reset with %v, want PROTOCOL_ERROR", res.rst.ErrCode)
				}
			case res.goaway != nil:
				if res.goaway.ErrCode != http2.ErrCodeProtocol {
					t.Errorf("GOAWAY with %v, want PROTOCOL_ERROR", res.goaway.ErrCode)
				}
			case res.ended:
				t.Error("the server closed the connection without GOAWAY")
			}
			if !connGone {
				// The connection serves on; and by the time this is answered, the first handler ran
				// if it ever will.
				rc.writeHeaders(3, true, rc.request("GET", "/after")...)
				rc.mustOK(3, "ok")
			}
			if entered.Load() {
				r := recv(t, results, "the handler's body read to return")
				if r.err == nil {
					t.Errorf("the handler read %d bytes and a clean EOF from a body declared %s bytes long (%d sent)", r.n, tc.declared, len(tc.sent))
				}
			} else if res.rst == nil && !connGone {
				t.Errorf("the handler never ran, yet the stream ended without RST_STREAM: %s %q", res.status, res.body)
			}
		})
	}
}

// TestMaxConcurrentStreams checks SETTINGS_MAX_CONCURRENT_STREAMS: the server advertises 2 in its
// first SETTINGS; with 2 streams open (their handlers blocked), a 3rd is refused (RST_STREAM
// REFUSED_STREAM or PROTOCOL_ERROR, RFC 9113 5.1.2) without reaching a handler; once the first
// two end, a new stream is served.
func TestMaxConcurrentStreams(t *testing.T) {
	t.Parallel()
	entered := make(chan string, 8)
	release := make(chan struct{})
	var calls atomic.Int32
	ts := serve(t, &srv.Server{MaxConcurrentStreams: 2, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		entered <- r.URL.Path
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "done "+r.URL.Path)
	})}, false)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)

	rc := ts.raw(t)
	rc.handshake()
	if v, ok := rc.settings[http2.SettingMaxConcurrentStreams]; !ok || v != 2 {
		t.Errorf("the server's SETTINGS have MAX_CONCURRENT_STREAMS %d (sent: %v), want 2", v, ok)
	}
	rc.writeHeaders(1, true, rc.request("GET", "/1")...)
	rc.writeHeaders(3, true, rc.request("GET", "/3")...)
	recv(t, entered, "the first handler")
	recv(t, entered, "the second handler")

	rc.writeHeaders(5, true, rc.request("GET", "/5")...)
	f := rc.waitFor("a frame on stream 5", func(f frame) bool { return f.StreamID == 5 })
	if f.Type != http2.FrameRSTStream || (f.ErrCode != http2.ErrCodeRefusedStream && f.ErrCode != http2.ErrCodeProtocol) {
		t.Errorf("stream 5 got %v, want RST_STREAM REFUSED_STREAM or PROTOCOL_ERROR", f)
	}

	releaseAll()
	rc.mustOK(1, "done /1")
	rc.mustOK(3, "done /3")
	rc.writeHeaders(7, true, rc.request("GET", "/7")...)
	rc.mustOK(7, "done /7")
	if got := recv(t, entered, "the third handler"); got != "/7" {
		t.Errorf("the third handler served %s, want /7", got)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d handlers ran, want 3 (the refused stream's must not)", n)
	}
}

// TestProtocolErrors sends what RFC 9113 forbids, or what the server must answer, from a raw
// client on h2c: a bad connection preface (the connection is closed, with nothing but the
// server's preface — SETTINGS, WINDOW_UPDATE — and GOAWAY PROTOCOL_ERROR sent before); HEADERS on an even (server-initiated) stream id and DATA
// on an idle stream (GOAWAY PROTOCOL_ERROR, then close); a WINDOW_UPDATE overflowing the
// connection window past 2^31-1 (GOAWAY FLOW_CONTROL_ERROR, then close) or a stream's window
// (RST_STREAM or GOAWAY FLOW_CONTROL_ERROR); PING (a PING ACK with the same payload); SETTINGS (a
// SETTINGS ACK, and the connection still serves).
func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			select {
			case <-r.Context().Done():
			case <-time.After(ioTimeout):
			}
			return
		}
		io.WriteString(w, "ok")
	})}, false)

	t.Run("bad preface", func(t *testing.T) {
		t.Parallel()
		for _, preface := range []string{
			"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n",
		} {
			rc := ts.raw(t)
			rc.writeRaw([]byte(preface))
			for _, f := range rc.expectClosed() {
				switch {
				case f.Type == http2.FrameSettings, f.Type == http2.FrameWindowUpdate && f.StreamID == 0:
				case f.Type == http2.FrameGoAway && f.ErrCode == http2.ErrCodeProtocol:
				default:
					t.Errorf("preface %q: the server sent %v", preface, f)
				}
			}
		}
	})

	t.Run("HEADERS on an even stream", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeHeaders(2, true, rc.request("GET", "/")...)
		rc.expectGoAway(http2.ErrCodeProtocol)
		rc.expectClosed()
	})

	t.Run("DATA on an idle stream", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeData(1, true, []byte("x"))
		rc.expectGoAway(http2.ErrCodeProtocol)
		rc.expectClosed()
	})

	t.Run("connection window overflow", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeWindowUpdate(0, 1<<31-1)
		rc.expectGoAway(http2.ErrCodeFlowControl)
		rc.expectClosed()
	})

	t.Run("stream window overflow", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeHeaders(1, true, rc.request("GET", "/block")...)
		rc.writeWindowUpdate(1, 1<<31-1)
		f := rc.waitFor("RST_STREAM or GOAWAY", func(f frame) bool {
			return f.Type == http2.FrameGoAway || f.StreamID == 1
		})
		if (f.Type != http2.FrameRSTStream && f.Type != http2.FrameGoAway) || f.ErrCode != http2.ErrCodeFlowControl {
			t.Errorf("got %v, want RST_STREAM (or GOAWAY) FLOW_CONTROL_ERROR", f)
		}
	})

	t.Run("PING", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
		rc.writePing(data)
		f := rc.waitFor("PING", isType(http2.FramePing))
		if !f.ack() || f.Ping != data || f.StreamID != 0 {
			t.Errorf("got %v, want a PING ACK with %x", f, data)
		}
	})

	t.Run("SETTINGS", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		// The ACK of the handshake's SETTINGS, then one for these.
		rc.waitFor("the SETTINGS ACK", func(f frame) bool { return f.Type == http2.FrameSettings && f.ack() })
		rc.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100_000}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 32 << 10})
		rc.waitFor("the second SETTINGS ACK", func(f frame) bool { return f.Type == http2.FrameSettings && f.ack() })
		rc.writeHeaders(1, true, rc.request("GET", "/")...)
		rc.mustOK(1, "ok")
	})
}

// TestMaxHeaderBytes checks MaxHeaderBytes=4096: a request with a 1,000-byte field is served; one
// with a 16 KiB field is refused — a 431 response, RST_STREAM, or GOAWAY — and its handler never
// runs.
func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	ts := serve(t, &srv.Server{MaxHeaderBytes: 4096, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/small", "x-small", strings.Repeat("a", 1000))...)
	rc.mustOK(1, "ok")

	rc.writeHeaders(3, true, rc.request("GET", "/big", "x-big", strings.Repeat("b", 16<<10))...)
	res := rc.response(3)
	connGone := res.ended || res.goaway != nil
	if res.rst == nil && !connGone && res.status != "431" {
		t.Errorf("the oversized request got %s %q, want 431, RST_STREAM or GOAWAY", res.status, clip(string(res.body)))
	}
	want := int32(1)
	if !connGone {
		rc.writeHeaders(5, true, rc.request("GET", "/after")...)
		rc.mustOK(5, "ok")
		want = 2
	}
	if n := calls.Load(); n != want {
		t.Errorf("%d handlers ran, want %d: the oversized request's must not", n, want)
	}
}

// TestShutdown checks graceful shutdown with a request in flight: Shutdown sends GOAWAY (NO_ERROR)
// and stops accepting (new connections are refused), but waits; a stream the client opens after
// the GOAWAY, above its last stream id, is not served; the in-flight request then completes
// normally; Shutdown returns nil after it, the server closes the connection, and Serve returns
// ErrServerClosed. (Not parallel: it dials a closed port, which a parallel test could take.)
func TestShutdown(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var newCalls atomic.Int32
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			newCalls.Add(1)
			io.WriteString(w, "new")
			return
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "done")
	})}, true)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)

	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/slow")...)
	recv(t, entered, "the handler")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		shut <- ts.s.Shutdown(ctx)
	}()
	ga := rc.expectGoAway(http2.ErrCodeNo)

	deadline := time.Now().Add(ioTimeout)
	for {
		c, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections are still accepted after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if ga.LastStreamID < 3 {
		rc.writeHeaders(3, true, rc.request("GET", "/new")...)
	}
	rc.sync()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}

	releaseAll()
	rc.mustOK(1, "done")
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	rc.expectClosed()
	ts.waitServed(t)
	if n := newCalls.Load(); n != 0 {
		t.Errorf("%d streams opened after the GOAWAY were served", n)
	}
}

// TestClose checks that Close ends everything at once: with a request in flight, the client's
// connection is closed, the handler's r.Context() is done, and Serve returns ErrServerClosed.
func TestClose(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{}, 1)
	done := make(chan error, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
			done <- r.Context().Err()
		case <-time.After(ioTimeout):
			done <- errors.New("r.Context() is not done")
		}
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	recv(t, entered, "the handler")
	if err := ts.s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	rc.expectClosed()
	if err := recv(t, done, "the handler to end"); !errors.Is(err, context.Canceled) {
		t.Errorf("r.Context(): %v, want context.Canceled", err)
	}
	ts.waitServed(t)
}

// TestIdleTimeout checks IdleTimeout: a connection with no open stream — after a request, or
// with none at all — gets GOAWAY (NO_ERROR) and is closed; a connection whose one stream runs
// three times as long as IdleTimeout is left alone until the stream ends, then closed likewise.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	ts := serve(t, &srv.Server{IdleTimeout: idle, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok")
	})}, false)

	t.Run("after a request", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeHeaders(1, true, rc.request("GET", "/")...)
		rc.mustOK(1, "ok")
		rc.expectGoAway(http2.ErrCodeNo)
		rc.expectClosed()
	})

	t.Run("no request", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.expectGoAway(http2.ErrCodeNo)
		rc.expectClosed()
	})

	t.Run("long stream", func(t *testing.T) {
		t.Parallel()
		rc := ts.raw(t)
		rc.handshake()
		rc.writeHeaders(1, true, rc.request("GET", "/long")...)
		recv(t, entered, "the handler")
		rc.expectOpen(3 * idle)
		close(release)
		rc.mustOK(1, "ok")
		rc.expectGoAway(http2.ErrCodeNo)
		rc.expectClosed()
	})
}

// TestConnState checks the ConnState hook for one connection: StateNew first, before the
// request reaches its handler; no StateClosed while the connection is open; StateClosed last,
// once, after the client closes it. (Server documents StateNew and StateClosed only; StateActive
// and StateIdle, as net/http reports them, are allowed in between.)
func TestConnState(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		var log stateLog
		firstState := make(chan []http.ConnState, 1)
		ts := serve(t, &srv.Server{ConnState: log.record, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			firstState <- log.get(r.RemoteAddr)
			io.WriteString(w, "ok")
		})}, useTLS)
		rc := ts.raw(t)
		addr := rc.c.LocalAddr().String()
		rc.handshake()
		rc.writeHeaders(1, true, rc.request("GET", "/")...)
		rc.mustOK(1, "ok")
		if got := recv(t, firstState, "the handler"); len(got) == 0 || got[0] != http.StateNew {
			t.Errorf("states when the handler ran: %v, want StateNew first", got)
		}
		rc.sync()
		if got := log.get(addr); slices.Contains(got, http.StateClosed) {
			t.Errorf("states %v with the connection open", got)
		}
		rc.c.Close()
		got := log.waitLast(t, addr, http.StateClosed)
		if got[0] != http.StateNew {
			t.Errorf("states %v, want StateNew first", got)
		}
		for i, st := range got {
			if (st == http.StateNew && i != 0) || (st == http.StateClosed && i != len(got)-1) {
				t.Errorf("states %v: %v at %d", got, st, i)
			}
		}
	})
}

type ctxKey struct{}

// TestConnContext checks that ConnContext is called once per connection, with that connection,
// and that the context it returns is under every request's r.Context().
func TestConnContext(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		var calls atomic.Int32
		ts := serve(t, &srv.Server{
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				calls.Add(1)
				return context.WithValue(ctx, ctxKey{}, "conn "+c.RemoteAddr().String())
			},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v, _ := r.Context().Value(ctxKey{}).(string)
				io.WriteString(w, v+" | "+r.RemoteAddr)
			}),
		}, useTLS)
		cc, conn := ts.clientConn(t)
		a := conn.LocalAddr().String()
		for range 2 {
			if _, body := get(t, cc, ts.url("/")); body != "conn "+a+" | "+a {
				t.Errorf("got %q, want the connection's context value and address %s", body, a)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("ConnContext called %d times for one connection", n)
		}
	})
}

// TestReadHeaderTimeout checks ReadHeaderTimeout: the server closes a connection that sends
// nothing, half a preface, or nothing after its TLS handshake, and no handler runs. And a
// connection that sent its preface and a request in time is not cut by it afterwards.
func TestReadHeaderTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	var calls atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, "ok")
	})
	plain := serve(t, &srv.Server{ReadHeaderTimeout: timeout, Handler: handler}, false)
	overTLS := serve(t, &srv.Server{ReadHeaderTimeout: timeout, Handler: handler}, true)

	t.Run("silent", func(t *testing.T) {
		t.Parallel()
		plain.raw(t).expectClosed()
	})
	t.Run("half a preface", func(t *testing.T) {
		t.Parallel()
		rc := plain.raw(t)
		rc.writeRaw([]byte(http2.ClientPreface[:12]))
		rc.expectClosed()
	})
	t.Run("silent after the TLS handshake", func(t *testing.T) {
		t.Parallel()
		overTLS.raw(t).expectClosed()
	})
	t.Run("in time", func(t *testing.T) {
		t.Parallel()
		rc := plain.raw(t)
		rc.handshake()
		rc.writeHeaders(1, true, rc.request("GET", "/")...)
		rc.mustOK(1, "ok")
		rc.expectOpen(3 * timeout)
		rc.writeHeaders(3, true, rc.request("GET", "/")...)
		rc.mustOK(3, "ok")
	})
	t.Cleanup(func() {
		// Only "in time" has its requests served.
		if n := calls.Load(); n != 2 {
			t.Errorf("%d handlers ran, want 2", n)
		}
	})
}

// TestServeConn serves single connections with ServeConn, in the calling goroutine: one accepted
// from a TCP listener (h2c) and one the test has TLS-handshaken (r.TLS set). ServeConn returns
// once the client has closed the connection.
func TestServeConn(t *testing.T) {
	t.Parallel()
	bothModes(t, func(t *testing.T, useTLS bool) {
		s := &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s tls=%v", r.Proto, r.TLS != nil)
		})}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		returned := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				returned <- err
				return
			}
			defer c.Close()
			if useTLS {
				tc := tlsServer(t, c)
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				err := tc.HandshakeContext(ctx)
				cancel()
				if err != nil {
					returned <- err
					return
				}
				c = tc
			}
			s.ServeConn(c)
			returned <- nil
		}()
		cc, conn := newClientConn(t, dialAddr(t, l.Addr().String(), useTLS))
		url := "http://" + testHost + "/"
		if useTLS {
			url = "https://" + testHost + "/"
		}
		if _, body := get(t, cc, url); body != fmt.Sprintf("HTTP/2.0 tls=%v", useTLS) {
			t.Errorf("got %q", body)
		}
		select {
		case err := <-returned:
			t.Fatalf("ServeConn returned (%v) while the connection was open", err)
		default:
		}
		cc.Close()
		conn.Close()
		if err := recv(t, returned, "ServeConn to return"); err != nil {
			t.Error(err)
		}
	})
}

// TestHandlerPanic checks that a handler's panic ends only its own stream: one that panics
// before writing gets no response (the stream is reset; a 5xx is accepted too), one that panics
// mid-body leaves the client a body that fails to read rather than a clean, truncated EOF, and
// the connection serves the next request.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/panic-mid":
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom mid-body")
		}
		io.WriteString(w, "ok")
	})}, false)
	cc, _ := ts.clientConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url("/panic"), nil)
	if resp, err := cc.RoundTrip(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 {
			t.Errorf("a panicking handler's response: %d %q", resp.StatusCode, b)
		}
	}

	req, _ = http.NewRequestWithContext(ctx, "GET", ts.url("/panic-mid"), nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("read %q and a clean EOF from a handler that panicked mid-body", b)
	}

	if _, body := get(t, cc, ts.url("/")); body != "ok" {
		t.Errorf("after the panics: %q", body)
	}
}
