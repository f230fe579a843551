package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// headerRequest is a GET whose header fields take about size bytes.
func headerRequest(path string, size int) string {
	return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: gw.test\r\nX-Big: %s\r\n\r\n", path, strings.Repeat("a", size))
}

func TestMaxRequestHeaderBytes(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	status := func(size int) int {
		t.Helper()
		c := dial(t, port, false)
		resps, _ := exchange(t, c, headerRequest("/h", size), 1)
		return resps[0].StatusCode
	}
	// Default 64 KiB (net/http reads 4 KiB more before it gives up).
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, ""))
	must(t, status(60<<10) == 200, "60 KiB of header with the default limit: not 200")
	must(t, status(80<<10) == 431, "80 KiB of header with the default limit: not 431")
	// Configured.
	apply(t, w, 2, gatewayDoc(t, "Http", port, b.port, "limits: {maxRequestHeaderBytes: 1024}"))
	must(t, status(500) == 200, "500 bytes of header with a 1 KiB limit: not 200")
	must(t, status(8<<10) == 431, "8 KiB of header with a 1 KiB limit: not 431")
	for _, r := range b.requests() {
		if len(r.header.Get("X-Big")) > 70<<10 {
			t.Errorf("backend got a header of %d bytes", len(r.header.Get("X-Big")))
		}
	}
}

// A client that sends its request head too slowly (slowloris), or never finishes a TLS handshake,
// is disconnected after readHeaderTimeoutSeconds.
func TestReadHeaderTimeout(t *testing.T) {
	for _, protocol := range []string{"Http", "Https"} {
		t.Run(protocol, func(t *testing.T) {
			b := newBackend(t)
			w := startWorker(t)
			port := freePort(t)
			apply(t, w, 1, gatewayDoc(t, protocol, port, b.port, "limits: {readHeaderTimeoutSeconds: 1}"))

			// Never a byte: on Https the handshake times out, on Http the request head does.
			raw, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			start := time.Now()
			must(t, closedByPeer(raw, 8*time.Second), "silent connection still open after 8 s")
			took := time.Since(start)
			must(t, took > 800*time.Millisecond && took < 6*time.Second, "silent connection closed after %s, want about 1 s", took)

			// Half a request head, then silence.
			c := dial(t, port, protocol == "Https")
			io.WriteString(c, "GET /slow-head HTTP/1.1\r\nHost: gw.test\r\n")
			start = time.Now()
			must(t, closedByPeer(c, 8*time.Second), "half a request head: connection still open after 8 s")
			took = time.Since(start)
			must(t, took > 800*time.Millisecond && took < 6*time.Second, "half a request head: closed after %s, want about 1 s", took)
			must(t, len(b.requests()) == 0, "backend got %d requests", len(b.requests()))
		})
	}
}

func TestClientIdleTimeout(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, "limits: {clientIdleTimeoutSeconds: 1}"))
	c := dial(t, port, false)
	resps, _ := exchange(t, c, "GET /idle HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
	must(t, resps[0].StatusCode == 200, "status %d", resps[0].StatusCode)
	start := time.Now()
	must(t, closedByPeer(c, 8*time.Second), "idle keep-alive connection still open after 8 s")
	took := time.Since(start)
	must(t, took > 800*time.Millisecond && took < 6*time.Second, "idle connection closed after %s, want about 1 s", took)
}

// At the connection limit the port stops accepting: a further client waits (its connection sits in
// the kernel's queue) and is served as soon as a connection closes, or the limit is raised.
func TestMaxConnectionsPerListener(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, "limits: {maxConnectionsPerListener: 2}"))
	hold := func() net.Conn {
		c := dial(t, port, false)
		resps, _ := exchange(t, c, "GET /held HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
		must(t, resps[0].StatusCode == 200, "status %d", resps[0].StatusCode)
		return c
	}
	c1, _ := hold(), hold()

	// waiting sends a request on a new connection and reports its answer when it comes.
	waiting := func() <-chan int {
		c := dial(t, port, false) // the kernel completes the handshake; nobody accepts yet
		io.WriteString(c, "GET /waited HTTP/1.1\r\nHost: gw.test\r\n\r\n")
		got := make(chan int, 1)
		go func() {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				got <- 0
				return
			}
			got <- resp.StatusCode
		}()
		return got
	}
	third := waiting()
	select {
	case s := <-third:
		t.Fatalf("third connection answered (%d) while two were open with a limit of 2", s)
	case <-time.After(500 * time.Millisecond):
	}
	c1.Close()
	select {
	case s := <-third:
		must(t, s == 200, "third connection: %d", s)
	case <-time.After(5 * time.Second):
		t.Fatal("third connection not served after one of the two closed")
	}

	// Two open again (the second and the third); a fourth waits until the limit is lifted.
	fourth := waiting()
	select {
	case s := <-fourth:
		t.Fatalf("fourth connection answered (%d) at the limit", s)
	case <-time.After(500 * time.Millisecond):
	}
	apply(t, w, 2, gatewayDoc(t, "Http", port, b.port, "limits: {maxConnectionsPerListener: 0}"))
	select {
	case s := <-fourth:
		must(t, s == 200, "fourth connection: %d", s)
	case <-time.After(5 * time.Second):
		t.Fatal("fourth connection not served after the limit was lifted")
	}
}

