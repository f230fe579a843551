package http2_test

// The clients here are x/net/http2's Transport and ClientConn, which x/net deprecates for
// net/http's own from Go 1.27 on; they are kept as an HTTP/2 client independent of net/http.
//
//lint:file-ignore SA1019 x/net/http2's Transport is the client these tests mean to use

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// ioTimeout bounds every wait of a test; nothing here waits that long when the server works.
const ioTimeout = 10 * time.Second

// testHost is the name in the test certificate, and the :authority raw clients send.
const testHost = "example.test"

// testPKI is a self-signed certificate for testHost and a pool that trusts it.
type testPKI struct {
	cert tls.Certificate
	pool *x509.CertPool
}

var makePKI = sync.OnceValues(func() (*testPKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: testHost},
		DNSNames:              []string{testHost},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &testPKI{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool: pool}, nil
})

func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := makePKI()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.cert}, NextProtos: []string{"h2"}}
}

// tlsServer is the server side of a TLS connection with the test certificate (ALPN h2).
func tlsServer(t testing.TB, c net.Conn) *tls.Conn {
	return tls.Server(c, pki(t).serverConfig())
}

func (p *testPKI) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: testHost, NextProtos: []string{"h2"}}
}

// bothModes runs f over TLS (ALPN h2) and over h2c (prior knowledge).
func bothModes(t *testing.T, f func(t *testing.T, useTLS bool)) {
	t.Helper()
	for _, useTLS := range []bool{true, false} {
		t.Run(modeName(useTLS), func(t *testing.T) { f(t, useTLS) })
	}
}

func modeName(useTLS bool) string {
	if useTLS {
		return "tls"
	}
	return "h2c"
}

// syncBuffer is a bytes.Buffer safe for concurrent use: the server's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testServer is a Server serving a listener on 127.0.0.1, over TLS or h2c.
type testServer struct {
	s      *srv.Server
	addr   string // 127.0.0.1:port
	tls    bool
	pki    *testPKI
	log    *syncBuffer
	served chan struct{} // closed when Serve has returned
	err    error         // what Serve returned, once served is closed
}

// serve serves s on a new loopback listener — one that hands Serve TLS-handshaken connections
// (ALPN h2) if useTLS — until the test ends; then it closes s and checks that Serve returned ErrServerClosed. The
// server's log (s.Log, if the test left it nil) is printed if the test failed.
func serve(t *testing.T, s *srv.Server, useTLS bool) *testServer {
	t.Helper()
	ts := &testServer{s: s, tls: useTLS, pki: pki(t), log: &syncBuffer{}, served: make(chan struct{})}
	if s.Log == nil {
		s.Log = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	var ln net.Listener = l
	if useTLS {
		ln = newHandshakingListener(l, ts.pki.serverConfig())
	}
	go func() {
		ts.err = s.Serve(ln)
		close(ts.served)
	}()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-ts.served:
			if !errors.Is(ts.err, srv.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", ts.err)
			}
		case <-time.After(ioTimeout):
			t.Error("Serve did not return after Close")
		}
		if t.Failed() {
			logs := ts.log.String()
			if len(logs) > 16<<10 {
				logs = "…" + logs[len(logs)-16<<10:]
			}
			t.Logf("server log:\n%s", logs)
		}
	})
	return ts
}

// handshakingListener hands Serve TLS connections already handshaken (ALPN h2), as Serve's
// contract has them. Each handshake runs in its own goroutine, bounded by ioTimeout.
type handshakingListener struct {
	net.Listener
	cfg   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandshakingListener(l net.Listener, cfg *tls.Config) *handshakingListener {
	hl := &handshakingListener{Listener: l, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				hl.Close()
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				defer cancel()
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return
				}
				select {
				case hl.conns <- tc:
				case <-hl.done:
					c.Close()
				}
			}()
		}
	}()
	return hl
}

