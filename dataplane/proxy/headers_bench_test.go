package proxy

import (
	"net/http"
	"testing"
)

// BenchmarkPrepareOutbound measures the per-request header rewrite on a typical browser request.
func BenchmarkPrepareOutbound(b *testing.B) {
	base := http.Header{
		"Accept":          {"text/html,application/xhtml+xml"},
		"Accept-Encoding": {"gzip, deflate, br"},
		"User-Agent":      {"Mozilla/5.0"},
		"Cookie":          {"a=1; b=2"},
		"Connection":      {"keep-alive"},
	}
	r := &http.Request{Method: "GET", Host: "shop.example.com", RemoteAddr: "203.0.113.7:51234"}
	b.ReportAllocs()
	for b.Loop() {
		h := make(http.Header, len(base)+3)
		for k, v := range base {
			h[k] = v
		}
		r.Header = h
		prepareOutbound(r, false)
	}
}
