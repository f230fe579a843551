package proxy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
)

// gateway builds a one-listener Basic gateway in front of the given backend addresses (host:port,
// all on the same port, as the settings' port is shared).
func gateway(t testing.TB, timeout int, backends ...string) string {
	t.Helper()
	port := ""
	var addrs []string
	for _, b := range backends {
		h, p, err := net.SplitHostPort(b)
		if err != nil {
			t.Fatal(err)
		}
		if port != "" && p != port {
			t.Fatalf("backends on different ports: %v", backends)
		}
		port = p
		addrs = append(addrs, fmt.Sprintf("{ipAddress: %s}", h))
	}
	if port == "" {
		port = "9"
	}
	return fmt.Sprintf(`
name: gw
httpListeners: [{name: web, port: 80}]
backendAddressPools: [{name: pool, backendAddresses: [%s]}]
backendHttpSettingsCollection: [{name: s, port: %s, requestTimeout: %d}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool, backendHttpSettings: s}]
`, strings.Join(addrs, ", "), port, timeout)
}

// front starts the proxy with a gateway document behind a real HTTP server (HTTP/1.1 and h2c).
func front(t *testing.T, doc string) (*proxy.Proxy, string) {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatal(err)
	}
	p := proxy.New(cptest.Logger(t))
	if _, err := p.Apply(1, gw, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p.Handler(80))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func backend(t *testing.T, ip string, h http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return l.Addr().String()
}

func TestForwardedHeadersAndHopByHop(t *testing.T) {
	got := make(chan http.Header, 1)
	var gotHost string
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		gotHost = r.Host
		got <- r.Header.Clone()
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Connection", "X-Backend-Private")
		w.Header().Set("X-Backend-Private", "secret")
		w.Header().Set("X-App", "1")
		io.WriteString(w, "ok")
	})
	_, url := front(t, gateway(t, 20, addr))
	req, _ := http.NewRequest("GET", url+"/p?q=1", nil)
	req.Host = "shop.example.com"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Connection", "X-Client-Private")
	req.Header.Set("X-Client-Private", "secret")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("X-Custom", "kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET = %d %q", resp.StatusCode, body)
	}
	h := <-got
	checks := map[string]string{
		"X-Forwarded-For":     "203.0.113.9, 127.0.0.1",
		"X-Forwarded-Proto":   "http",
		"X-Forwarded-Host":    "shop.example.com",
		"X-Client-Private":    "",
		"Proxy-Authorization": "",
		"Te":                  "trailers",
		"X-Custom":            "kept",
	}
	for k, want := range checks {
		if v := h.Get(k); v != want {
			t.Errorf("backend saw %s = %q, want %q", k, v, want)
		}
	}
	if gotHost != "shop.example.com" {
		t.Errorf("backend saw Host %q, want the client's", gotHost)
	}
	if resp.Header.Get("X-Backend-Private") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if resp.Header.Get("X-App") != "1" {
		t.Errorf("end-to-end response header lost: %v", resp.Header)
	}
}

func TestRoundRobin(t *testing.T) {
	port := ""
	var addrs []string
	for i, ip := range []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"} {
		name := fmt.Sprint(i)
		var addr string
		if port == "" {
			addr = backend(t, ip, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
			_, port, _ = net.SplitHostPort(addr)
		} else {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				t.Skipf("port %s taken on %s: %v", port, ip, err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
			addr = l.Addr().String()
		}
		addrs = append(addrs, addr)
	}
	_, url := front(t, gateway(t, 20, addrs...))
	counts := map[string]int{}
	for range 30 {
		body, code := get(t, url+"/")
		if code != 200 {
			t.Fatalf("GET = %d", code)
		}
		counts[body]++
	}
	for _, n := range []string{"0", "1", "2"} {
		if counts[n] != 10 {
			t.Fatalf("round-robin counts = %v, want 10 each", counts)
		}
	}
}

func get(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func TestErrors(t *testing.T) {
	slow := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	t.Run("unreachable is 502", func(t *testing.T) {
		_, url := front(t, gateway(t, 20, closedAddr))
		body, code := get(t, url+"/")
		if code != http.StatusBadGateway || !strings.Contains(body, closedAddr) {
			t.Fatalf("GET = %d %q, want 502 naming %s", code, body, closedAddr)
		}
	})
	t.Run("past requestTimeout is 504", func(t *testing.T) {
		_, url := front(t, gateway(t, 1, slow))
		body, code := get(t, url+"/")
		if code != http.StatusGatewayTimeout {
			t.Fatalf("GET = %d %q, want 504", code, body)
		}
	})
	t.Run("empty pool is 502", func(t *testing.T) {
		_, url := front(t, gateway(t, 20))
		body, code := get(t, url+"/")
		if code != http.StatusBadGateway || !strings.Contains(body, "no healthy backend") {
			t.Fatalf("GET = %d %q, want 502 no healthy backend", code, body)
		}
	})
	t.Run("no rule is 404", func(t *testing.T) {
		p := proxy.New(cptest.Logger(t))
		srv := httptest.NewServer(p.Handler(80))
		defer srv.Close()
		if _, code := get(t, srv.URL+"/"); code != http.StatusNotFound {
			t.Fatalf("GET with no config = %d, want 404", code)
		}
	})
}

// Request and response bodies stream: the backend sees the first part of an upload before the
// client sends the rest, and the client sees the first part of a response before the backend ends it.
func TestStreamingBothWays(t *testing.T) {
	firstSeen := make(chan string, 1)
	release := make(chan struct{})
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		br := bufio.NewReader(r.Body)
		line, _ := br.ReadString('\n')
		firstSeen <- line
		rest, _ := io.ReadAll(br)
		fmt.Fprintf(w, "got %d more bytes\n", len(rest))
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "end\n")
	})
	_, url := front(t, gateway(t, 20, addr))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", url+"/upload", pr)
	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			close(respc)
			return
		}
		respc <- resp
	}()
	io.WriteString(pw, "first line\n")
	select {
	case l := <-firstSeen:
		if l != "first line\n" {
			t.Fatalf("backend read %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend did not see the first part of a streaming upload")
	}
	io.WriteString(pw, strings.Repeat("x", 100000))
	pw.Close()
	resp := <-respc
	if resp == nil {
		t.FailNow()
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "got 100000 more bytes\n" {
		t.Fatalf("first response line = %q, %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "end\n" {
		t.Fatalf("rest of response = %q", rest)
	}
}

// HTTP/2 over cleartext (prior knowledge) is served and proxied to the HTTP/1.1 backend.
func TestH2C(t *testing.T) {
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s", r.Proto)
	})
	_, url := front(t, gateway(t, 20, addr))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: tr}
	resp, err := c.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || string(body) != "backend saw HTTP/1.1" {
		t.Fatalf("h2c: proto %s body %q", resp.Proto, body)
	}
}