func (hl *handshakingListener) Accept() (net.Conn, error) {
	select {
	case c := <-hl.conns:
		return c, nil
	case <-hl.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: hl.Addr(), Err: net.ErrClosed}
	}
}

func (hl *handshakingListener) Close() error {
	hl.once.Do(func() { close(hl.done) })
	return hl.Listener.Close()
}

// waitServed waits (boundedly) for Serve to return, and checks it returned ErrServerClosed.
func (ts *testServer) waitServed(t *testing.T) {
	t.Helper()
	select {
	case <-ts.served:
		if !errors.Is(ts.err, srv.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", ts.err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Serve did not return")
	}
}

// url is an absolute URL for path on the server, with testHost as the authority (clientConn
// dials the server's address whatever the URL says).
func (ts *testServer) url(path string) string {
	if ts.tls {
		return "https://" + testHost + path
	}
	return "http://" + testHost + path
}

// dial opens a connection to the server: TCP, then a TLS handshake (ALPN h2) if the server is TLS.
// It is closed when the test ends.
func (ts *testServer) dial(t testing.TB) net.Conn {
	t.Helper()
	return dialAddr(t, ts.addr, ts.tls)
}

func dialAddr(t testing.TB, addr string, useTLS bool) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if !useTLS {
		return c
	}
	tc := tls.Client(c, pki(t).clientConfig())
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN negotiated %q, want h2", p)
	}
	return tc
}

// clientConn is one x/net/http2 client connection to the server, and its net.Conn.
func (ts *testServer) clientConn(t testing.TB) (*http2.ClientConn, net.Conn) {
	t.Helper()
	return newClientConn(t, ts.dial(t))
}

func newClientConn(t testing.TB, c net.Conn) (*http2.ClientConn, net.Conn) {
	t.Helper()
	cc, err := (&http2.Transport{}).NewClientConn(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, c
}

// client is an http.Client over an x/net/http2.Transport that dials the server: TLS with the
// test's root, or h2c (AllowHTTP, with a DialTLSContext that dials plain TCP). Its URLs are
// base()+path.
func (ts *testServer) client(t testing.TB) *http.Client {
	tr := &http2.Transport{TLSClientConfig: ts.pki.clientConfig()}
	if !ts.tls {
		tr.AllowHTTP = true
		tr.DialTLSContext = func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: ioTimeout}
}

func (ts *testServer) base() string {
	if ts.tls {
		return "https://" + ts.addr
	}
	return "http://" + ts.addr
}

// roundTrip sends req on cc and reads the whole response body, within ioTimeout.
func roundTrip(t testing.TB, cc *http2.ClientConn, req *http.Request) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), ioTimeout)
	defer cancel()
	resp, err := cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func get(t testing.TB, cc *http2.ClientConn, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return roundTrip(t, cc, req)
}

// recv receives from ch, or fails the test after ioTimeout.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// drain returns what ch holds now, without waiting.
func drain[T any](ch <-chan T) []T {
	var out []T
	for {
		select {
		case v := <-ch:
			out = append(out, v)
		default:
			return out
		}
	}
}

// stateLog records the states ConnState reports, by the connection's remote address.
type stateLog struct {
	mu sync.Mutex
	m  map[string][]http.ConnState
}

func (l *stateLog) record(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]http.ConnState{}
	}
	k := c.RemoteAddr().String()
	l.m[k] = append(l.m[k], st)
}

func (l *stateLog) get(addr string) []http.ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.m[addr])
}

