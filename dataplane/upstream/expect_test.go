package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingBody records whether it was read.
type countingBody struct {
	r     io.Reader
	reads atomic.Int32
}

func (c *countingBody) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.r.Read(p)
}

func (c *countingBody) Close() error { return nil }

func expectOut(t *testing.T, addr, body string) (*http.Request, *countingBody) {
	t.Helper()
	out := newOut(t, "POST", addr, "/upload", nil)
	cb := &countingBody{r: strings.NewReader(body)}
	out.Body, out.ContentLength = cb, int64(len(body))
	out.Header.Set("Expect", "100-continue")
	return out, cb
}

func TestExpectContinue(t *testing.T) {
	t.Run("backend sends 100 Continue", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body) // net/http sends 100 Continue on first read
			io.WriteString(w, r.Header.Get("Expect")+" "+string(body))
		})
		p := NewPool(b.addr(), Options{ExpectContinueTimeout: time.Minute})
		defer p.Close()
		for i := range 2 {
			out, _ := expectOut(t, b.addr(), "the body")
			w := newSpy()
			start := time.Now()
			status, err := p.Forward(context.Background(), w, out, 5*time.Second)
			if err != nil || status != 200 || w.Body() != "100-continue the body" {
				t.Fatalf("#%d: status %d, err %v, body %q", i, status, err, w.Body())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("#%d: took %v: did not react to 100 Continue", i, d)
			}
		}
		if n := b.accepted.Load(); n != 1 {
			t.Errorf("backend accepted %d connections, want 1", n)
		}
	})

	t.Run("backend rejects before the body", func(t *testing.T) {
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized) // without touching r.Body
		})
		p := NewPool(b.addr(), Options{ExpectContinueTimeout: time.Minute})
		defer p.Close()
		out, cb := expectOut(t, b.addr(), "secret upload")
		w := newSpy()
		status, err := p.Forward(context.Background(), w, out, 5*time.Second)
		if err != nil || status != http.StatusUnauthorized {
			t.Fatalf("status %d, err %v; want 401", status, err)
		}
		if n := cb.reads.Load(); n != 0 {
			t.Errorf("request body was read %d times although the backend rejected it", n)
		}
		if p.IdleConns() != 0 {
			t.Error("connection with an announced but unsent body was pooled")
		}
	})

	t.Run("backend ignores Expect", func(t *testing.T) {
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
			req, body, err := readRequest(br) // waits for the body, never sends 100
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+
				strconv.Itoa(len(body)+len(req.Header.Get("Expect")))+"\r\n\r\n"+req.Header.Get("Expect")+string(body))
		})
		const wait = 100 * time.Millisecond
		p := NewPool(rb.addr(), Options{ExpectContinueTimeout: wait})
		defer p.Close()
		out, _ := expectOut(t, rb.addr(), "late body")
		w := newSpy()
		start := time.Now()
		status, err := p.Forward(context.Background(), w, out, 5*time.Second)
		if err != nil || status != 200 || w.Body() != "100-continuelate body" {
			t.Fatalf("status %d, err %v, body %q", status, err, w.Body())
		}
		if d := time.Since(start); d < wait {
			t.Errorf("body sent after %v, before ExpectContinueTimeout %v", d, wait)
		}
	})

	t.Run("informational responses skipped", func(t *testing.T) {
		rb := newRawBackend(t, func(c net.Conn, br *bufio.Reader, _ int) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 100 Continue\r\n\r\n")
			body, _ := io.ReadAll(req.Body)
			io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: "+
				strconv.Itoa(len(body))+"\r\n\r\n"+string(body))
		})
		p := NewPool(rb.addr(), Options{ExpectContinueTimeout: time.Minute})
		defer p.Close()
		out, _ := expectOut(t, rb.addr(), "payload")
		w := newSpy()
		status, err := p.Forward(context.Background(), w, out, 5*time.Second)
		if err != nil || status != 201 || w.Body() != "payload" {
			t.Fatalf("status %d, err %v, body %q", status, err, w.Body())
		}
		if w.Header().Get("Link") != "" {
			t.Error("1xx header leaked into the final response")
		}
	})

	t.Run("end to end: client upload not requested", func(t *testing.T) {
		// A real client sends Expect: 100-continue to the gateway; the backend
		// rejects. The client must get the 413 without uploading the body.
		b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		})
		p := NewPool(b.addr(), Options{ExpectContinueTimeout: time.Minute})
		defer p.Close()
		front := newFront(t, p, 5*time.Second)

		cb := &countingBody{r: strings.NewReader(strings.Repeat("x", 1<<20))}
		req, err := http.NewRequest("PUT", front.URL+"/big", cb)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 1 << 20
		req.Header.Set("Expect", "100-continue")
		client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
		defer client.CloseIdleConnections()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
		if n := cb.reads.Load(); n != 0 {
			t.Errorf("client body read %d times; the upload should not have started", n)
		}
	})
}