// A new config applies while a request is in flight: the request completes.
func TestApplyKeepsInFlightRequests(t *testing.T) {
	release := make(chan struct{})
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "done")
	})
	p, url := front(t, gateway(t, 20, addr))
	done := make(chan string, 1)
	go func() { b, _ := get(t, url+"/"); done <- b }()
	time.Sleep(100 * time.Millisecond) // let the request reach the backend
	gw, _ := config.Decode([]byte(gateway(t, 20)))
	config.Normalize(gw)
	if _, err := p.Apply(2, gw, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case b := <-done:
		if b != "done" {
			t.Fatalf("in-flight request got %q after an apply", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request did not finish")
	}
	if p.Version() != 2 {
		t.Fatalf("version = %d, want 2", p.Version())
	}
}

// The settings' hostName, or the server's own address, replaces the client's Host; X-Forwarded-Host
// keeps the original.
func TestHostOverride(t *testing.T) {
	type seen struct{ host, fwd string }
	got := make(chan seen, 1)
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.Header.Get("X-Forwarded-Host")}
	})
	for _, tc := range []struct{ extra, want string }{
		{"hostName: app.internal", "app.internal"},
		{"pickHostNameFromBackendAddress: true", "127.0.0.1"},
		{"", "client.example"},
	} {
		doc := strings.Replace(gateway(t, 20, addr), "requestTimeout: 20", "requestTimeout: 20, "+tc.extra, 1)
		if tc.extra == "" {
			doc = gateway(t, 20, addr)
		}
		_, url := front(t, doc)
		req, _ := http.NewRequest("GET", url+"/", nil)
		req.Host = "client.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s := <-got
		if s.host != tc.want || s.fwd != "client.example" {
			t.Errorf("%q: backend saw Host %q X-Forwarded-Host %q, want %q and client.example", tc.extra, s.host, s.fwd, tc.want)
		}
	}
}

// Https settings re-encrypt to the backend and verify it against the configured trusted root; a
// backend whose certificate that root did not sign gets no traffic (502).
func TestHTTPSBackendWithTrustedRoot(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v", r.TLS != nil)
	}))
	defer srv.Close()
	root := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	doc := fmt.Sprintf(`
name: gw
httpListeners: [{name: web, port: 80}]
trustedRootCertificates: [{name: ca, data: %q}]
backendAddressPools: [{name: pool, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: %s, protocol: Https, trustedRootCertificates: [ca]}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool, backendHttpSettings: s}]
`, root, port)
	_, url := front(t, doc)
	if body, code := get(t, url+"/"); code != 200 || body != "tls=true" {
		t.Fatalf("through Https settings: %d %q", code, body)
	}

	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	other.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	other.StartTLS()
	defer other.Close()
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	_, url = front(t, strings.Replace(doc, "port: "+port, "port: "+otherPort, 1))
	if _, code := get(t, url+"/"); code != http.StatusBadGateway {
		t.Fatalf("backend with a certificate the trusted root did not sign: %d, want 502", code)
	}
}

// selfSigned makes a certificate for 127.0.0.1 signed by nobody the tests trust.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "stranger"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A server that refuses connections (down, not yet marked by a probe) costs no request: the
// request goes to another server of the pool, whatever its method, and the client is not told.
// With every server down the client gets a 502.
func TestConnectFailureTriesAnotherServer(t *testing.T) {
	var posts atomic.Int32
	live := backend(t, "127.0.0.76", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			if string(b) == "payload" {
				posts.Add(1)
			}
		}
		io.WriteString(w, "live")
	})
	_, port, _ := net.SplitHostPort(live)
	// 127.0.0.77 and .78 on the same port: nothing listens there.
	_, url := front(t, gateway(t, 20, "127.0.0.77:"+port, live, "127.0.0.78:"+port))
	for i := range 12 {
		if b, code := get(t, url+"/"); code != http.StatusOK || b != "live" {
			t.Fatalf("GET %d: %d %q, want 200 from the live server", i, code, b)
		}
		resp, err := http.Post(url+"/", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %d: %d, want 200", i, resp.StatusCode)
		}
	}
	if n := posts.Load(); n != 12 {
		t.Errorf("live server got %d complete POST bodies, want 12", n)
	}

	_, down := front(t, gateway(t, 20, "127.0.0.77:"+port, "127.0.0.78:"+port))
	if b, code := get(t, down+"/"); code != http.StatusBadGateway || !strings.Contains(b, "could not be reached") {
		t.Errorf("every server down: %d %q, want 502", code, b)
	}
}