// waitLast waits (boundedly) until the last state reported for the connection from addr is st.
func (l *stateLog) waitLast(t *testing.T, addr string, st http.ConnState) []http.ConnState {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		got := l.get(addr)
		if len(got) > 0 && got[len(got)-1] == st {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("states %v, want them to end in %v", got, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frame is a frame a raw client read, copied out of the Framer's buffers.
type frame struct {
	hdr          string // the frame header as x/net prints it
	Type         http2.FrameType
	Flags        http2.Flags
	StreamID     uint32
	Length       uint32              // the frame's payload length
	Data         []byte              // DATA payload; GOAWAY debug data
	Fields       []hpack.HeaderField // HEADERS (with its CONTINUATIONs), decoded
	Truncated    bool                // HEADERS: the decoded list was over the client's limit
	Settings     []http2.Setting     // SETTINGS
	ErrCode      http2.ErrCode       // RST_STREAM, GOAWAY
	LastStreamID uint32              // GOAWAY
	Increment    uint32              // WINDOW_UPDATE
	Ping         [8]byte             // PING
}

func copyFrame(f http2.Frame) frame {
	h := f.Header()
	cf := frame{hdr: h.String(), Type: h.Type, Flags: h.Flags, StreamID: h.StreamID, Length: h.Length}
	switch f := f.(type) {
	case *http2.DataFrame:
		cf.Data = bytes.Clone(f.Data())
	case *http2.MetaHeadersFrame:
		cf.Fields = slices.Clone(f.Fields)
		cf.Truncated = f.Truncated
	case *http2.SettingsFrame:
		f.ForeachSetting(func(s http2.Setting) error {
			cf.Settings = append(cf.Settings, s)
			return nil
		})
	case *http2.GoAwayFrame:
		cf.ErrCode, cf.LastStreamID, cf.Data = f.ErrCode, f.LastStreamID, bytes.Clone(f.DebugData())
	case *http2.RSTStreamFrame:
		cf.ErrCode = f.ErrCode
	case *http2.PingFrame:
		cf.Ping = f.Data
	case *http2.WindowUpdateFrame:
		cf.Increment = f.Increment
	}
	return cf
}

// endStream reports whether the frame (DATA or HEADERS) ends its stream.
func (f frame) endStream() bool {
	return (f.Type == http2.FrameData || f.Type == http2.FrameHeaders) && f.Flags&0x1 != 0
}

// ack reports whether the frame is a SETTINGS or PING acknowledgement.
func (f frame) ack() bool {
	return (f.Type == http2.FrameSettings || f.Type == http2.FramePing) && f.Flags&0x1 != 0
}

func (f frame) String() string {
	var b strings.Builder
	b.WriteString(f.hdr)
	switch f.Type {
	case http2.FrameHeaders:
		for _, hf := range f.Fields {
			fmt.Fprintf(&b, " %s=%q", hf.Name, clip(hf.Value))
		}
		if f.Truncated {
			b.WriteString(" (truncated)")
		}
	case http2.FrameData:
		fmt.Fprintf(&b, " %q", clip(string(f.Data)))
	case http2.FrameSettings:
		for _, s := range f.Settings {
			fmt.Fprintf(&b, " %v", s)
		}
	case http2.FrameGoAway:
		fmt.Fprintf(&b, " last_stream=%d code=%v debug=%q", f.LastStreamID, f.ErrCode, clip(string(f.Data)))
	case http2.FrameRSTStream:
		fmt.Fprintf(&b, " code=%v", f.ErrCode)
	case http2.FramePing:
		fmt.Fprintf(&b, " data=%x", f.Ping)
	case http2.FrameWindowUpdate:
		fmt.Fprintf(&b, " increment=%d", f.Increment)
	}
	return b.String()
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return s
}

// rawConn is an HTTP/2 client made of x/net's Framer and hpack, for frames no real client sends.
// A goroutine reads the server's frames into a channel; every frame read or written is traced,
// and the trace is printed if the test fails.
type rawConn struct {
	t      testing.TB
	c      net.Conn
	scheme string
	w      *http2.Framer // writes only
	hbuf   bytes.Buffer
	enc    *hpack.Encoder

	frames  chan frame // closed when the reader stops
	readErr error      // why the reader stopped; read it only after frames is closed

	mu    sync.Mutex
	trace []string

	settings map[http2.SettingID]uint32 // the server's first SETTINGS, after handshake
	pings    uint64
	pending  []frame // frames of other streams that response read, for their own response call
}

// raw opens a raw client connection to the server (TLS-handshaken if the server is TLS). It sends
// nothing yet; see handshake.
func (ts *testServer) raw(t testing.TB) *rawConn {
	t.Helper()
	return newRaw(t, ts.dial(t), ts.tls)
}

func newRaw(t testing.TB, c net.Conn, useTLS bool) *rawConn {
	c.SetDeadline(time.Now().Add(ioTimeout))
	rc := &rawConn{t: t, c: c, scheme: "http", frames: make(chan frame, 64)}
	if useTLS {
		rc.scheme = "https"
	}
	rc.w = http2.NewFramer(c, nil)
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	fr := http2.NewFramer(nil, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	// The client advertises no SETTINGS_MAX_FRAME_SIZE: a frame over the default 16 KiB from the
	// server ends the reader with ErrFrameTooLarge.
	fr.SetMaxReadFrameSize(16 << 10)
	stop := make(chan struct{})
	go func() {
		defer close(rc.frames)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				rc.readErr = err
				rc.note("<- (read ended: %v)", err)
				return
			}
			cf := copyFrame(f)
			rc.note("<- %v", cf)
			select {
			case rc.frames <- cf:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		c.Close()
		if t.Failed() {
			rc.mu.Lock()
			t.Logf("frames on the connection from %s:\n%s", c.LocalAddr(), strings.Join(rc.trace, "\n"))
			rc.mu.Unlock()
		}
	})
	return rc
}

func (rc *rawConn) note(format string, args ...any) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.trace) < 2000 {
		rc.trace = append(rc.trace, fmt.Sprintf(format, args...))
	}
}

func (rc *rawConn) check(err error, what string) {
	rc.t.Helper()
	if err != nil {
		rc.t.Fatalf("writing %s: %v", what, err)
	}
}

// writeRaw writes bytes as they are.
func (rc *rawConn) writeRaw(b []byte) {
	rc.t.Helper()
	rc.note("-> raw %q", clip(string(b)))
	_, err := rc.c.Write(b)
	rc.check(err, "raw bytes")
}

// preface sends the client connection preface: the magic and an empty SETTINGS.
func (rc *rawConn) preface() {
	rc.t.Helper()
	rc.writeRaw([]byte(http2.ClientPreface))
	rc.writeSettings()
}

// handshake sends the preface, checks that the server's first frame is SETTINGS (RFC 9113
// 3.4), records it in rc.settings and acknowledges it.
func (rc *rawConn) handshake() {
	rc.t.Helper()
	rc.preface()
	f := rc.next()
	if f.Type != http2.FrameSettings || f.ack() {
		rc.t.Fatalf("the server's first frame is %v, want SETTINGS", f)
	}
	rc.settings = map[http2.SettingID]uint32{}
	for _, s := range f.Settings {
		rc.settings[s.ID] = s.Val
	}
	rc.note("-> SETTINGS ack")
	rc.check(rc.w.WriteSettingsAck(), "SETTINGS ack")
}

func (rc *rawConn) writeSettings(s ...http2.Setting) {
	rc.t.Helper()
	rc.note("-> SETTINGS %v", s)
	rc.check(rc.w.WriteSettings(s...), "SETTINGS")
}

// request is the header list of a request: pseudo-header fields, then extra name, value pairs.
func (rc *rawConn) request(method, path string, extra ...string) []string {
	return append([]string{":method", method, ":scheme", rc.scheme, ":authority", testHost, ":path", path}, extra...)
}

func (rc *rawConn) encode(fields []string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return rc.hbuf.Bytes()
}

// writeHeaders sends a header block of name, value pairs: HEADERS, then CONTINUATIONs past
// 16 KiB.
func (rc *rawConn) writeHeaders(stream uint32, endStream bool, fields ...string) {
	rc.t.Helper()
	const maxFrame = 16384
	block := rc.encode(fields)
	first, rest := block, []byte(nil)
	if len(first) > maxFrame {
		first, rest = block[:maxFrame], block[maxFrame:]
	}
	rc.note("-> HEADERS stream=%d end_stream=%v %q (%d bytes)", stream, endStream, clip(strings.Join(fields, " ")), len(block))
	rc.check(rc.w.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0}), "HEADERS")
	for len(rest) > 0 {
		n := min(maxFrame, len(rest))
		rc.check(rc.w.WriteContinuation(stream, n == len(rest), rest[:n]), "CONTINUATION")
		rest = rest[n:]
	}
}

