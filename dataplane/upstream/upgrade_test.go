package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// ioBound bounds every blocking read and write of the test clients and
// backends, so a broken tunnel fails the test instead of hanging it.
const ioBound = 10 * time.Second

// RFC 6455 section 1.3: the sample key and the accept value it must produce.
const (
	wsSampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	wsSampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// wsAccept computes Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455
// section 4.2.2).
func wsAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// WebSocket opcodes used by the tests.
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
)

// writeFrame writes one unfragmented WebSocket frame (RFC 6455 section 5.2),
// masked as clients must.
func writeFrame(w io.Writer, opcode byte, payload []byte, mask bool) error {
	hdr := []byte{0x80 | opcode}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, m|byte(n))
	case n <= 0xffff:
		hdr = append(hdr, m|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, m|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	data := payload
	if mask {
		key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
		hdr = append(hdr, key[:]...)
		data = make([]byte, len(payload))
		for i, b := range payload {
			data[i] = b ^ key[i%4]
		}
	}
	_, err := w.Write(append(hdr, data...))
	return err
}

// readFrame reads one WebSocket frame and unmasks its payload.
func readFrame(r io.Reader) (opcode byte, payload []byte, masked bool, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	opcode, masked = h[0]&0x0f, h[1]&0x80 != 0
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if masked {
		if _, err = io.ReadFull(r, key[:]); err != nil {
			return
		}
	}
	if n > 1<<24 {
		return 0, nil, false, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return
}

// wsEchoServe is a tiny RFC 6455 server: it checks the opening handshake,
// answers with Sec-WebSocket-Accept, sends a "welcome" message of its own and
// then echoes every data frame prefixed with "echo: ", until it receives a
// close frame, which it answers before closing the connection. Every request
// it reads is sent to seen; done receives the error that ended the session
// (nil after a close handshake).
func wsEchoServe(seen chan<- *http.Request, done chan<- error) func(c net.Conn, br *bufio.Reader, idx int) {
	return func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		done <- func() error {
			req, err := http.ReadRequest(br)
			if err != nil {
				return err
			}
			seen <- req
			key := req.Header.Get("Sec-WebSocket-Key")
			if !tokenListed(req.Header["Connection"], "upgrade") ||
				!strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || key == "" {
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				return errors.New("not a WebSocket handshake")
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"+
				"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Backend: ws-echo\r\n"+
				"Keep-Alive: timeout=5\r\n\r\n", wsAccept(key)); err != nil {
				return err
			}
			if err := writeFrame(c, opText, []byte("welcome"), false); err != nil {
				return err
			}
			for {
				op, payload, masked, err := readFrame(br)
				if err != nil {
					return err
				}
				if !masked {
					return errors.New("unmasked client frame")
				}
				switch op {
				case opClose:
					return writeFrame(c, opClose, payload, false)
				case opText, opBinary:
					if err := writeFrame(c, op, append([]byte("echo: "), payload...), false); err != nil {
						return err
					}
				}
			}
		}()
	}
}

// tracker records the calls of Upgrade's track callback.
type tracker struct {
	mu     sync.Mutex
	events []bool
}

func (tr *tracker) track(open bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, open)
}

// expect checks the exact sequence of calls so far.
func (tr *tracker) expect(t *testing.T, want ...bool) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !slices.Equal(tr.events, want) {
		t.Errorf("track calls %v, want %v", tr.events, want)
	}
}

// upgradeFront is a gateway front end: requests with an Upgrade header go to
// Pool.Upgrade, others to Forward. The upgrade context is the request context,
// canceled also by cancelTunnels (as connection draining would) and at the
// end of the test.
type upgradeFront struct {
	*httptest.Server
	results       chan result
	tr            tracker
	cancelTunnels context.CancelFunc
}

