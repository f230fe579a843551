// Command holdconns is the memory benchmark's client: it opens N keep-alive HTTP/1.1 connections to
// one address, sends one GET on each and reads the whole response, then holds every connection open
// (idle, keep-alive) until it is sent SIGTERM or SIGINT.
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
	flag.Parse()
	if *addr == "" || *n < 1 || *par < 1 {
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
				c, err := open(openCtx, srcs[i%len(srcs)], *addr, req, *useTLS)
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

// open dials addr from src (with TLS if useTLS), sends req and reads one response to its end. It
// returns the TCP connection: a TLS connection over it needs nothing more while it idles.
func open(ctx context.Context, src *net.TCPAddr, addr string, req []byte, useTLS bool) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*net.TCPConn)
	var rw net.Conn = c
	if useTLS {
		rw = tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	}
	if err := exchange(rw, req); err != nil {
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
