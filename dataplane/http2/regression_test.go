package http2_test

// Regression tests for the bugs an adversarial review of this package found. Each failed before
// its fix, at 372fa0d (TestExpectContinueBodyReadRace under -race only); each comment describes
// the code as it was then.

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// TestNoFramesAfterServerReset: once the server has reset a stream (RST_STREAM for a stream
// error), it must send nothing more on it (RFC 9113 5.1, 5.4.2: the client treats any frame
// after a RST_STREAM it received as a stream error STREAM_CLOSED). responseWriter.send only
// checks the stream's state in reserve, that is when there are DATA bytes to send: a handler
// that flushes the head, or returns with an empty body, or sends trailers or a 1xx, still writes
// HEADERS on the reset stream. The same race makes TestProtocolErrors/stream_window_overflow
// flaky: the handler's HEADERS can go out before the reader's RST_STREAM.
func TestNoFramesAfterServerReset(t *testing.T) {
	t.Parallel()
	proceed := make(chan struct{})
	flushed := make(chan error, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(ioTimeout):
		}
		select {
		case <-proceed:
		case <-time.After(ioTimeout):
		}
		w.Header().Set("X-After-Reset", "1")
		w.WriteHeader(http.StatusOK)
		flushed <- http.NewResponseController(w).Flush()
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	// Overflows the stream's send window: a stream error, so the server resets stream 1.
	rc.writeWindowUpdate(1, 1<<31-1)
	rst := rc.waitFor("the server's RST_STREAM", func(f frame) bool { return f.StreamID == 1 })
	if rst.Type != http2.FrameRSTStream {
		// What TestProtocolErrors/stream_window_overflow sees when it flakes.
		t.Errorf("the server sent %v on stream 1 before its RST_STREAM", rst)
		rst = rc.waitFor("the server's RST_STREAM", func(f frame) bool { return f.StreamID == 1 && f.Type == http2.FrameRSTStream })
	}
	if rst.ErrCode != http2.ErrCodeFlowControl {
		t.Errorf("got %v, want RST_STREAM FLOW_CONTROL_ERROR", rst)
	}
	close(proceed)
	err := recv(t, flushed, "the handler's Flush")
	// Every frame the handler's Flush wrote is on the wire before this PING's ACK.
	var data [8]byte
	copy(data[:], "afterrst")
	rc.writePing(data)
	rc.waitFor("the PING ACK", func(f frame) bool {
		if f.StreamID == 1 {
			t.Errorf("after its RST_STREAM, the server sent %v (Flush returned %v)", f, err)
		}
		return f.Type == http2.FramePing && f.ack() && f.Ping == data
	})
	if err == nil {
		t.Error("Flush on a stream the server had reset returned nil")
	}
}

// TestExpectContinueBodyReadRace: with "Expect: 100-continue", requestBody.Read reads
// responseWriter.sentHeader (under conn.mu) to decide whether to send 100, while the handler's
// goroutine sets it in send, under no lock that Read takes. HTTP/2 handlers may read the body in
// one goroutine while another writes the response (net/http's Transport, as a reverse proxy uses
// it, reads a request body in a goroutine of its own). Here the body is read first, then the
// handler flushes its head, with no synchronization between the two goroutines: -race reports
// the race (this test fails only under -race). The same unsynchronized window lets the other
// order happen, a "100" HEADERS written after the final response's HEADERS (Read checks
// sentHeader, the handler sends 200, Read sends 100), which the client takes as a malformed
// trailer section (RFC 9113 8.1).
func TestExpectContinueBodyReadRace(t *testing.T) {
	// Not parallel: -race fails every test running when it reports.
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		read := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(r.Body) // decides on, and sends, the 100 at once
			read <- string(b)
		}()
		time.Sleep(100 * time.Millisecond) // no synchronization with the reading goroutine
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		select {
		case b := <-read:
			io.WriteString(w, b)
		case <-time.After(ioTimeout):
		}
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, false, rc.request("POST", "/", "expect", "100-continue", "content-length", "5")...)
	// The body goes once the 100 (or the final head) has come, as from a client that waits.
	f := rc.waitFor("stream 1's HEADERS", func(f frame) bool { return f.StreamID == 1 })
	rc.pending = append(rc.pending, f)
	rc.writeData(1, true, []byte("hello"))
	rc.mustOK(1, "hello")
}

