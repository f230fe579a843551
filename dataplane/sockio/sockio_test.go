//go:build linux

package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// pair gives the two ends of a loopback TCP connection; a is the one to wrap.
func pair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// resetPair gives a connection whose peer has reset it (closed with SO_LINGER 0), and its raw reader and writer.
func resetPair(t testing.TB) (*net.TCPConn, *socket) {
	a, b := pair(t)
	s := mustNew(t, a)
	b.SetLinger(0)
	b.Close()
	time.Sleep(20 * time.Millisecond) // the RST arrives
	return a, s
}

func mustNew(t testing.TB, c net.Conn) *socket {
	t.Helper()
	s := newSocket(c)
	if s == nil {
		t.Fatalf("newSocket(%T) = nil", c)
	}
	return s
}

func TestReadWrite(t *testing.T) {
	a, b := pair(t)
	s := mustNew(t, a)
	if n, err := s.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(b, buf[:4]); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	// The Read waits in the poller: nothing is there when it starts.
	go func() {
		time.Sleep(20 * time.Millisecond)
		b.Write([]byte("pong"))
	}()
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, err := s.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
}

// A write larger than the socket buffers completes as the peer reads: the raw writer waits in the
// poller while the send buffer is full, and every byte arrives in order.
func TestWriteWaitsForBufferSpace(t *testing.T) {
	a, b := pair(t)
	s := mustNew(t, a)
	want := make([]byte, 16<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		time.Sleep(50 * time.Millisecond) // let the send buffer fill first
		io.CopyN(&buf, b, int64(len(want)))
		got <- buf.Bytes()
	}()
	if n, err := s.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(want))
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("the peer read other bytes than were written")
	}
}

func TestReadEOF(t *testing.T) {
	a, b := pair(t)
	s := mustNew(t, a)
	b.Write([]byte("last"))
	b.Close()
	buf := make([]byte, 16)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "last" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestDeadlines(t *testing.T) {
	a, _ := pair(t)
	s := mustNew(t, a)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := s.Read(make([]byte, 8))
	var ne net.Error
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline = %d, %v; want a timeout", n, err)
	}
	// The peer never reads: the write fills the buffers, then times out, saying how much went.
	a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	big := make([]byte, 64<<20)
	n, err = s.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(big) {
		t.Fatalf("Write past the deadline = %d, %v; want part written and a timeout", n, err)
	}
}

// Close interrupts a Read waiting in the poller, and later calls fail as on the net.Conn.
func TestClose(t *testing.T) {
	a, _ := pair(t)
	s := mustNew(t, a)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read across Close = %v; want net.ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close = %v; want net.ErrClosed", err)
	}
}