func TestMaxRequestBodyBytes(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, "limits: {maxRequestBodyBytes: 10}"))
	completed := func(path string) int {
		n := 0
		for _, r := range b.requests() {
			if r.path == path && r.bodyErr == nil {
				n++
			}
		}
		return n
	}
	chunked := func(body string) string {
		return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	cases := []struct {
		name, raw string
		status    int
		forwarded bool
	}{
		{"length at the limit", "POST /cl10 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10\r\n\r\n0123456789", 200, true},
		{"length over the limit", "POST /cl11 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 11\r\n\r\n0123456789a", 413, false},
		{"huge length", "POST /clhuge HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1000000000\r\n\r\n0123456789a", 413, false},
		{"chunked at the limit", "POST /ch10 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("0123456789"), 200, true},
		{"chunked over the limit", "POST /ch11 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n", 413, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, port, false)
			resps, bodies := exchange(t, c, tc.raw, 1)
			path := strings.Fields(tc.raw)[1]
			must(t, resps[0].StatusCode == tc.status, "status %d %q, want %d", resps[0].StatusCode, bodies[0], tc.status)
			if tc.status == 413 {
				must(t, closedByPeer(c, 5*time.Second), "connection left open after 413")
			}
			got := completed(path)
			must(t, (got == 1) == tc.forwarded, "backend completed %d request(s) for %s, forwarded=%v", got, path, tc.forwarded)
		})
	}

	// HTTP/2 (h2c): a body without a declared length is cut off at the limit too.
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, tc := range []struct {
		size   int
		status int
	}{{10, 200}, {4000, 413}} {
		path := fmt.Sprintf("/h2-%d", tc.size)
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), io.MultiReader(bytes.NewReader(make([]byte, tc.size))))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("h2c %d bytes: %v", tc.size, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		must(t, resp.ProtoMajor == 2, "h2c: served over HTTP/%d", resp.ProtoMajor)
		must(t, resp.StatusCode == tc.status, "h2c %d bytes: %d, want %d", tc.size, resp.StatusCode, tc.status)
		must(t, (completed(path) == 1) == (tc.status == 200), "h2c %d bytes: backend completed %d", tc.size, completed(path))
	}
}

// A change of limits builds a new server on the same socket: no connection attempt is refused,
// a request in flight on the old server finishes, and new connections get the new limits.
func TestLimitsChangeKeepsServing(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, ""))

	slow := make(chan int, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/slow", port))
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	for len(b.requests()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}

	// Clients connecting all along, each on a new connection.
	var failures, served atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the test's own certificate
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/loop", port))
			if err != nil {
				failures.Add(1)
				t.Logf("during the change: %v", err)
				continue
			}
			resp.Body.Close()
			served.Add(1)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	apply(t, w, 2, gatewayDoc(t, "Http", port, b.port, "limits: {maxRequestHeaderBytes: 1024, clientIdleTimeoutSeconds: 5}"))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	must(t, failures.Load() == 0, "%d connection attempts failed while the limits changed (%d served)", failures.Load(), served.Load())
	must(t, served.Load() > 10, "only %d requests served around the change", served.Load())

	c := dial(t, port, false)
	resps, _ := exchange(t, c, headerRequest("/big", 8<<10), 1)
	must(t, resps[0].StatusCode == 431, "after the change, 8 KiB of header: %d, want 431", resps[0].StatusCode)

	close(b.hold)
	select {
	case s := <-slow:
		must(t, s == 200, "request in flight across the change: %d", s)
	case <-time.After(5 * time.Second):
		t.Fatal("request in flight across the change did not finish")
	}
}

