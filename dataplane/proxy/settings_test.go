package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
)

// tlsBackend is an HTTPS backend that records the SNI each handshake carried.
type tlsBackend struct {
	srv  *httptest.Server
	port string
	mu   sync.Mutex
	snis []string
}

func startTLSBackend(t *testing.T, cert tls.Certificate) *tlsBackend {
	t.Helper()
	b := &tlsBackend{}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	}))
	b.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			b.mu.Lock()
			b.snis = append(b.snis, h.ServerName)
			b.mu.Unlock()
			return nil, nil
		},
	}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	_, b.port, _ = net.SplitHostPort(b.srv.Listener.Addr().String())
	return b
}

func (b *tlsBackend) lastSNI() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.snis) == 0 {
		return ""
	}
	return b.snis[len(b.snis)-1]
}

func httpsDoc(ca *testCA, port, extra string) string {
	return fmt.Sprintf(`
name: gw
httpListeners: [{name: web, port: 80}]
trustedRootCertificates: [{name: ca, data: %q}]
backendAddressPools: [{name: pool, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: %s, protocol: Https, trustedRootCertificates: [ca]%s}]
requestRoutingRules: [{name: r, ruleType: Basic, priority: 1, httpListener: web, backendAddressPool: pool, backendHttpSettings: s}]
`, ca.PEM, port, extra)
}

func getHost(t *testing.T, url, host string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// Each of Azure's two validation switches turns off exactly its own check; sniName goes on the wire;
// without it the SNI is the Host sent to the backend.
func TestBackendTLSValidationSwitches(t *testing.T) {
	ca, stranger := newCA(t), newCA(t)
	now := time.Now().Add(-time.Hour)
	good, _ := ca.issue(t, now, "backend.test")
	expired, _ := ca.issue(t, now.Add(-72*time.Hour), "backend.test")
	unknownCA, _ := stranger.issue(t, now, "backend.test")

	tests := []struct {
		name  string
		cert  tls.Certificate
		extra string
		host  string // client's Host
		want  int
		sni   string // SNI the backend must see
	}{
		{"valid, sniName", good, ", sniName: backend.test", "client.test", 200, "backend.test"},
		{"valid, SNI from the Host sent", good, "", "backend.test", 200, "backend.test"},
		{"valid, SNI from hostName", good, ", hostName: backend.test", "client.test", 200, "backend.test"},
		{"wrong name", good, ", sniName: other.test", "client.test", 502, "other.test"},
		{"wrong name, validateSni off", good, ", sniName: other.test, validateSni: false", "client.test", 200, "other.test"},
		{"expired", expired, ", sniName: backend.test", "x", 502, "backend.test"},
		{"expired, chain check off", expired, ", sniName: backend.test, validateCertChainAndExpiration: false", "x", 200, "backend.test"},
		{"unknown CA", unknownCA, ", sniName: backend.test", "x", 502, "backend.test"},
		{"unknown CA, chain check off", unknownCA, ", sniName: backend.test, validateCertChainAndExpiration: false", "x", 200, "backend.test"},
		{"unknown CA and wrong name, chain off only", unknownCA, ", sniName: other.test, validateCertChainAndExpiration: false", "x", 502, "other.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startTLSBackend(t, tt.cert)
			_, url := front(t, httpsDoc(ca, b.port, tt.extra))
			body, code := getHost(t, url+"/p", tt.host)
			if code != tt.want {
				t.Fatalf("GET = %d %q, want %d", code, body, tt.want)
			}
			if got := b.lastSNI(); got != tt.sni {
				t.Fatalf("backend saw SNI %q, want %q", got, tt.sni)
			}
		})
	}
}

// The backend path override, end to end: the backend sees the rewritten path with the query.
func TestPathOverride(t *testing.T) {
	got := make(chan string, 1)
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) { got <- r.URL.RequestURI() })
	doc := strings.Replace(gateway(t, 20, addr), "requestTimeout: 20", "requestTimeout: 20, path: /override/", 1)
	_, url := front(t, doc)
	if _, code := get(t, url+"/home/secondhome/?a=1&b=%20"); code != 200 {
		t.Fatalf("GET = %d", code)
	}
	if uri := <-got; uri != "/override/home/secondhome/?a=1&b=%20" {
		t.Fatalf("backend saw %s", uri)
	}
}