func newUpgradeFront(t *testing.T, p *Pool) *upgradeFront {
	t.Helper()
	drain, cancel := context.WithCancel(context.Background())
	f := &upgradeFront{results: make(chan result, 16), cancelTunnels: cancel}
	forward := frontHandler(p, 5*time.Second)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := strings.Join(r.Header.Values("Upgrade"), ", ")
		if up == "" {
			forward(w, r)
			return
		}
		for _, h := range hopHeaders {
			delete(r.Header, h)
		}
		r.Header.Set("X-Forwarded-For", "192.0.2.1")
		w.Header().Set("X-Gateway", "fleetgate") // caller-set response fields go out with the 101
		ctx, cancelReq := context.WithCancel(r.Context())
		defer cancelReq()
		defer context.AfterFunc(drain, cancelReq)()
		status, err := p.Upgrade(ctx, w, r, up, 5*time.Second, f.tr.track)
		f.results <- result{status, err}
		if status == 0 {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	// Cleanups run last-in first-out: tunnels end before the backend,
	// which waits for its connections, is stopped.
	t.Cleanup(f.Close)
	t.Cleanup(cancel)
	return f
}

// dialFront opens a client connection to the front whose I/O is bounded.
func dialFront(t *testing.T, f *upgradeFront) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", f.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioBound))
	return c.(*net.TCPConn), bufio.NewReader(c)
}

// wsHandshake is the client's opening handshake for the RFC sample key.
const wsHandshake = "GET /chat?room=1 HTTP/1.1\r\nHost: gw.example\r\nUpgrade: websocket\r\n" +
	"Connection: Upgrade\r\nSec-WebSocket-Key: " + wsSampleKey + "\r\nSec-WebSocket-Version: 13\r\n" +
	"Origin: http://gw.example\r\n\r\n"

// sendRequest writes raw (possibly followed by early bytes) and reads the response header.
func sendRequest(t *testing.T, c net.Conn, br *bufio.Reader, raw string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return resp
}

// awaitUpgrade waits for the front handler's Upgrade call to return.
func awaitUpgrade(t *testing.T, f *upgradeFront) result {
	t.Helper()
	return await(t, f.results)
}

// tlsListener returns a loopback TLS listener and a client config trusting it.
func tlsListener(t *testing.T) (net.Listener, *tls.Config) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	ts.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	return ln, &tls.Config{RootCAs: roots}
}

// TestUpgradeWebSocket runs a WebSocket session through Upgrade against an
// RFC 6455 echo server, over plain TCP and over TLS to the backend.
func TestUpgradeWebSocket(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[useTLS], func(t *testing.T) {
			seen := make(chan *http.Request, 4)
			done := make(chan error, 4)
			var (
				rb   *rawBackend
				opts Options
			)
			if useTLS {
				ln, cfg := tlsListener(t)
				rb, opts.TLSConfig = serveRaw(t, ln, wsEchoServe(seen, done)), cfg
			} else {
				rb = newRawBackend(t, wsEchoServe(seen, done))
			}
			p := NewPool(rb.addr(), opts)
			defer p.Close()
			f := newUpgradeFront(t, p)
			c, br := dialFront(t, f)

			resp := sendRequest(t, c, br, wsHandshake)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Upgrade": "websocket", "Connection": "Upgrade", "Sec-Websocket-Accept": wsSampleAccept,
				"X-Backend": "ws-echo", "X-Gateway": "fleetgate",
			} {
				if got := resp.Header[k]; len(got) != 1 || got[0] != want {
					t.Errorf("101 header %s = %q, want [%q]", k, got, want)
				}
			}
			if wsAccept(wsSampleKey) != wsSampleAccept {
				t.Fatal("wsAccept does not match RFC 6455")
			}
			if v, ok := resp.Header["Keep-Alive"]; ok {
				t.Errorf("hop-by-hop Keep-Alive %q forwarded in the 101", v)
			}

			req := <-seen
			for k, want := range map[string]string{
				"Connection": "Upgrade", "Upgrade": "websocket", "Sec-Websocket-Key": wsSampleKey,
				"Sec-Websocket-Version": "13", "X-Forwarded-For": "192.0.2.1",
			} {
				if got := req.Header[k]; len(got) != 1 || got[0] != want {
					t.Errorf("backend saw %s = %q, want [%q]", k, got, want)
				}
			}
			if req.Host != "gw.example" || req.URL.RequestURI() != "/chat?room=1" {
				t.Errorf("backend saw Host %q, target %q", req.Host, req.URL.RequestURI())
			}

			if op, msg, _, err := readFrame(br); err != nil || op != opText || string(msg) != "welcome" {
				t.Fatalf("server message: op %d %q, err %v", op, msg, err)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 70000/16) // spans many reads
			for i, msg := range [][]byte{[]byte("hello"), {}, []byte(strings.Repeat("x", 300)), big, []byte("bye")} {
				op := byte(opText)
				if i == 3 {
					op = opBinary
				}
				if err := writeFrame(c, op, msg, true); err != nil {
					t.Fatal(err)
				}
				gotOp, got, masked, err := readFrame(br)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if gotOp != op || masked || !bytes.Equal(got, append([]byte("echo: "), msg...)) {
					t.Fatalf("message %d: got op %d masked %v %d bytes, want echo of %d bytes", i, gotOp, masked, len(got), len(msg))
				}
			}

			// Closing handshake: the server answers and closes; the
			// client sees the close frame, then EOF.
			if err := writeFrame(c, opClose, []byte{0x03, 0xe8}, true); err != nil {
				t.Fatal(err)
			}
			if op, payload, _, err := readFrame(br); err != nil || op != opClose || !bytes.Equal(payload, []byte{0x03, 0xe8}) {
				t.Fatalf("close frame: op %d %x, err %v", op, payload, err)
			}
			if err := <-done; err != nil {
				t.Fatalf("backend session: %v", err)
			}
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after the backend closed, client read %d, %v; want EOF", n, err)
			}
			c.Close()
			r := awaitUpgrade(t, f)
			if r.status != http.StatusSwitchingProtocols || r.err != nil {
				t.Fatalf("Upgrade returned %d, %v; want 101, nil", r.status, r.err)
			}
			f.tr.expect(t, true, false)
			if n := rb.accepted.Load(); n != 1 {
				t.Errorf("backend accepted %d connections, want 1", n)
			}
			if n := p.IdleConns(); n != 0 {
				t.Errorf("tunnel connection pooled: %d idle", n)
			}
		})
	}
}

