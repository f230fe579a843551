package http2_test

import (
	"fmt"
	"io"
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

// Response fields are encoded against the connection's HPACK state across many responses: fields
// repeated (indexed: by the encoder, or from the connection's cache of indexed encodings), fields
// new each time (literals that add to the table and move every index, one as short as an index), and after the client
// shrinks the table to nothing (SETTINGS_HEADER_TABLE_SIZE 0), when the size update must begin
// the next block even if every field of it was cached. The client's decoder reads every block.
func TestResponseFieldsEncoding(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release // a stream kept open: the connection keeps its field cache
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Same", "same")
		if p := r.URL.Path; p != "/same" {
			w.Header().Set("X-N", p)
		}
		if d := r.URL.Query().Get("d"); d != "" {
			w.Header().Set("Age", d) // a name in the static table: a literal of 3 bytes, as short as an index
		}
		io.WriteString(w, "ok")
	})}, false)
	rc := ts.raw(t)
	rc.handshake()
	rc.writeHeaders(1, true, rc.request("GET", "/hold")...)
	id := uint32(3)
	check := func(path string) {
		t.Helper()
		rc.writeHeaders(id, true, rc.request("GET", path)...)
		r := rc.response(id)
		got := map[string]string{}
		for _, hf := range r.header {
			got[hf.Name] = hf.Value
		}
		p, d, _ := strings.Cut(path, "?d=")
		if r.status != "200" || got["x-same"] != "same" || got["content-type"] != "text/plain" ||
			got["age"] != d || p != "/same" && got["x-n"] != p {
			t.Fatalf("stream %d: %s %v", id, r.status, r.header)
		}
		id += 2
	}
	for i := range 10 {
		check(fmt.Sprint("/", i))
		check("/same")
		check(fmt.Sprint("/same?d=", i))
		check("/same")
	}
	rc.writeSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	rc.waitFor("the SETTINGS ACK", func(f frame) bool { return f.Type == http2.FrameSettings && f.ack() })
	for i := range 10 {
		check("/same")
		check(fmt.Sprint("/after", i))
	}
	close(release)
	if r := rc.response(1); r.status != "200" {
		t.Fatalf("the held stream: %+v", r)
	}
}
