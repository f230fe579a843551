package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestClientCancelReachesBackend: when an HTTP/2 client gives up on a request whose backend has
// not answered (it resets the stream; the connection stays), the gateway aborts the backend
// exchange: the backend's connection closes, which ends the backend handler's request context,
// rather than the exchange running to its timeout. (HTTP/1.1 has no such signal short of the
// client closing its connection, which the HTTP/1 server does not watch for while a handler runs:
// see README, Status.)
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
		case <-time.After(20 * time.Second):
			ended <- fmt.Errorf("the backend request was not aborted")
		}
	}))
	defer srv.Close()
	w := startWorker(t)
	port := freePort(t)
	apply(t, w, 1, gatewayDoc(t, "Http", port, portOf(srv.Listener.Addr()), ""))
	url := fmt.Sprintf("http://127.0.0.1:%d/wait", port)

	for _, proto := range []string{"h2c"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
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
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the request never reached the backend")
			}
			cancel()
			if err := <-errc; err == nil {
				t.Fatal("the canceled request succeeded")
			}
			select {
			case err := <-ended:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the backend request was not aborted")
			}
		})
	}
}