// TestUpgradeEarlyBytes: the client sends bytes in the same write as its
// request and the backend sends bytes in the same write as its 101. Both
// arrive, in order, ahead of later traffic.
func TestUpgradeEarlyBytes(t *testing.T) {
	const clientEarly, serverEarly = "CLIENT-EARLY|", "SERVER-EARLY|"
	got := make(chan string, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		req, err := http.ReadRequest(br)
		if err != nil || req.Header.Get("Upgrade") != "x-raw/1" {
			got <- fmt.Sprintf("bad request: %v", err)
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: X-Raw/1\r\nConnection: Upgrade\r\n\r\n"+serverEarly)
		b := make([]byte, len(clientEarly))
		_, err = io.ReadFull(br, b)
		got <- string(b)
		if err == nil {
			io.Copy(c, br) // echo the rest
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	f := newUpgradeFront(t, p)
	c, br := dialFront(t, f)

	resp := sendRequest(t, c, br, "GET / HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: x-raw/1\r\n\r\n"+clientEarly)
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "X-Raw/1" {
		t.Fatalf("status %d, Upgrade %q", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	b := make([]byte, len(serverEarly))
	if _, err := io.ReadFull(br, b); err != nil || string(b) != serverEarly {
		t.Fatalf("client got %q, %v; want %q", b, err, serverEarly)
	}
	if s := <-got; s != clientEarly {
		t.Fatalf("backend got %q, want %q", s, clientEarly)
	}
	io.WriteString(c, "later")
	b = make([]byte, 5)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "later" {
		t.Fatalf("echo after early bytes: %q, %v", b, err)
	}
	c.Close()
	if r := awaitUpgrade(t, f); r.status != http.StatusSwitchingProtocols || r.err != nil {
		t.Fatalf("Upgrade returned %d, %v; want 101, nil", r.status, r.err)
	}
	f.tr.expect(t, true, false)
}

// TestUpgradeHalfClose: the client shuts down its write side; the backend
// sees EOF and can still answer, and the client receives the answer. Closing
// the Pool does not disturb the tunnel.
func TestUpgradeHalfClose(t *testing.T) {
	backendEOF := make(chan error, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		if _, err := http.ReadRequest(br); err != nil {
			backendEOF <- err
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		data, err := io.ReadAll(br) // until the client's half-close arrives
		backendEOF <- err
		fmt.Fprintf(c, "got %q after EOF", data)
	})
	p := NewPool(rb.addr(), Options{})
	f := newUpgradeFront(t, p)
	c, br := dialFront(t, f)

	resp := sendRequest(t, c, br, wsHandshake)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p.Close() // tunnels are not the Pool's
	io.WriteString(c, "ping")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := <-backendEOF; err != nil {
		t.Fatalf("backend did not see a clean EOF: %v", err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != `got "ping" after EOF` {
		t.Fatalf("client got %q, %v", rest, err)
	}
	if r := awaitUpgrade(t, f); r.status != http.StatusSwitchingProtocols || r.err != nil {
		t.Fatalf("Upgrade returned %d, %v; want 101, nil", r.status, r.err)
	}
	f.tr.expect(t, true, false)
}

// TestUpgradeRefused: the backend answers the upgrade request with a 400 and
// a body. The client gets exactly that, the client connection is not
// hijacked (it serves another request), and the backend connection is closed
// rather than pooled.
func TestUpgradeRefused(t *testing.T) {
	upgradeSeen := make(chan string, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/plain" {
			io.WriteString(w, "plain ok")
			return
		}
		upgradeSeen <- r.Header.Get("Connection") + " " + r.Header.Get("Upgrade")
		w.Header().Set("X-Reason", "no websockets here")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "upgrade refused")
	})
	p := NewPool(b.addr(), Options{})
	defer p.Close()
	f := newUpgradeFront(t, p)
	c, br := dialFront(t, f)

	resp := sendRequest(t, c, br, wsHandshake)
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusBadRequest || string(body) != "upgrade refused" ||
		resp.Header.Get("X-Reason") != "no websockets here" {
		t.Fatalf("client got %d %q (%v), X-Reason %q", resp.StatusCode, body, err, resp.Header.Get("X-Reason"))
	}
	if s := <-upgradeSeen; s != "Upgrade websocket" {
		t.Errorf("backend saw Connection+Upgrade %q", s)
	}
	if r := awaitUpgrade(t, f); r.status != http.StatusBadRequest || r.err != nil {
		t.Fatalf("Upgrade returned %d, %v; want 400, nil", r.status, r.err)
	}
	f.tr.expect(t)
	if n := p.IdleConns(); n != 0 {
		t.Errorf("refused upgrade connection pooled: %d idle", n)
	}
	waitFor(t, "backend to see the upgrade connection closed", func() bool { return b.closed.Load() == 1 })

	resp = sendRequest(t, c, br, "GET /plain HTTP/1.1\r\nHost: gw\r\n\r\n")
	if body, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 || string(body) != "plain ok" {
		t.Fatalf("next request on the same client connection: %d %q, %v", resp.StatusCode, body, err)
	}
	if n := b.accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2 (upgrade connections are never reused)", n)
	}
}

// TestUpgradeWrongProtocol: a 101 to a protocol the client did not offer is
// a bad response; nothing reaches the client but the caller's 502.
func TestUpgradeWrongProtocol(t *testing.T) {
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		if _, err := http.ReadRequest(br); err == nil {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
			io.Copy(io.Discard, br)
		}
	})
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	f := newUpgradeFront(t, p)
	c, br := dialFront(t, f)
	if resp := sendRequest(t, c, br, wsHandshake); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("client got %d, want 502", resp.StatusCode)
	}
	if r := awaitUpgrade(t, f); r.status != 0 || !errors.Is(r.err, ErrBadResponse) {
		t.Fatalf("Upgrade returned %d, %v; want 0, ErrBadResponse", r.status, r.err)
	}
	f.tr.expect(t)
}