// Idle backend connections are pooled: sequential requests share one backend connection.
func TestPooledConnectionsReused(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]bool{}
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
	})
	_, url := front(t, gateway(t, 20, addr))
	for range 20 {
		if _, code := get(t, url+"/"); code != 200 {
			t.Fatalf("GET = %d", code)
		}
	}
	if len(conns) != 1 {
		t.Fatalf("20 sequential requests used %d backend connections, want 1", len(conns))
	}
}

// Dedicated connections: two clients never share a backend connection, and a client's backend
// connection closes with it.
func TestDedicatedBackendConnection(t *testing.T) {
	var mu sync.Mutex
	byConn := map[string]map[string]bool{} // backend-side remote addr -> client ids
	closed := make(chan string, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if byConn[r.RemoteAddr] == nil {
			byConn[r.RemoteAddr] = map[string]bool{}
		}
		byConn[r.RemoteAddr][r.Header.Get("X-Client")] = true
		mu.Unlock()
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	srv.Start()
	defer srv.Close()
	doc := strings.Replace(gateway(t, 20, srv.Listener.Addr().String()), "requestTimeout: 20", "requestTimeout: 20, dedicatedBackendConnection: true", 1)
	doc = strings.Replace(doc, "name: gw", "name: gw\nenableHttp2: false", 1)

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
	// Each client connection gets its ClientConn, closed with it, as the worker's connections hold
	// theirs.
	var conns sync.Map // net.Conn -> *proxy.ClientConn
	fr := httptest.NewUnstartedServer(p.Handler(80))
	fr.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		cc := new(proxy.ClientConn)
		conns.Store(c, cc)
		return proxy.WithClientConn(ctx, cc)
	}
	fr.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st != http.StateClosed && st != http.StateHijacked {
			return
		}
		if v, ok := conns.LoadAndDelete(c); ok {
			v.(*proxy.ClientConn).Close()
		}
	}
	fr.Start()
	defer fr.Close()

	clients := map[string]*http.Transport{"one": {}, "two": {}}
	for range 3 {
		for id, tr := range clients {
			req, _ := http.NewRequest("GET", fr.URL+"/", nil)
			req.Header.Set("X-Client", id)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	mu.Lock()
	if len(byConn) != 2 {
		t.Fatalf("two clients used %d backend connections, want 2: %v", len(byConn), byConn)
	}
	for c, ids := range byConn {
		if len(ids) != 1 {
			t.Fatalf("backend connection %s carried requests of clients %v", c, ids)
		}
	}
	mu.Unlock()
	clients["one"].CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("client one's backend connection stayed open after the client closed")
	}
	clients["two"].CloseIdleConnections()
}