// TestConnWindowStall: the connection's receive window is given back only once half of it
// (512 KiB) has been consumed (conn.ackLocked), whatever is left of it. When more than half of
// the window sits unread in streams whose handlers do not read yet, what other handlers read is
// never given back: the client's window reaches 0 and a stream whose handler read everything it
// was sent can never be finished. Here three streams hold 768 KiB unread, a fourth's handler
// reads all of its 256 KiB, and the server sends no connection WINDOW_UPDATE: the client cannot
// send the fourth stream's END_STREAM, the handler waits for it forever. (net/http's server
// sends the update when it would at least double what the client has left.)
func TestConnWindowStall(t *testing.T) {
	t.Parallel()
	const streamWin, connWin, frameSize = 256 << 10, 1 << 20, 16 << 10
	readAll := make(chan int, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			// Reads later (here: never); an upload to a busy backend.
			<-r.Context().Done()
			return
		}
		buf := make([]byte, 32<<10)
		n := 0
		for n < streamWin {
			k, err := r.Body.Read(buf)
			n += k
			if err != nil {
				break
			}
		}
		readAll <- n
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	// The client's connection window: RFC 9113's 65,535, plus the server's WINDOW_UPDATEs.
	window := int64(65535)
	count := func(f frame) {
		if f.Type == http2.FrameWindowUpdate && f.StreamID == 0 {
			window += int64(f.Increment)
		}
	}
	chunk := bytes.Repeat([]byte("x"), frameSize)
	send := func(id uint32, n int) {
		for ; n > 0; n -= frameSize {
			rc.writeData(id, false, chunk)
			window -= frameSize
		}
	}
	for _, id := range []uint32{1, 3, 5} {
		rc.writeHeaders(id, false, rc.request("POST", "/hold")...)
		send(id, streamWin)
	}
	rc.writeHeaders(7, false, rc.request("POST", "/read")...)
	send(7, connWin-3*streamWin)
	if n := recv(t, readAll, "the handler of stream 7 to read its body"); n != streamWin {
		t.Fatalf("the handler read %d bytes, want %d", n, streamWin)
	}
	// Any WINDOW_UPDATE the reads caused was written before Read returned: it is before the ACK.
	var data [8]byte
	copy(data[:], "stallchk")
	rc.writePing(data)
	rc.waitFor("the PING ACK", func(f frame) bool {
		count(f)
		return f.Type == http2.FramePing && f.ack() && f.Ping == data
	})
	if window <= 0 {
		t.Errorf("the client's connection window is %d after the server consumed all %d bytes sent on stream 7: "+
			"the stream cannot end (%d bytes are held unread by other streams)", window, streamWin, 3*streamWin)
	}
}

// TestShutdownBeforePreface: Shutdown's GOAWAY reaches a connection still waiting for the
// client's preface (goAway arms the one-second linger as it has no stream); readPreface then
// returns and serve calls c.idle(), which clears the read deadline (IdleTimeout 0) or sets it to
// IdleTimeout: the linger is lost. A client that keeps the connection open after the GOAWAY
// then keeps it, and Shutdown, waiting until Shutdown's context ends.
func TestShutdownBeforePreface(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	if f := rc.next(); f.Type != http2.FrameSettings {
		t.Fatalf("the server's first frame is %v, want SETTINGS", f)
	}
	// The server has written its preface: its reader waits for the client's.
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
		defer cancel()
		shut <- ts.s.Shutdown(ctx)
	}()
	rc.expectGoAway(http2.ErrCodeNo)
	rc.preface()
	rc.expectClosed()
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestShutdownGoAwayBeforeSettings: with a tls.Listener (Serve's connections not yet
// handshaken), Shutdown's goAway can take the write section before serve has written the
// server's preface: the client's first frame is GOAWAY, not SETTINGS (RFC 9113 3.4 — a
// connection error for the client).
func TestShutdownGoAwayBeforeSettings(t *testing.T) {
	t.Parallel()
	var log stateLog
	s := &srv.Server{ConnState: log.record, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		recv(t, served, "Serve to return")
	})
	c, err := net.DialTimeout("tcp", l.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	log.waitLast(t, c.LocalAddr().String(), http.StateNew)
	// The connection is the server's; its reader waits in the TLS handshake.
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// Give Shutdown's goAway the time to reach the write section (if it is not there yet, the
	// test passes without proving anything; it cannot fail spuriously).
	time.Sleep(200 * time.Millisecond)
	tc := tls.Client(c, pki(t).clientConfig())
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	rc := newRaw(t, tc, true)
	if f := rc.next(); f.Type != http2.FrameSettings || f.ack() {
		t.Errorf("the server's first frame is %v, want SETTINGS", f)
	}
}

// TestIdleTimeoutNonReadingClient: a client that stops reading pins its connection for
// ever, IdleTimeout or not (since fixed: WriteTimeout bounds every write). A handler writing a large response blocks in the write section (TCP
// is full), holding wmu; the client resets the stream, the connection has no stream left and
// the idle timeout fires, but goAway's GOAWAY waits for wmu, which the handler never releases:
// nothing sets a write deadline. (net/http's server closes such a connection once its idle
// GOAWAY has had a second to go out.) The same holds for a reader blocked writing a PING or
// SETTINGS ACK to a client that does not read.
func TestIdleTimeoutNonReadingClient(t *testing.T) {
	t.Parallel()
	var log stateLog
	var written atomic.Int64
	ts := serve(t, &srv.Server{IdleTimeout: 300 * time.Millisecond, WriteTimeout: time.Second, ConnState: log.record,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := bytes.Repeat([]byte("z"), 64<<10)
			for written.Load() < 1<<30 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				written.Add(int64(len(chunk)))
			}
		})}, false)
	rc := ts.raw(t)
	addr := rc.c.LocalAddr().String()
	rc.writeRaw([]byte(http2.ClientPreface))
	rc.writeSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	if f := rc.next(); f.Type != http2.FrameSettings || f.ack() {
		t.Fatalf("the server's first frame is %v, want SETTINGS", f)
	}
	rc.check(rc.w.WriteSettingsAck(), "SETTINGS ack")
	rc.waitFor("the SETTINGS ACK", func(f frame) bool { return f.Type == http2.FrameSettings && f.ack() })
	rc.writeWindowUpdate(0, 1<<31-1-65535)
	rc.writeHeaders(1, true, rc.request("GET", "/big")...)
	// From here on the client reads nothing (rc's reader stops once 64 frames are queued).
	// Wait for the handler to block in a write: no progress for 500 ms.
	deadline := time.Now().Add(ioTimeout)
	for last, since := int64(-1), time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if n := written.Load(); n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) > 500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the handler never blocked")
		}
	}
	rc.writeRST(1, http2.ErrCodeCancel)
	// No stream is open: the idle timeout is to close the connection.
	log.waitLast(t, addr, http.StateClosed)
}