func (rc *rawConn) writeData(stream uint32, endStream bool, data []byte) {
	rc.t.Helper()
	rc.note("-> DATA stream=%d end_stream=%v %q", stream, endStream, clip(string(data)))
	rc.check(rc.w.WriteData(stream, endStream, data), "DATA")
}

func (rc *rawConn) writeWindowUpdate(stream, incr uint32) {
	rc.t.Helper()
	rc.note("-> WINDOW_UPDATE stream=%d increment=%d", stream, incr)
	rc.check(rc.w.WriteWindowUpdate(stream, incr), "WINDOW_UPDATE")
}

func (rc *rawConn) writeRST(stream uint32, code http2.ErrCode) {
	rc.t.Helper()
	rc.note("-> RST_STREAM stream=%d code=%v", stream, code)
	rc.check(rc.w.WriteRSTStream(stream, code), "RST_STREAM")
}

func (rc *rawConn) writePing(data [8]byte) {
	rc.t.Helper()
	rc.note("-> PING %x", data)
	rc.check(rc.w.WritePing(false, data), "PING")
}

// next returns the server's next frame; it fails the test if the connection ends or no frame
// comes within ioTimeout.
func (rc *rawConn) next() frame {
	rc.t.Helper()
	f, ok := rc.nextOrEnd()
	if !ok {
		rc.t.Fatalf("the connection ended: %v", rc.readErr)
	}
	return f
}

