// Package upstream implements the HTTP/1.1 hop from the gateway to a backend
// server: a per-backend Pool of keep-alive connections and Pool.Forward, which
// sends one request over a pooled connection and streams the response into an
// http.ResponseWriter.
//
// It replaces httputil.ReverseProxy + http.Transport on the hot path. The
// Transport hands every request to per-connection reader and writer goroutines
// over channels and clones headers; here the whole exchange runs in the
// handler's goroutine:
//
//   - each connection owns a bufio.Reader and bufio.Writer for its lifetime;
//   - the request line and header are written by a small validating writer
//     (no Header clone, no sorting);
//   - the response header is parsed with http.ReadResponse, the body copied
//     with a pooled 32 KiB buffer;
//   - timeouts are connection deadlines, and cancellation of the request
//     context is a context.AfterFunc that sets a past deadline, so there is no
//     timer or goroutine per request;
//   - an idle connection is checked for a backend-side close with one
//     non-blocking read before reuse (unix), which is what the Transport's
//     background reader or nginx's idle-connection event handler achieve.
//
// The package never uses http.Transport. It speaks HTTP/1.1 only (also over
// TLS, where ALPN is pinned to http/1.1).
//
// Limitations: the request body is written before the response is read (as
// nginx does), so a backend that streams its response while still reading the
// request (full duplex) is not supported; if a backend answers early and
// stops reading, the write fails and Forward still tries to read and forward
// that early response. Protocol upgrades (WebSocket) are not implemented yet:
// they will be a separate method that writes the request with its Upgrade
// header, reads the 101 with the same header reader, hijacks the
// ResponseWriter and splices the two connections (conn keeps the buffered
// reader so no bytes read past the header are lost).
package upstream