// TestUpgradeCancel: canceling the context (as connection draining does at
// its deadline) ends a live tunnel promptly on both sides.
func TestUpgradeCancel(t *testing.T) {
	seen := make(chan *http.Request, 1)
	done := make(chan error, 1)
	rb := newRawBackend(t, wsEchoServe(seen, done))
	p := NewPool(rb.addr(), Options{})
	defer p.Close()
	f := newUpgradeFront(t, p)
	c, br := dialFront(t, f)

	if resp := sendRequest(t, c, br, wsHandshake); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, msg, _, err := readFrame(br); err != nil || string(msg) != "welcome" {
		t.Fatalf("welcome: %q, %v", msg, err)
	}
	if err := writeFrame(c, opText, []byte("live"), true); err != nil {
		t.Fatal(err)
	}
	if _, msg, _, err := readFrame(br); err != nil || string(msg) != "echo: live" {
		t.Fatalf("echo: %q, %v", msg, err)
	}

	start := time.Now()
	f.cancelTunnels()
	var r result
	select {
	case r = <-f.results:
	case <-time.After(time.Second):
		t.Fatal("tunnel still open 1s after cancellation")
	}
	t.Logf("tunnel ended %v after cancel", time.Since(start))
	if r.status != http.StatusSwitchingProtocols || !errors.Is(r.err, ErrCanceled) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Upgrade returned %d, %v; want 101, ErrCanceled", r.status, r.err)
	}
	f.tr.expect(t, true, false)
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("client connection still open: read %d, %v", n, err)
	}
	select {
	case err := <-done:
		if err == nil || isTimeout(err) {
			t.Fatalf("backend session ended with %v; want the connection closed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("backend connection still open 1s after cancellation")
	}
}

// hijackableSpy is a spyWriter that claims to support Hijack but must never
// get that far.
type hijackableSpy struct{ *spyWriter }

func (hijackableSpy) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("Hijack must not be called")
}