// nextOrEnd returns the server's next frame, or false once the connection has ended.
func (rc *rawConn) nextOrEnd() (frame, bool) {
	rc.t.Helper()
	select {
	case f, ok := <-rc.frames:
		return f, ok
	case <-time.After(ioTimeout):
		rc.t.Fatalf("no frame from the server in %v", ioTimeout)
		return frame{}, false
	}
}

// waitFor reads frames until one satisfies match, and returns it.
func (rc *rawConn) waitFor(what string, match func(frame) bool) frame {
	rc.t.Helper()
	for {
		f, ok := rc.nextOrEnd()
		if !ok {
			rc.t.Fatalf("the connection ended (%v) before %s", rc.readErr, what)
		}
		if match(f) {
			return f
		}
	}
}

func isType(ft http2.FrameType) func(frame) bool {
	return func(f frame) bool { return f.Type == ft }
}

// sync sends a PING and waits for its ACK: the server has read every frame sent before.
func (rc *rawConn) sync() {
	rc.t.Helper()
	rc.pings++
	var data [8]byte
	copy(data[:], fmt.Sprintf("sync%04d", rc.pings))
	rc.writePing(data)
	rc.waitFor("the PING ACK", func(f frame) bool { return f.Type == http2.FramePing && f.ack() && f.Ping == data })
}

// expectGoAway reads until GOAWAY and checks its error code.
func (rc *rawConn) expectGoAway(code http2.ErrCode) frame {
	rc.t.Helper()
	f := rc.waitFor("GOAWAY", isType(http2.FrameGoAway))
	if f.ErrCode != code {
		rc.t.Errorf("GOAWAY with %v, want %v", f.ErrCode, code)
	}
	return f
}

