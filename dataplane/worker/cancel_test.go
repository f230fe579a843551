package worker_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientCancelReachesBackend: when a client gives up on a request whose backend has not
// answered, the gateway ends the backend exchange: the backend's connection closes, which ends the
// backend handler's request context, rather than the exchange running to its timeout (20 s here).
// An HTTP/1.1 client closes its connection, in the clear or over TLS, with an Upgrade request too
// (the worker notices within a second: it asks the client's socket between slices of the wait);
// an HTTP/2 client resets its stream and keeps its connection.
func TestClientCancelReachesBackend(t *testing.T) {
	arrived := make(chan struct{}, 4)
	ended := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			return // a health probe
		}
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			ended <- nil
		case <-time.After(15 * time.Second):
			ended <- fmt.Errorf("the backend request was not aborted")
		}
	}))
	defer srv.Close()
	w := startWorker(t)
	plain, secure := freePort(t), freePort(t)
	apply(t, w, 1, twoListeners(t, plain, secure, portOf(srv.Listener.Addr()), 20))
	// reached waits for the request at the backend; aborted, for the backend to see it end.
	reached := func(t *testing.T) {
		t.Helper()
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the request never reached the backend")
		}
	}
	aborted := func(t *testing.T) {
		t.Helper()
		select {
		case err := <-ended:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the backend request was not aborted")
		}
	}

	t.Run("Upgrade", func(t *testing.T) {
		// An Upgrade request (WebSocket) goes through the proxy's upgrade path, under a context of
		// its own: the client is still watched there.
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", plain))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		reached(t)
		c.Close()
		aborted(t)
	})
	for _, proto := range []string{"HTTP/1.1", "HTTPS", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the test's own certificate
			url := fmt.Sprintf("http://127.0.0.1:%d/wait", plain)
			switch proto {
			case "h2c":
				tr.Protocols.SetUnencryptedHTTP2(true)
			case "HTTPS":
				tr.Protocols.SetHTTP1(true)
				url = fmt.Sprintf("https://127.0.0.1:%d/wait", secure)
			default:
				tr.Protocols.SetHTTP1(true)
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			errc := make(chan error, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			reached(t)
			cancel()
			if err := <-errc; err == nil {
				t.Fatal("the canceled request succeeded")
			}
			aborted(t)
		})
	}
}

// TestSlowBackendAnswerWhileClientWaits: while the worker watches an HTTP/1.1 client between
// slices of a second, the header timeout still holds: a backend silent past it gets 504; and a
// backend that begins its answer, then takes longer than a slice to finish its header, is still
// answered in full.
func TestSlowBackendAnswerWhileClientWaits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					switch req.URL.Path {
					case "/silent":
						time.Sleep(6 * time.Second)
						return
					case "/trickle":
						io.WriteString(c, "HTTP/1.1 200 OK\r\n")
						time.Sleep(1500 * time.Millisecond)
						io.WriteString(c, "Content-Length: 4\r\n\r\nslow")
					default: // health probes
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
					}
				}
			}()
		}
	}()
	w := startWorker(t)
	plain, secure := freePort(t), freePort(t)
	apply(t, w, 1, twoListeners(t, plain, secure, portOf(ln.Addr()), 3))
	client := &http.Client{Timeout: 15 * time.Second}

	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/silent", plain))
	must(t, err == nil, "silent backend: %v", err)
	resp.Body.Close()
	must(t, resp.StatusCode == http.StatusGatewayTimeout, "silent backend past the 3 s timeout: %s, want 504", resp.Status)

	resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/trickle", plain))
	must(t, err == nil, "trickling backend: %v", err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, resp.StatusCode == 200 && string(body) == "slow", "header finished 1.5 s after it began: %s %q, want 200 \"slow\"", resp.Status, body)
}

// TestHalfClosedClientGetsNoAnswer: a client that sends its request and then shuts down its
// sending side (HTTP/1.0 tools, `nc -N`) counts as gone, as for nginx: the backend exchange ends
// and the connection closes with nothing sent (nginx's 499), not with a "200 OK" the backend never
// gave (a regression found in review: the HTTP/1 server answered 200 for the handler that wrote
// nothing).
func TestHalfClosedClientGetsNoAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2500 * time.Millisecond)
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "from the backend")
		}
	}))
	defer srv.Close()
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, portOf(srv.Listener.Addr()), ""))
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	must(t, err == nil && len(got) == 0, "a half-closed client read %q, %v; want the connection closed with nothing sent", got, err)
}

// twoListeners is a gateway with an Http listener on plain and an Https one on secure, both to the
// backend on backendPort with the given request timeout (seconds).
func twoListeners(t testing.TB, plain, secure, backendPort, timeout int) string {
	t.Helper()
	doc := fmt.Sprintf(`
name: gw
sslCertificates: [{name: c, data: %q}]
httpListeners:
  - {name: web, protocol: Http, port: %d}
  - {name: tls, protocol: Https, port: %d, sslCertificate: c}
backendAddressPools: [{name: pool, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: %d, requestTimeout: %d}]
requestRoutingRules:
  - {name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool, backendHttpSettings: s}
  - {name: r2, ruleType: Basic, priority: 2, httpListener: tls, backendAddressPool: pool, backendHttpSettings: s}
`, selfSignedPEM(t), plain, secure, backendPort, timeout)
	return strings.TrimSpace(doc)
}
