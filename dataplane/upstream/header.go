package upstream

import (
	"net/http"
	"strings"
)

// isHopByHop reports whether the canonical header key names a hop-by-hop
// header (RFC 9110 section 7.6.1, plus the de-facto Keep-Alive and
// Proxy-Connection), which a proxy must not forward.
func isHopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
		"Upgrade", "Te", "Trailer", "Proxy-Authenticate", "Proxy-Authorization":
		return true
	}
	return false
}

// tokenListed reports whether name appears (case-insensitively) as one of the
// comma-separated tokens in values, e.g. name "X-Foo" in "Connection: close, x-foo".
func tokenListed(values []string, name string) bool {
	for _, v := range values {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.Trim(tok, " \t"), name) {
				return true
			}
		}
	}
	return false
}

// copyResponseHeader copies the backend response header src into dst, leaving
// out hop-by-hop headers and any header named in src's Connection header.
// src is owned by the caller (readResponseHead made it for this response), so its value
// slices are shared rather than copied. If dst already has a key, the
// backend's values are appended (as httputil.ReverseProxy does).
func copyResponseHeader(dst, src http.Header) {
	connTokens := src["Connection"]
	for k, vv := range src {
		if isHopByHop(k) {
			continue
		}
		if len(connTokens) > 0 && tokenListed(connTokens, k) {
			continue
		}
		if old, ok := dst[k]; ok {
			dst[k] = append(old, vv...)
		} else {
			dst[k] = vv
		}
	}
}

// skipRequestHeader reports whether a key of out.Header is not written as is:
// the framing and routing headers are generated from the Request fields
// instead, and Connection is controlled by out.Close.
func skipRequestHeader(k string) bool {
	switch len(k) {
	case 4:
		return strings.EqualFold(k, "Host")
	case 6:
		return strings.EqualFold(k, "Expect") // written separately when it applies
	case 7:
		return strings.EqualFold(k, "Trailer")
	case 10:
		return strings.EqualFold(k, "Connection")
	case 14:
		return strings.EqualFold(k, "Content-Length")
	case 17:
		return strings.EqualFold(k, "Transfer-Encoding")
	}
	return false
}

// tokenTable marks the bytes allowed in an RFC 9110 token (header field
// names, methods).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validToken reports whether s is a non-empty RFC 9110 token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v may be sent as a header field value:
// no control characters other than horizontal tab (in particular no CR, LF
// or NUL, which would allow header injection / request splitting).
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// validTarget reports whether s may appear in the request line (request
// target or Host): no whitespace and no control characters.
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b <= ' ' || b == 0x7f {
			return false
		}
	}
	return true
}