// expectClosed reads until the server closes the connection, and returns the frames it sent
// before. It fails the test if the connection stays open ioTimeout, or if the server sent bytes
// that are not HTTP/2 frames.
func (rc *rawConn) expectClosed() []frame {
	rc.t.Helper()
	var got []frame
	for {
		f, ok := rc.nextOrEnd()
		if !ok {
			break
		}
		got = append(got, f)
	}
	switch err := rc.readErr; {
	case errors.Is(err, os.ErrDeadlineExceeded):
		rc.t.Fatalf("the server did not close the connection within %v", ioTimeout)
	case !isClosed(err):
		rc.t.Errorf("the connection ended with %v, want the server to close it", err)
	}
	return got
}

// isClosed reports whether a read error is the peer closing the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// expectOpen checks that for d the server neither sends GOAWAY nor closes the connection.
// Frames read meanwhile are dropped.
func (rc *rawConn) expectOpen(d time.Duration) {
	rc.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f, ok := <-rc.frames:
			if !ok {
				rc.t.Fatalf("the server closed the connection: %v", rc.readErr)
			}
			if f.Type == http2.FrameGoAway {
				rc.t.Fatalf("the server sent %v", f)
			}
		case <-deadline:
			return
		}
	}
}

// rawResponse is what the server sent on one stream.
type rawResponse struct {
	status  string
	header  []hpack.HeaderField // the response's header fields, pseudo-fields included
	body    []byte
	trailer []hpack.HeaderField
	rst     *frame // the RST_STREAM that ended the stream
	goaway  *frame // a GOAWAY read while waiting
	ended   bool   // the connection ended before the stream did
}

func (r rawResponse) get(name string) string {
	for _, hf := range r.header {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// response reads until the stream ends (END_STREAM or RST_STREAM) or the connection does. Frames
// of other streams read meanwhile are kept for their own response call.
func (rc *rawConn) response(stream uint32) rawResponse {
	rc.t.Helper()
	var r rawResponse
	var mine []frame
	rc.pending = slices.DeleteFunc(rc.pending, func(f frame) bool {
		if f.StreamID == stream {
			mine = append(mine, f)
			return true
		}
		return false
	})
	for {
		var f frame
		if len(mine) > 0 {
			f, mine = mine[0], mine[1:]
		} else {
			var ok bool
			if f, ok = rc.nextOrEnd(); !ok {
				r.ended = true
				return r
			}
		}
		if f.Type == http2.FrameGoAway {
			r.goaway = &f
			continue
		}
		if f.StreamID != stream {
			if f.StreamID != 0 {
				rc.pending = append(rc.pending, f)
			}
			continue
		}
		switch f.Type {
		case http2.FrameHeaders:
			if r.status == "" {
				r.header = f.Fields
				for _, hf := range f.Fields {
					if hf.Name == ":status" {
						r.status = hf.Value
					}
				}
				if r.status == "" {
					rc.t.Errorf("response HEADERS without :status: %v", f)
				}
				if strings.HasPrefix(r.status, "1") {
					r.status, r.header = "", nil // informational; the final head follows
				}
			} else {
				r.trailer = f.Fields
			}
		case http2.FrameData:
			r.body = append(r.body, f.Data...)
		case http2.FrameRSTStream:
			r.rst = &f
			return r
		}
		if f.endStream() {
			return r
		}
	}
}

// mustOK reads the stream's response and checks it is a 200 with the body.
func (rc *rawConn) mustOK(stream uint32, body string) {
	rc.t.Helper()
	r := rc.response(stream)
	switch {
	case r.ended:
		rc.t.Fatalf("stream %d: the connection ended: %v", stream, rc.readErr)
	case r.rst != nil:
		rc.t.Fatalf("stream %d: reset: %v", stream, r.rst)
	case r.status != "200" || string(r.body) != body:
		rc.t.Fatalf("stream %d: %s %q, want 200 %q", stream, r.status, r.body, body)
	}
}