// TestLimitsChangeFinishesHTTP2Streams: when a limits change replaces a port's server, an h2c
// stream in flight on the old server's connection finishes (its connection gets GOAWAY and
// closes after it), and the client's next request, on a new connection, is served by the new
// server.
func TestLimitsChangeFinishesHTTP2Streams(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, ""))
	var states sync.Map // client connection's local address -> closed
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			states.Store(c.LocalAddr().String(), false)
		}
		return c, err
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)

	slow := make(chan *http.Response, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err != nil {
			t.Logf("slow request: %v", err)
			slow <- nil
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slow <- resp
	}()
	for deadline := time.Now().Add(5 * time.Second); len(b.requests()) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached the backend")
		}
	}
	apply(t, w, 2, gatewayDoc(t, "Http", port, b.port, "limits: {maxRequestHeaderBytes: 1024}"))

	// The replaced server serves its connections a moment longer (replacedServerLinger), then
	// sends GOAWAY: the client's next requests go to a new connection, to the new server.
	count := func() (n int) {
		states.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); count() < 2; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get(url + "/after")
		must(t, err == nil, "a request after the change: %v", err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		must(t, resp.StatusCode == 200 && resp.ProtoMajor == 2, "after the change: %s HTTP/%d", resp.Status, resp.ProtoMajor)
		must(t, time.Now().Before(deadline), "still one client connection: the old server never sent GOAWAY")
	}
	resp, err := client.Get(url + "/new")
	must(t, err == nil, "a request on the new connection: %v", err)
	resp.Body.Close()
	must(t, resp.StatusCode == 200 && resp.ProtoMajor == 2, "on the new connection: %s HTTP/%d", resp.Status, resp.ProtoMajor)

	close(b.hold)
	select {
	case resp := <-slow:
		must(t, resp != nil && resp.StatusCode == 200 && resp.ProtoMajor == 2, "the stream in flight across the change: %v", resp)
	case <-time.After(5 * time.Second):
		t.Fatal("the stream in flight across the change did not finish")
	}
}

// Https listeners: HTTP/1.1 connections go to the gateway's HTTP/1 server and still count as TLS (the backend
// is told https); h2 by ALPN is served as before.
func TestHTTPSProtocols(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Https", port, b.port, ""))
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2} // the test's own certificate
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		path := fmt.Sprintf("/h2-%v", h2)
		resp, err := client.Post(fmt.Sprintf("https://127.0.0.1:%d%s", port, path), "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		want := 1
		if h2 {
			want = 2
		}
		must(t, resp.StatusCode == 200 && resp.ProtoMajor == want, "h2=%v: %s HTTP/%d %q", h2, resp.Status, resp.ProtoMajor, body)
		for _, r := range b.requests() {
			if r.path == path && r.header.Get("X-Forwarded-Proto") != "https" {
				t.Errorf("%s: backend saw X-Forwarded-Proto %q", path, r.header.Get("X-Forwarded-Proto"))
			}
		}
	}
	// Plain HTTP sent to the Https port gets a plain answer, as from net/http.
	c := dial(t, port, false)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	must(t, strings.HasPrefix(string(got), "HTTP/1.0 400 Bad Request"), "plain HTTP to the Https port: %q", got)
}

// Http to Https and back on the same port: the socket stays open, the new protocol is served at once.
func TestProtocolChangeKeepsSocket(t *testing.T) {
	b := newBackend(t)
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, b.port, ""))
	must(t, get(t, port, "/plain") == 200, "Http listener not serving")
	plain := dial(t, port, false) // a keep-alive connection of the old server
	resps, _ := exchange(t, plain, "GET /before HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
	must(t, resps[0].StatusCode == 200, "status %d", resps[0].StatusCode)

	apply(t, w, 2, gatewayDoc(t, "Https", port, b.port, ""))
	c := dial(t, port, true)
	resps, _ = exchange(t, c, "GET /tls HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
	must(t, resps[0].StatusCode == 200, "Https after the change: %d", resps[0].StatusCode)
	// The old server closed its idle connection.
	must(t, closedByPeer(plain, 5*time.Second), "idle connection of the replaced server still open")

	apply(t, w, 3, gatewayDoc(t, "Http", port, b.port, ""))
	must(t, get(t, port, "/plain-again") == 200, "Http after changing back: not 200")
}

// A keep-alive connection idle long enough for its socket to leave Go's poller (parked after
// 100 ms, detached after a second more: dataplane/http1) serves its next request, over HTTP and
// HTTPS; closed by its client while detached, it gives its connection slot back.
func TestLongIdleConnection(t *testing.T) {
	for _, proto := range []string{"Http", "Https"} {
		t.Run(proto, func(t *testing.T) {
			b := newBackend(t)
			w := startWorker(t)
			port := freePort(t)
			apply(t, w, 1, gatewayDoc(t, proto, port, b.port, "limits: {maxConnectionsPerListener: 1}"))
			tlsOn := proto == "Https"
			c := dial(t, port, tlsOn)
			for _, path := range []string{"/a", "/b"} {
				resps, _ := exchange(t, c, "GET "+path+" HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
				must(t, resps[0].StatusCode == 200, "%s: status %d", path, resps[0].StatusCode)
				time.Sleep(1500 * time.Millisecond)
			}
			c.Close()
			// The only slot is free again: a new connection is served.
			c2 := dial(t, port, tlsOn)
			c2.SetDeadline(time.Now().Add(10 * time.Second))
			resps, _ := exchange(t, c2, "GET /c HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1)
			must(t, resps[0].StatusCode == 200, "after the detached connection closed: status %d", resps[0].StatusCode)
		})
	}
}