// TestUpgradeNotPossible: requests that cannot be upgraded fail before the
// backend is contacted, with nothing written.
func TestUpgradeNotPossible(t *testing.T) {
	rb := newRawBackend(t, func(net.Conn, *bufio.Reader, int) {})
	p := NewPool(rb.addr(), Options{})
	closed := NewPool(rb.addr(), Options{})
	closed.Close()
	var tr tracker

	tests := []struct {
		name       string
		pool       *Pool
		major      int
		minor      int
		hijackable bool
		upgrade    string
		want       []error
	}{
		{"http2", p, 2, 0, true, "websocket", []error{ErrUpgradeNotSupported}},
		{"http1.0", p, 1, 0, true, "websocket", []error{ErrUpgradeNotSupported}},
		{"not hijackable", p, 1, 1, false, "websocket", []error{ErrUpgradeNotSupported}},
		{"empty upgrade", p, 1, 1, true, " ", []error{ErrInvalidRequest}},
		{"header injection", p, 1, 1, true, "websocket\r\nX-Evil: 1", []error{ErrInvalidRequest}},
		{"pool closed", closed, 1, 1, true, "websocket", []error{ErrDial, ErrPoolClosed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spy := newSpy()
			var w http.ResponseWriter = spy
			if tt.hijackable {
				w = hijackableSpy{spy}
			}
			out := newOut(t, "GET", rb.addr(), "/ws", nil)
			out.ProtoMajor, out.ProtoMinor = tt.major, tt.minor
			status, err := tt.pool.Upgrade(context.Background(), w, out, tt.upgrade, time.Second, tr.track)
			if status != 0 {
				t.Errorf("status %d, want 0", status)
			}
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("err %v; want %v", err, want)
				}
			}
			spy.assertUntouched(t)
		})
	}
	tr.expect(t)
	if n := rb.accepted.Load(); n != 0 {
		t.Errorf("backend contacted %d times", n)
	}
}