// Writing to a peer that reset the connection is an error (EPIPE or ECONNRESET), not a signal
// that ends the process.
func TestWriteToResetPeer(t *testing.T) {
	_, s := resetPair(t)
	var err error
	for range 100 {
		if _, err = s.Write([]byte("after reset")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write to a reset peer = %v; want EPIPE or ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("error %v is not a write *net.OpError", err)
	}
}

// A Read and a Write run at once on one raw socket (the race detector checks the two calls' state
// stays apart), as a proxy reads a client while it writes to it.
func TestConcurrentReadAndWrite(t *testing.T) {
	a, b := pair(t)
	s := mustNew(t, a)
	const rounds = 2000
	go io.Copy(b, b) // the peer echoes
	errc := make(chan error, 1)
	go func() {
		msg := []byte("0123456789abcdef")
		for range rounds {
			if _, err := s.Write(msg); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 16)
	for range rounds {
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != "0123456789abcdef" {
			t.Fatalf("read %q", buf)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestNoSocketWithoutDescriptor(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if s := newSocket(c1); s != nil {
		t.Fatal("newSocket(net.Pipe) gave a raw socket")
	}
}

// Wrap gives a TCP connection whose Read and Write are raw system calls and whose other methods
// (CloseWrite, SyscallConn, deadlines) are the TCP connection's; anything else comes back as it is.
func TestWrap(t *testing.T) {
	a, b := pair(t)
	w := Wrap(a)
	c, ok := w.(*Conn)
	if !ok {
		t.Fatalf("Wrap(*net.TCPConn) = %T; want *Conn", w)
	}
	if _, err := c.Write([]byte("half")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(b); err != nil || string(got) != "half" {
		t.Fatalf("peer read %q, %v; want \"half\" then EOF", got, err)
	}
	if _, ok := w.(syscall.Conn); !ok {
		t.Error("the wrapped connection is no syscall.Conn")
	}
	b.Write([]byte("back"))
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if Wrap(p1) != p1 {
		t.Error("Wrap(net.Pipe) did not give the pipe back")
	}
}

// Two Writes at once, as a net.Conn allows: each is written whole, one after the other, and each
// reports its own length (a regression: the second once replaced the first's buffer while the
// first waited for buffer space, and both reported success with bytes lost).
func TestConcurrentWrites(t *testing.T) {
	a, b := pair(t)
	c := Wrap(a)
	big := bytes.Repeat([]byte{'b'}, 32<<20)
	small := []byte("hello")
	type result struct {
		n   int
		err error
	}
	bigDone, smallDone := make(chan result, 1), make(chan result, 1)
	go func() { n, err := c.Write(big); bigDone <- result{n, err} }()
	time.Sleep(50 * time.Millisecond) // the big write fills the send buffer and waits in the poller
	go func() { n, err := c.Write(small); smallDone <- result{n, err} }()
	got := make(chan []byte, 1)
	go func() { all, _ := io.ReadAll(b); got <- all }()
	rb, rs := <-bigDone, <-smallDone
	if rb.err != nil || rb.n != len(big) || rs.err != nil || rs.n != len(small) {
		t.Fatalf("Write(32 MiB) = %d, %v; Write(5) = %d, %v", rb.n, rb.err, rs.n, rs.err)
	}
	a.CloseWrite()
	all := <-got
	if len(all) != len(big)+len(small) {
		t.Fatalf("the peer received %d bytes; want %d", len(all), len(big)+len(small))
	}
	// Whole writes, one after the other: "hello" is not inside the big one.
	if i := bytes.Index(all, small); i != 0 && i != len(big) {
		t.Fatalf("the small write landed at %d, inside the big one", i)
	}
}

// A system call's error names the connection's addresses, as a net.Conn's does.
func TestErrorAddresses(t *testing.T) {
	a, s := resetPair(t)
	_, err := s.Read(make([]byte, 8))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Source == nil || oe.Addr == nil ||
		oe.Source.String() != a.LocalAddr().String() || oe.Addr.String() != a.RemoteAddr().String() {
		t.Fatalf("Read from a reset connection: %v; want a read *net.OpError with both addresses", err)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Read from a reset connection: %v; want ECONNRESET", err)
	}
}

// Read and Write allocate nothing: the functions RawConn calls are bound once, in New.
func TestNoAllocations(t *testing.T) {
	a, b := pair(t)
	s := mustNew(t, a)
	msg, buf := []byte("x"), make([]byte, 1)
	allocs := testing.AllocsPerRun(200, func() {
		s.Write(msg)
		b.Read(buf)
		b.Write(msg)
		s.Read(buf)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations a round trip; want 0", allocs)
	}
}

// BenchmarkIO compares the two ways side by side: a 64-byte write (the peer drains in another
// goroutine), and a round trip of 64 bytes to an echoing peer. Run it with -cpu 1 for the one-core
// case the proxy is measured in; the round trip is mostly the wait for the peer.
func BenchmarkIO(b *testing.B) {
	for _, op := range []string{"write", "roundtrip"} {
		for _, mode := range []string{"net.Conn", "sockio"} {
			b.Run(op+"/"+mode, func(b *testing.B) {
				a, peer := pair(b)
				var rw io.ReadWriter = a
				if mode == "sockio" {
					rw = mustNew(b, a)
				}
				msg, buf := make([]byte, 64), make([]byte, 64)
				if op == "write" {
					go io.Copy(io.Discard, peer)
				} else {
					go io.Copy(peer, peer)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := rw.Write(msg); err != nil {
						b.Fatal(err)
					}
					if op == "write" {
						continue
					}
					if _, err := io.ReadFull(rw, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// wrapped gives the two ends of a loopback connection, the first as a Conn.
func wrapped(t testing.TB) (*Conn, *net.TCPConn) {
	t.Helper()
	a, b := pair(t)
	c, ok := Wrap(a).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) is not a *Conn", a)
	}
	return c, b
}

// writeAfter writes msg to w after d, in a goroutine.
func writeAfter(w io.Writer, d time.Duration, msg string) {
	time.AfterFunc(d, func() { io.WriteString(w, msg) })
}

// A later read deadline leaves the socket's earlier one in place; a read that one ends goes on
// to the later one (or none), and is not cut short.
func TestLazyReadDeadline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later time.Time
	}{
		{"later deadline", time.Now().Add(time.Minute)},
		{"no deadline", time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := wrapped(t)
			early := time.Now().Add(30 * time.Millisecond)
			c.SetReadDeadline(early)
			c.SetReadDeadline(tc.later)
			if !c.armed.Equal(early) {
				t.Fatalf("socket's deadline %v; want the earlier %v kept", c.armed, early)
			}
			writeAfter(peer, 150*time.Millisecond, "late")
			buf := make([]byte, 8)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "late" {
				t.Fatalf("Read = %q, %v; want the bytes sent after the earlier deadline", buf[:n], err)
			}
			if !c.armed.Equal(tc.later) {
				t.Fatalf("socket's deadline %v after the read; want %v", c.armed, tc.later)
			}
			// A deadline that passed before the read began is renewed the same way.
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			c.SetReadDeadline(tc.later)
			time.Sleep(20 * time.Millisecond)
			writeAfter(peer, 50*time.Millisecond, "again")
			if n, err = c.Read(buf); err != nil || string(buf[:n]) != "again" {
				t.Fatalf("Read after a passed deadline = %q, %v; want the bytes", buf[:n], err)
			}
		})
	}
}

// An earlier read deadline is set at once: it ends a read in progress, as a deadline in the past
// aborts one, and the read reports the timeout.
func TestEarlierReadDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   func() time.Time
	}{
		{"sooner", func() time.Time { return time.Now().Add(30 * time.Millisecond) }},
		{"past", func() time.Time { return time.Unix(1, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := wrapped(t)
			c.SetReadDeadline(time.Now().Add(time.Minute))
			done := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // the read waits in the poller
			c.SetReadDeadline(tc.at())
			select {
			case err := <-done:
				var ne net.Error
				if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("Read = %v; want a timeout", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the earlier deadline did not end the read")
			}
		})
	}
}

// SetDeadline sets the write deadline at once and the read deadline lazily.
func TestSetDeadline(t *testing.T) {
	c, peer := wrapped(t)
	c.SetDeadline(time.Now().Add(30 * time.Millisecond))
	c.SetDeadline(time.Time{})
	writeAfter(peer, 100*time.Millisecond, "x")
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("Read after the deadlines were cleared = %v", err)
	}
	c.SetDeadline(time.Unix(1, 0))
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the write deadline = %v; want a timeout", err)
	}
}

// SyscallConn's Read goes on past the socket's earlier deadline, as Read does: both a check
// that returns at once (a liveness probe) and a wait for readiness.
func TestRawReadPastEarlierDeadline(t *testing.T) {
	c, peer := wrapped(t)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	c.SetReadDeadline(time.Time{})
	time.Sleep(20 * time.Millisecond)
	if err := rc.Read(func(uintptr) bool { return true }); err != nil {
		t.Fatalf("a check after the earlier deadline passed = %v; want none", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	c.SetReadDeadline(time.Now().Add(time.Minute))
	writeAfter(peer, 150*time.Millisecond, "x")
	var peek [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&peek[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		return e != syscall.EAGAIN
	})
	if err != nil || peek[0] != 'x' {
		t.Fatalf("a wait past the earlier deadline = %v, peeked %q; want the byte", err, peek[0])
	}
	// A deadline that is the one set still ends the wait.
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	c.Read(peek[:])
	if err := rc.Read(func(uintptr) bool { return false }); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a wait past the deadline set = %v; want a timeout", err)
	}
}

// WriteTo (io.Copy from a Conn) reads through Read, past an earlier deadline.
func TestWriteToPastEarlierDeadline(t *testing.T) {
	c, peer := wrapped(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		io.WriteString(peer, "copied")
		peer.CloseWrite()
	}()
	var got bytes.Buffer
	if _, err := io.Copy(&got, c); err != nil || got.String() != "copied" {
		t.Fatalf("io.Copy = %q, %v; want all of it", got.String(), err)
	}
}

// Deadlines moved from another goroutine while reads go on (run with -race).
func TestConcurrentReadDeadlines(t *testing.T) {
	c, peer := wrapped(t)
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c.SetReadDeadline(time.Now().Add(time.Duration(i%5) * time.Millisecond))
			c.SetReadDeadline(time.Now().Add(time.Minute))
			time.Sleep(100 * time.Microsecond)
		}
	}()
	buf := make([]byte, 1)
	for range 200 {
		peer.Write([]byte("x"))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("Read = %v with the last deadline set a minute away", err)
		}
	}
	close(stop)
}

// BenchmarkSetReadDeadline moves a read deadline later, as a proxy does several times a request:
// on the *net.TCPConn, and on a Conn (noted, the socket's kept).
func BenchmarkSetReadDeadline(b *testing.B) {
	for _, mode := range []string{"net.Conn", "sockio"} {
		b.Run(mode, func(b *testing.B) {
			a, _ := pair(b)
			var nc net.Conn = a
			if mode == "sockio" {
				nc = Wrap(a)
			}
			b.ReportAllocs()
			for b.Loop() {
				nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			}
		})
	}
}

// A read with no deadline set (a later one only noted: none), ended by Close while the socket's
// earlier deadline passes, reports the close, not that deadline's timeout: the deadline noted
// cannot be set on a closed socket (early), and a read under way when both happen says so too.
func TestCloseDuringRearm(t *testing.T) {
	c, _ := wrapped(t)
	c.SetReadDeadline(time.Now().Add(time.Hour))
	c.SetReadDeadline(time.Time{})
	c.Close()
	if retry, err := c.early(os.ErrDeadlineExceeded); retry || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("early(timeout) on a closed Conn = %v, %v; want no retry and net.ErrClosed", retry, err)
	}
	for range 200 {
		c, _ := wrapped(t)
		c.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
		c.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			done <- err
		}()
		time.Sleep(2 * time.Millisecond)
		c.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read with no deadline set, ended by Close = %v; want net.ErrClosed", err)
		}
	}
}