// TestReadHeaderTimeoutFirstSettings: ReadHeaderTimeout "bounds the wait for the client's
// preface and first SETTINGS frame", but serve clears the read deadline (c.idle, IdleTimeout 0)
// right after the preface's magic: a client that sends the magic and nothing else holds the
// connection for ever.
func TestReadHeaderTimeoutFirstSettings(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{ReadHeaderTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	rc.writeRaw([]byte(http2.ClientPreface))
	rc.expectClosed()
}

// TestIdleGoAwayLinger: on the idle timeout, serve sends GOAWAY and returns at once, so the
// connection closes right after it: goAway arms the linger ("the reader goes on a moment,
// answering PINGs, refusing streams, so that the client reads the GOAWAY before the close, and
// the close does not reset what it sent since", streamsChanged), but serve does not wait for it.
// A request that crossed the GOAWAY is neither refused (RST_STREAM REFUSED_STREAM, which tells
// the client it may retry it) nor answered: the server just closes, with the request unread.
func TestIdleGoAwayLinger(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{IdleTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	ga := rc.expectGoAway(http2.ErrCodeNo)
	// A request the client sent as the GOAWAY was on its way.
	if ga.LastStreamID != 0 {
		t.Fatalf("GOAWAY %v, want last stream 0", ga)
	}
	rc.writeHeaders(1, true, rc.request("GET", "/")...)
	r := rc.response(1)
	if r.rst == nil || r.rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Errorf("a request crossing the idle GOAWAY: %+v (read error %v), want RST_STREAM REFUSED_STREAM", r, rc.readErr)
	}
}

// TestIdleTimeoutPingFloodNoRead (since fixed: WriteTimeout bounds every write): with no stream
// open, a client that sends PINGs (or
// SETTINGS) and reads nothing blocks the reader in the write of an ACK once TCP's buffers are
// full. The idle timeout is a read deadline: it cannot fire while the reader is in a write, and
// no write deadline is set outside goAway/fail. The connection (its goroutine, buffers, file
// descriptor) is held for ever, IdleTimeout or not, for a few megabytes of PINGs.
func TestIdleTimeoutPingFloodNoRead(t *testing.T) {
	t.Parallel()
	var log stateLog
	// Long enough for the flood to block the reader first (else the test passes, proving nothing).
	const idle = 4 * time.Second
	ts := serve(t, &srv.Server{IdleTimeout: idle, WriteTimeout: time.Second, ConnState: log.record,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}, false)
	d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			// A small receive window and segment size: the server's writes block sooner.
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
		})
	}}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := newRaw(t, c, false)
	addr := c.LocalAddr().String()
	rc.handshake()
	start := time.Now()
	// From here on the client reads nothing (rc's reader stops once 64 frames are queued).
	ping := []byte{0, 0, 8, byte(http2.FramePing), 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	batch := bytes.Repeat(ping, 1024)
	sent := 0
	for {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(batch)
		sent += n
		if err != nil && n == 0 {
			break // the server no longer reads: it is blocked writing an ACK
		}
		if sent > 1<<30 || time.Since(start) > ioTimeout {
			t.Fatal("the server never stopped reading PINGs")
		}
	}
	t.Logf("%d bytes of PINGs sent in %v before the server stopped reading", sent, time.Since(start))
	if time.Since(start) > idle {
		t.Log("the idle timeout may have come before the server blocked: this run proves nothing")
	}
	// The connection is idle (no stream): the idle timeout is to close it.
	log.waitLast(t, addr, http.StateClosed)
}