// Cookie affinity: the first answer sets both cookies; the cookie keeps the client on its server, on
// any worker sharing the gateway's key; an unhealthy server's clients move and get new cookies; a
// forged cookie is ignored.
func TestCookieAffinity(t *testing.T) {
	var addrs []string
	port := ""
	for i, ip := range []string{"127.0.0.41", "127.0.0.42"} {
		name := fmt.Sprint("server", i)
		l, err := net.Listen("tcp", ip+":"+port)
		if err != nil {
			t.Skipf("listen %s: %v", ip, err)
		}
		_, port, _ = net.SplitHostPort(l.Addr().String())
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go s.Serve(l)
		t.Cleanup(func() { s.Close() })
		addrs = append(addrs, l.Addr().String())
	}
	doc := strings.Replace(gateway(t, 20, addrs...), "requestTimeout: 20", "requestTimeout: 20, cookieBasedAffinity: Enabled", 1)
	gw, _ := config.Decode([]byte(doc))
	config.Normalize(gw)
	key := []byte("0123456789abcdef0123456789abcdef")
	trackers := map[string]*health.Tracker{addrs[0]: health.NewTracker(1), addrs[1]: health.NewTracker(1)}
	lookup := func(k health.Key) *health.Tracker { return trackers[k.Address] }
	var urls []string
	for range 2 { // two workers
		p := proxy.New(cptest.Logger(t))
		if _, err := p.Apply(1, gw, lookup, key, nil); err != nil {
			t.Fatal(err)
		}
		fr := httptest.NewServer(p.Handler(80))
		t.Cleanup(fr.Close)
		urls = append(urls, fr.URL)
	}
	do := func(url string, cookies ...*http.Cookie) (string, []string) {
		req, _ := http.NewRequest("GET", url+"/", nil)
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.Header.Values("Set-Cookie")
	}
	first, set := do(urls[0])
	if len(set) != 2 || !strings.HasPrefix(set[0], "ApplicationGatewayAffinity=") || !strings.Contains(set[0], "Path=/") ||
		!strings.HasPrefix(set[1], "ApplicationGatewayAffinityCORS=") || !strings.Contains(set[1], "SameSite=None") || !strings.Contains(set[1], "Secure") {
		t.Fatalf("first response cookies: %q", set)
	}
	value := strings.SplitN(strings.SplitN(set[0], ";", 2)[0], "=", 2)[1]
	if strings.Contains(value, "127.0.0") {
		t.Fatalf("cookie value %q reveals the server address", value)
	}
	cookie := &http.Cookie{Name: "ApplicationGatewayAffinity", Value: value}
	for i := range 10 {
		body, set := do(urls[i%2], cookie) // both workers
		if body != first || len(set) != 0 {
			t.Fatalf("request %d with the cookie went to %q (Set-Cookie %q), want %q and no new cookie", i, body, set, first)
		}
	}
	if body, _ := do(urls[1], &http.Cookie{Name: "ApplicationGatewayAffinityCORS", Value: value}); body != first {
		t.Fatalf("the CORS cookie alone went to %q, want %q", body, first)
	}
	if _, set := do(urls[0], &http.Cookie{Name: "ApplicationGatewayAffinity", Value: "forged"}); len(set) != 2 {
		t.Fatalf("a forged cookie was honoured (no new cookies: %q)", set)
	}
	// The server goes unhealthy: the client moves and is told.
	idx := 0
	if first == "server1" {
		idx = 1
	}
	trackers[addrs[idx]].Observe(health.Outcome{Reason: "tcp-connect-error"})
	body, set := do(urls[1], cookie)
	if body == first || len(set) != 2 {
		t.Fatalf("with its server unhealthy the client went to %q with cookies %q", body, set)
	}
}

// An Https listener picks the certificate by SNI among multi-site listeners, and negotiates HTTP/2.
func TestHTTPSListenerSNI(t *testing.T) {
	ca := newCA(t)
	_, pemA := ca.issue(t, time.Now().Add(-time.Hour), "a.test")
	_, pemB := ca.issue(t, time.Now().Add(-time.Hour), "b.test")
	addr := backend(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	})
	_, port, _ := net.SplitHostPort(addr)
	doc := fmt.Sprintf(`
name: gw
sslCertificates: [{name: a, data: %q}, {name: b, data: %q}]
httpListeners:
  - {name: la, protocol: Https, port: 443, hostNames: [a.test], sslCertificate: a}
  - {name: lb, protocol: Https, port: 443, hostNames: [b.test], sslCertificate: b}
backendAddressPools: [{name: pool, backendAddresses: [{ipAddress: 127.0.0.1}]}]
backendHttpSettingsCollection: [{name: s, port: %s}]
requestRoutingRules:
  - {name: ra, ruleType: Basic, priority: 1, httpListener: la, backendAddressPool: pool, backendHttpSettings: s}
  - {name: rb, ruleType: Basic, priority: 2, httpListener: lb, backendAddressPool: pool, backendHttpSettings: s}
`, pemA, pemB, port)
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
	fr := httptest.NewUnstartedServer(p.Handler(443))
	fr.TLS = p.TLSConfig(443, true)
	fr.EnableHTTP2 = true
	fr.StartTLS()
	defer fr.Close()
	roots := x509Pool(t, ca)
	for _, host := range []string{"a.test", "b.test"} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host}, ForceAttemptHTTP2: true}
		req, _ := http.NewRequest("GET", fr.URL+"/", nil)
		req.Host = host
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != host {
			t.Errorf("SNI %s got the certificate of %s", host, got)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("%s: %s, want HTTP/2 by ALPN", host, resp.Proto)
		}
		if string(body) != host+" https" {
			t.Errorf("%s: backend saw %q", host, body)
		}
	}
}
