package http2

//lint:file-ignore SA1019 x/net/http2's Transport is the client these tests mean to use (see helpers_test.go)

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	xhttp2 "golang.org/x/net/http2"
)

// serveOne serves the first connection of a loopback listener with s, and gives the server's
// connection and a client's.
func serveOne(t *testing.T, s *Server) (*conn, *xhttp2.ClientConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan *conn, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		c := s.newConn(nc)
		ch <- c
		c.serve()
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := (&xhttp2.Transport{}).NewClientConn(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); s.Close() })
	return <-ch, cc
}

func roundTrip(t *testing.T, cc *xhttp2.ClientConn, header map[string]string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://test/", nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// waitIdle waits until c has no stream open, and a little longer for its handler to return.
func waitIdle(t *testing.T, c *conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.open.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("streams still open")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// An idle connection keeps nothing of its last request's header block: not a big block's field
// values while it waits, nor, after a shorter block, in the field slice's spare capacity.
func TestIdleConnKeepsNoHeaderBlock(t *testing.T) {
	c, cc := serveOne(t, &Server{Handler: okHandler})
	retained := func() int {
		c.mu.Lock() // the reader's last unlock came after it was done with the block
		defer c.mu.Unlock()
		n := 0
		for _, hf := range c.hr.b.fields[:cap(c.hr.b.fields)] {
			n += len(hf.Value)
		}
		return n
	}
	roundTrip(t, cc, map[string]string{"X-Big": strings.Repeat("a", 512<<10)})
	waitIdle(t, c)
	if n := retained(); n > 0 {
		t.Errorf("an idle connection keeps %d bytes of its last request's field values", n)
	}
	big := map[string]string{}
	for i := range 40 {
		big["X-F"+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 8<<10)
	}
	roundTrip(t, cc, big)
	roundTrip(t, cc, nil)
	waitIdle(t, c)
	if n := retained(); n > 0 {
		t.Errorf("after a long block then a short one, %d bytes of field values are kept", n)
	}
}

// A connection left with no stream open keeps no field cache, though the stream closed after its
// last write.
func TestIdleConnKeepsNoFieldCache(t *testing.T) {
	c, cc := serveOne(t, &Server{Handler: okHandler})
	roundTrip(t, cc, nil)
	roundTrip(t, cc, nil)
	waitIdle(t, c)
	c.wmu.Lock()
	kept := c.fields != nil
	c.wmu.Unlock()
	if kept {
		t.Error("an idle connection keeps its field cache")
	}
}
