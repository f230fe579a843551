package worker_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Dedicated backend connections through a real worker, in the clear and over TLS: each client
// connection gets a backend connection of its own, used for all its requests and never shared,
// and closing the client connection closes its backend connection.
func TestDedicatedBackendConnection(t *testing.T) {
	for _, proto := range []string{"Http", "Https"} {
		t.Run(proto, func(t *testing.T) {
			var mu sync.Mutex
			byConn := map[string]map[string]bool{} // backend connection (its remote address) -> client ids
			closed := make(chan string, 8)
			origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/x" {
					return // a health probe
				}
				mu.Lock()
				if byConn[r.RemoteAddr] == nil {
					byConn[r.RemoteAddr] = map[string]bool{}
				}
				byConn[r.RemoteAddr][r.Header.Get("X-Client")] = true
				mu.Unlock()
			}))
			origin.Config.ConnState = func(c net.Conn, st http.ConnState) {
				if st == http.StateClosed {
					closed <- c.RemoteAddr().String()
				}
			}
			origin.Start()
			t.Cleanup(origin.Close)
			originPort := portOf(origin.Listener.Addr())
			p := strconv.Itoa(originPort)

			w := startWorker(t)
			port := freePort(t)
			doc := gatewayDoc(t, proto, port, originPort, "enableHttp2: false")
			doc = strings.Replace(doc, "{name: s, port: "+p+"}", "{name: s, port: "+p+", dedicatedBackendConnection: true}", 1)
			apply(t, w, 1, doc)

			scheme := strings.ToLower(proto)
			clients := map[string]*http.Transport{}
			for _, id := range []string{"one", "two"} {
				clients[id] = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the test's own certificate
			}
			for range 3 {
				for id, tr := range clients {
					req, _ := http.NewRequest("GET", scheme+"://127.0.0.1:"+strconv.Itoa(port)+"/x", nil)
					req.Header.Set("X-Client", id)
					resp, err := tr.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					must(t, resp.StatusCode == 200, "client %s: status %d", id, resp.StatusCode)
				}
			}
			mu.Lock()
			must(t, len(byConn) == 2, "two clients used %d backend connections, want 2: %v", len(byConn), byConn)
			for c, ids := range byConn {
				must(t, len(ids) == 1, "backend connection %s carried requests of clients %v", c, ids)
			}
			mu.Unlock()
			clients["one"].CloseIdleConnections()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("client one's backend connection stayed open after the client closed")
			}
			clients["two"].CloseIdleConnections()
		})
	}
}
