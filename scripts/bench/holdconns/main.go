// Command holdconns is the memory benchmark's client: it opens N keep-alive HTTP/1.1 connections to
// one address (with --tls --h2, HTTP/2 connections), sends one GET on each and reads the whole
// response, then holds every connection open (idle, keep-alive) until it is sent SIGTERM or SIGINT.
//
// Once every connection has had its answer it prints one line to standard output:
//
//	ready 10000 conns in 1.23s
//
// Connections are dialled from several loopback source addresses in turn (--src), so that N is not
// bounded by one address's ephemeral ports; they are closed with SO_LINGER 0 (a reset, no TIME_WAIT
// left behind for the next run). A connection that fails is an error: the run stops and exits 1.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func main() {
	addr := flag.String("addr", "", "HOST:PORT to connect to (required)")
	n := flag.Int("n", 10000, "connections to open and hold")
	path := flag.String("path", "/64", "path of the one request sent on each connection")
	host := flag.String("host", "", "Host header (default: --addr)")
	src := flag.String("src", "127.0.0.101,127.0.0.102,127.0.0.103,127.0.0.104", "comma-separated source addresses, used in turn")
	par := flag.Int("parallel", 64, "connections being opened at once")
	timeout := flag.Duration("timeout", 60*time.Second, "time allowed to open every connection")
	useTLS := flag.Bool("tls", false, "speak TLS (the server's certificate is not checked: loopback benchmarks only)")
	useH2 := flag.Bool("h2", false, "with --tls: speak HTTP/2 (ALPN h2), one stream per connection")
	flag.Parse()
	if *addr == "" || *n < 1 || *par < 1 || (*useH2 && !*useTLS) {
		flag.Usage()
		os.Exit(2)
	}
	if *host == "" {
		*host = *addr
	}
	var srcs []*net.TCPAddr
	for _, s := range strings.Split(*src, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			fatalf("bad source address %q", s)
		}
		srcs = append(srcs, &net.TCPAddr{IP: ip})
	}
	if len(srcs) == 0 {
		srcs = []*net.TCPAddr{nil}
	}
	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *host + "\r\nUser-Agent: holdconns\r\n\r\n")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	openCtx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	conns := make([]*net.TCPConn, *n)
	start := time.Now()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	next := make(chan int)
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := open(openCtx, srcs[i%len(srcs)], *addr, req, *useTLS, *useH2, *path, *host)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err); cancel() })
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range *n {
		if openCtx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	defer closeAll(conns)
	if firstErr == nil && openCtx.Err() != nil {
		firstErr = openCtx.Err()
	}
	if firstErr != nil {
		opened := 0
		for _, c := range conns {
			if c != nil {
				opened++
			}
		}
		fmt.Fprintf(os.Stderr, "holdconns: %d of %d connections open: %v\n", opened, *n, firstErr)
		closeAll(conns)
		os.Exit(1)
	}
	fmt.Printf("ready %d conns in %.2fs\n", *n, time.Since(start).Seconds())
	<-ctx.Done()
}

// open dials addr from src (with TLS if useTLS), sends req (or, with useH2, a GET for path over
// HTTP/2) and reads one response to its end. It returns the TCP connection: a TLS connection over
// it needs nothing more while it idles.
func open(ctx context.Context, src *net.TCPAddr, addr string, req []byte, useTLS, useH2 bool, path, host string) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.TCPConn)
	var rw net.Conn = c
	if useTLS {
		proto := "http/1.1"
		if useH2 {
			proto = "h2"
		}
		rw = tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
	}
	if useH2 {
		err = exchangeH2(rw.(*tls.Conn), path, host)
	} else {
		err = exchange(rw, req)
	}
	if err != nil {
		c.SetLinger(0)
		c.Close()
		return nil, err
	}
	return c, nil
}

func exchange(c net.Conn, req []byte) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	// A small reader: its buffered bytes are dropped afterwards, so nothing must follow the response.
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if resp.Close {
		return errors.New("the server closed the connection after the response (no keep-alive)")
	}
	if br.Buffered() > 0 {
		return errors.New("unexpected bytes after the response")
	}
	return c.SetDeadline(time.Time{})
}

// exchangeH2 opens an HTTP/2 connection over c (ALPN h2), sends one GET for path and reads frames
// until its response has ended, acknowledging the server's settings, as a browser's idle
// connection would have it.
func exchangeH2(c *tls.Conn, path, host string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		return fmt.Errorf("ALPN chose %q, not h2", p)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, bufio.NewReaderSize(c, 512))
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", host}, {":path", path}, {"user-agent", "holdconns"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		return err
	}
	status := ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				return err
			}
			if status != "200" {
				return fmt.Errorf("status %q", status)
			}
			if f.StreamEnded() {
				return c.SetDeadline(time.Time{})
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return c.SetDeadline(time.Time{})
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.RSTStreamFrame:
			return fmt.Errorf("RST_STREAM %v", f.ErrCode)
		}
	}
}

func closeAll(conns []*net.TCPConn) {
	for i, c := range conns {
		if c != nil {
			c.SetLinger(0)
			c.Close()
			conns[i] = nil
		}
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "holdconns: "+format+"\n", args...)
	os.Exit(2)
}
