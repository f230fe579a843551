package httphead

import (
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestAnnounced(t *testing.T) {
	got := slices.Collect(Announced([]string{"x-one, ,X-TWO", "", "  x-three  "}))
	if want := []string{"X-One", "X-Two", "X-Three"}; !slices.Equal(got, want) {
		t.Fatalf("Announced: %q, want %q", got, want)
	}
	if !Forbidden("Content-Length") || Forbidden("X-One") {
		t.Fatal("Forbidden: Content-Length must be, X-One must not")
	}
}

func TestTrailers(t *testing.T) {
	h := http.Header{
		"Trailer":                      {"X-Set, X-Unset"},
		"X-Set":                        {"a"},
		"X-Other":                      {"header, not trailer"},
		http.TrailerPrefix + "X-Later": {"b"},
	}
	if !HasTrailers(h) || HasTrailers(http.Header{"X-Other": {"x"}}) {
		t.Fatal("HasTrailers: want true for h, false without Trailer or prefixed fields")
	}
	if !HasTrailers(http.Header{http.TrailerPrefix + "X": {"x"}}) {
		t.Fatal("HasTrailers: a prefixed field alone is a trailer")
	}
	got := maps.Collect(Trailers(h))
	want := map[string][]string{"X-Set": {"a"}, "X-Later": {"b"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("Trailers: %v, want %v", got, want)
	}
}

func TestDate(t *testing.T) {
	s := DateString()
	d, err := time.Parse(http.TimeFormat, s)
	if err != nil {
		t.Fatalf("DateString %q: %v", s, err)
	}
	if diff := time.Since(d); diff < -time.Second || diff > 2*time.Second {
		t.Fatalf("DateString %q is %v from now", s, diff)
	}
	if b := Date(); string(b) != s && string(b) != DateString() {
		t.Fatalf("Date %q and DateString %q differ", b, s)
	}
}
