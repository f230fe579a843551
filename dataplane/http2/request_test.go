package http2_test

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"golang.org/x/net/http2"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// TestRequestURL: the request's URL is what url.ParseRequestURI gives for its :path, for targets
// the server takes apart itself (httphead.PlainTarget) and for those it parses; streams served one
// after the other on a connection each get their own.
func TestRequestURL(t *testing.T) {
	t.Parallel()
	urls := make(chan url.URL, 1)
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		urls <- *r.URL
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	id := uint32(1)
	for _, path := range []string{"/", "/a/b?c=d&e", "/a?", "/a%20b?x", "/%41/b", "/a/../b?q=%zz", "/plain"} {
		want, err := url.ParseRequestURI(path)
		if err != nil {
			t.Fatal(err)
		}
		rc.writeHeaders(id, true, rc.request("GET", path)...)
		got := recv(t, urls, "the handler's URL for "+path)
		if !reflect.DeepEqual(got, *want) {
			t.Errorf("%q: URL %+v; url.ParseRequestURI %+v", path, got, *want)
		}
		rc.waitFor("the response", func(f frame) bool { return f.StreamID == id && f.Type == http2.FrameHeaders })
		id += 2
	}
}
