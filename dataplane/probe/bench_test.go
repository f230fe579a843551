package probe

import (
	"context"
	"testing"
)

// BenchmarkRunHTTP is one healthy HTTP probe per iteration (fresh
// connection, GET, status and a body match) against a local server.
func BenchmarkRunHTTP(b *testing.B) {
	srv := startHTTP(b, okHandler("status: healthy"))
	s := specFor(b, srv)
	s.Match.Body = "healthy"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := Run(ctx, s); !r.Healthy {
			b.Fatalf("%s: %s", r.Reason, r.Message)
		}
	}
}

// BenchmarkRunHTTPS adds a TLS handshake and the chain, date and name checks.
func BenchmarkRunHTTPS(b *testing.B) {
	p := getPKI(b)
	srv := startTLS(b, okHandler("status: healthy"), p.leaf, p.inter)
	s := specFor(b, srv)
	s.RootCAs, s.CustomRoots, s.Match.Body = pool(p.root), true, "healthy"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if r := Run(ctx, s); !r.Healthy {
			b.Fatalf("%s: %s", r.Reason, r.Message)
		}
	}
}
