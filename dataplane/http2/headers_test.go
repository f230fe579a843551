package http2_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// The server decodes every header block of a connection into the same frame and field slice
// (headers.go): nothing of a block is left in the next, whether it ran across CONTINUATION frames,
// had an invalid field (its stream reset, the connection kept) or went past the header list size
// (431, and the next block has the whole size again).
func TestHeaderBlocksIndependent(t *testing.T) {
	t.Parallel()
	ts := serve(t, &srv.Server{MaxHeaderBytes: 64 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k := range r.Header {
			names = append(names, k)
		}
		slices.Sort(names)
		fmt.Fprintf(w, "%s %s %d", strings.Join(names, ","), r.Header.Get("X-Two"), len(r.Header.Get("X-Long")))
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	long := strings.Repeat("l", 20<<10) // more than a frame: HEADERS, then CONTINUATION
	rc.writeHeaders(1, true, rc.request("GET", "/1", "x-one", "1", "x-long", long, "x-two", "2")...)
	rc.mustOK(1, "X-Long,X-One,X-Two 2 20480")
	rc.writeHeaders(3, true, rc.request("GET", "/3", "x-two", "again")...)
	rc.mustOK(3, "X-Two again 0")

	rc.writeHeaders(5, true, rc.request("GET", "/5", "X-Upper", "u")...) // names are lower case
	if r := rc.response(5); r.rst == nil || r.rst.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("a field name in upper case: %+v, want RST_STREAM PROTOCOL_ERROR", r)
	}
	rc.writeHeaders(7, true, rc.request("GET", "/7", "x-two", "7")...)
	rc.mustOK(7, "X-Two 7 0")

	// Four 17 KiB fields: the fourth is past the 64 KiB list.
	big := strings.Repeat("b", 17<<10)
	rc.writeHeaders(9, true, rc.request("GET", "/9", "x-b1", big, "x-b2", big, "x-b3", big, "x-b4", big)...)
	if r := rc.response(9); r.status != "431" {
		t.Fatalf("a header list past MaxHeaderBytes: %+v, want 431", r)
	}
	rc.writeHeaders(11, true, rc.request("GET", "/11", "x-long", long, "x-one", "1")...)
	rc.mustOK(11, "X-Long,X-One  20480")
}
