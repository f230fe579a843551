package proxy

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"
)

// hopHeaders are meaningful only for one connection and are not forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

var (
	teTrailers = []string{"trailers"}
	protoHTTP  = []string{"http"}
	protoHTTPS = []string{"https"}
)

// prepareOutbound rewrites the incoming request's headers in place for the backend hop: hop-by-hop
// headers removed (and any the Connection header names), X-Forwarded-For/-Proto/-Host added.
// The request belongs to this handler, so no copy is made.
func prepareOutbound(r *http.Request, tls bool) {
	h := r.Header
	// "TE: trailers" is kept: gRPC and others need it, and it holds end to end.
	keepTE := tokenIn(h["Te"], "trailers")
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if keepTE {
		h["Te"] = teTrailers
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else {
			h["X-Forwarded-For"] = []string{ip}
		}
	}
	if _, ok := h["X-Forwarded-Proto"]; !ok {
		if tls {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
	}
	if _, ok := h["X-Forwarded-Host"]; !ok && r.Host != "" {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	r.RequestURI = ""
	r.Close = false
}

func tokenIn(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// upgradeOf returns the protocol an HTTP/1.1 request asks to switch to ("" if none).
func upgradeOf(r *http.Request) string {
	if r.ProtoMajor != 1 || !tokenIn(r.Header["Connection"], "upgrade") {
		return ""
	}
	return r.Header.Get("Upgrade")
}
