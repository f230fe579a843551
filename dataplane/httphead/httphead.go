// Package httphead is what the data plane's HTTP/1 and HTTP/2 servers (dataplane/http1,
// dataplane/http2) both work out from a request's head and a response's header fields: the
// request target's common form, the trailers a Trailer field announces, the trailer fields a
// handler set in its response header map, and the Date value of the second.
package httphead

import (
	"iter"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Announced yields the field names the Trailer field values vv announce, in canonical form;
// empty list elements are skipped.
func Announced(vv []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range vv {
			for k := range strings.SplitSeq(v, ",") {
				if k = strings.TrimSpace(k); k == "" {
					continue
				}
				if !yield(http.CanonicalHeaderKey(k)) {
					return
				}
			}
		}
	}
}

// Forbidden reports whether a field may not be announced as a trailer: it frames the message.
func Forbidden(k string) bool {
	switch k {
	case "Transfer-Encoding", "Trailer", "Content-Length":
		return true
	}
	return false
}

// HasTrailers reports whether a handler announced trailers in its response header map h, or set
// one with http.TrailerPrefix.
func HasTrailers(h http.Header) bool {
	if len(h["Trailer"]) > 0 {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// Trailers yields the trailer fields a handler set in its response header map h, as net/http's
// servers take them: the announced fields that have values, then those set with
// http.TrailerPrefix (named without it).
func Trailers(h http.Header) iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for k := range Announced(h["Trailer"]) {
			if vv, ok := h[k]; ok && !yield(k, vv) {
				return
			}
		}
		for k, vv := range h {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && !yield(name, vv) {
				return
			}
		}
	}
}

// dates holds the Date field value of the current second.
var dates atomic.Pointer[dateValue]

type dateValue struct {
	sec int64
	b   []byte
	s   string
}

func current() *dateValue {
	now := time.Now()
	if d := dates.Load(); d != nil && d.sec == now.Unix() {
		return d
	}
	b := now.UTC().AppendFormat(nil, http.TimeFormat)
	d := &dateValue{sec: now.Unix(), b: b, s: string(b)}
	dates.Store(d)
	return d
}

// Date is the Date field value of the current second (formatted once a second). The caller must
// not modify it.
func Date() []byte { return current().b }

// DateString is Date as a string.
func DateString() string { return current().s }

// PlainTarget gives the URL of an origin-form request target whose path has only characters that
// a URL path keeps as they are, as url.ParseRequestURI would give it (the same Path, RawQuery and
// ForceQuery, no RawPath), without parsing or allocating; ok is false for any other target (parse
// that one with url.ParseRequestURI).
func PlainTarget(target string) (u url.URL, ok bool) {
	if len(target) < 1 || target[0] != '/' || len(target) > 1 && target[1] == '/' {
		return u, false
	}
	i := 0
	for ; i < len(target) && target[i] != '?'; i++ {
		if !pathByte[target[i]] {
			return u, false
		}
	}
	if i == len(target) {
		return url.URL{Path: target}, true
	}
	for j := i + 1; j < len(target); j++ {
		if c := target[j]; c <= ' ' || c >= 0x7f {
			return u, false
		}
	}
	// A "?" with nothing after it is kept, as url.ParseRequestURI keeps it (ForceQuery).
	return url.URL{Path: target[:i], RawQuery: target[i+1:], ForceQuery: i == len(target)-1}, true
}

// pathByte marks the bytes that url.URL keeps unescaped in a path.
var pathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()
