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
//   - the response header is parsed by readResponseHead (net/http's framing
//     rules, a few allocations), the body copied with a pooled 32 KiB buffer;
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
// that early response.
//
// # Protocol upgrades
//
// Pool.Upgrade handles requests with an Upgrade header (WebSocket, or any
// other protocol): it sends the request with "Connection: Upgrade" on a newly
// dialed connection, reads the 101 with the same header reader, hijacks the
// client connection and copies bytes both ways (with half-close) until both
// sides are done or the context is canceled. Bytes already read past either
// header (the backend's first frames behind its 101, the client's behind its
// request) are forwarded first. A refused upgrade is forwarded like any
// response. Only HTTP/1.1 client connections can be upgraded.
//
// # Dedicated backend connections
//
// Some backends tie state to the TCP connection (NTLM or Negotiate
// authentication is the usual case), so each client connection needs backend
// connections of its own that no other client connection uses. Nothing beyond
// a separate Pool is needed for that: the caller creates one Pool per (client
// connection, backend address), for example lazily in a per-connection value
// installed by the server's ConnContext (net/http's or dataplane/http1's), and
// closes those Pools when the client connection closes (ConnState reporting
// StateClosed). A Pool
// never shares a connection with another Pool, and an HTTP/1.1 client
// connection has at most one request in flight, so its Pool holds at most one
// backend connection and reuses it for every request. MaxIdleConns of 1
// states that, and bounds what an HTTP/2 client connection keeps idle after a
// burst of concurrent streams. Close closes the idle connection at once and a
// connection in use as soon as its exchange ends; a Pool closed while a
// request is in flight does not dial again and does not keep the connection.
// A closed Pool refuses new requests (ErrPoolClosed), so it must not be
// closed before the client connection's last request is served. A hijacked
// (upgraded) client connection never reaches StateClosed; its tunnel uses a
// connection outside the Pool, so the Pool can be closed when ConnState
// reports StateHijacked or when Upgrade returns.
package upstream