// TestDedicatedPools: with one Pool per client connection (the recipe in the
// package documentation), two client connections never share a backend
// connection, each keeps using its own, and closing a client connection
// closes its backend connection.
func TestDedicatedPools(t *testing.T) {
	type connEnd struct {
		remote string
		err    error
	}
	ends := make(chan connEnd, 4)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		remote := c.RemoteAddr().String()
		for {
			if _, _, err := readRequest(br); err != nil {
				ends <- connEnd{remote, err}
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(remote), remote)
		}
	})

	// The gateway side: a Pool per client connection, created by
	// ConnContext and closed when the connection closes.
	type poolKey struct{}
	var pools sync.Map // net.Conn -> *Pool
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		frontHandler(r.Context().Value(poolKey{}).(*Pool), 5*time.Second)(w, r)
	}))
	front.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		p := NewPool(rb.addr(), Options{MaxIdleConns: 1})
		pools.Store(c, p)
		return context.WithValue(ctx, poolKey{}, p)
	}
	front.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			if p, ok := pools.LoadAndDelete(c); ok {
				p.(*Pool).Close()
			}
		}
	}
	front.Start()
	defer front.Close()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(ioBound))
		return c, bufio.NewReader(c)
	}
	get := func(c net.Conn, br *bufio.Reader) string {
		t.Helper()
		resp := sendRequest(t, c, br, "GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		return string(body)
	}
	ca, bra := dial()
	defer ca.Close()
	cb, brb := dial()
	defer cb.Close()

	var seenA, seenB []string
	for range 3 {
		seenA = append(seenA, get(ca, bra))
		seenB = append(seenB, get(cb, brb))
	}
	portA, portB := seenA[0], seenB[0]
	for i := range seenA {
		if seenA[i] != portA || seenB[i] != portB {
			t.Fatalf("backend connections changed: client A used %v, client B used %v", seenA, seenB)
		}
	}
	if portA == portB {
		t.Fatalf("both client connections used backend connection %s", portA)
	}
	if n := rb.accepted.Load(); n != 2 {
		t.Fatalf("backend accepted %d connections, want 2", n)
	}

	expectEOF := func(remote string) {
		t.Helper()
		select {
		case e := <-ends:
			if e.remote != remote || e.err != io.EOF {
				t.Fatalf("backend connection %s ended with %v; want %s to see EOF", e.remote, e.err, remote)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("backend connection %s still open after its client connection closed", remote)
		}
	}
	ca.Close()
	expectEOF(portA)
	if got := get(cb, brb); got != portB {
		t.Fatalf("client B moved to backend connection %s, want %s", got, portB)
	}
	cb.Close()
	expectEOF(portB)
	if n := rb.accepted.Load(); n != 2 {
		t.Errorf("backend accepted %d connections, want 2", n)
	}
}

// TestCloseWithRequestInFlight: a Pool closed during an exchange lets it
// finish, then closes the connection instead of keeping it.
func TestCloseWithRequestInFlight(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ended := make(chan error, 1)
	rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
		_ = c.SetDeadline(time.Now().Add(ioBound))
		if _, _, err := readRequest(br); err != nil {
			ended <- err
			return
		}
		close(entered)
		<-release
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_, _, err := readRequest(br) // the next event on this connection
		ended <- err
	})
	p := NewPool(rb.addr(), Options{MaxIdleConns: 1})
	w := newSpy()
	ch := forwardBG(context.Background(), p, w, newOut(t, "GET", rb.addr(), "/", nil), 5*time.Second)
	<-entered
	p.Close()
	close(release)
	if r := await(t, ch); r.status != 200 || r.err != nil || w.Body() != "ok" {
		t.Fatalf("in-flight request: %d %q, %v", r.status, w.Body(), r.err)
	}
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("backend saw %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection of a closed Pool kept open after its request finished")
	}
	if n := p.IdleConns(); n != 0 {
		t.Errorf("closed Pool holds %d idle connections", n)
	}
	_, err := p.Forward(context.Background(), newSpy(), newOut(t, "GET", rb.addr(), "/", nil), time.Second)
	if !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Forward after Close: %v; want ErrPoolClosed", err)
	}
	if n := rb.accepted.Load(); n != 1 {
		t.Errorf("backend accepted %d connections, want 1", n)
	}
}

// TestWriteUpgradeRequestHeader checks the bytes of an upgrade request: the
// Connection and Upgrade fields are generated once, whatever out carries.
func TestWriteUpgradeRequestHeader(t *testing.T) {
	var buf bytes.Buffer
	c := &conn{bw: bufio.NewWriter(&buf)}
	out := &http.Request{Method: "GET", URL: &url.URL{Path: "/ws"}, Host: "h", Close: true,
		Header: http.Header{"Upgrade": {"stale"}, "upgrade": {"stale"}, "Connection": {"keep-alive"},
			"Sec-Websocket-Key": {wsSampleKey}}}
	var ri reqInfo
	if err := ri.init(out, "default.example"); err != nil {
		t.Fatal(err)
	}
	ri.upgrade = "websocket"
	if err := c.writeRequestHeader(out, &ri); err != nil {
		t.Fatal(err)
	}
	c.bw.Flush()
	want := "GET /ws HTTP/1.1\r\nHost: h\r\nSec-Websocket-Key: " + wsSampleKey +
		"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	if got := buf.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestUpgradeOffered(t *testing.T) {
	tests := []struct {
		offered  string
		switched []string
		want     bool
	}{
		{"websocket", []string{"websocket"}, true},
		{"websocket", []string{"WebSocket"}, true},
		{"h2c, websocket", []string{"websocket"}, true},
		{"websocket", []string{"h2c"}, false},
		{"websocket", []string{"websocket, h2c"}, false},
		{"websocket", nil, false},
		{"websocket", []string{" , "}, false},
	}
	for _, tt := range tests {
		if got := upgradeOffered(tt.offered, tt.switched); got != tt.want {
			t.Errorf("upgradeOffered(%q, %q) = %v, want %v", tt.offered, tt.switched, got, tt.want)
		}
	}
}
