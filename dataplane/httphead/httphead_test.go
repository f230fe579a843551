package httphead

import (
	"maps"
	"net/http"
	"net/url"
	"reflect"
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

// PlainTarget gives what url.ParseRequestURI gives for every target it takes, and takes the
// common ones.
func TestPlainTarget(t *testing.T) {
	for _, target := range []string{
		"/", "/a/b", "/a?b=c&d", "/a?", "/a??", "/a?b?c", "/~user/$&+,;=:@-._", "/a%20b", "/a b", "/a!b",
		"//a", "/a#b", "/a?b#c", "/a?\x7f", "/é", "/a?é", "/a/../b", "*", "a", "",
	} {
		u, ok := PlainTarget(target)
		if !ok {
			continue
		}
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Errorf("%q is plain, url.ParseRequestURI: %v", target, err)
			continue
		}
		if !reflect.DeepEqual(u, *want) {
			t.Errorf("%q: %+v, url.ParseRequestURI %+v", target, u, *want)
		}
	}
	for _, target := range []string{"/", "/a?b", "/a?", "/index.html?q=1&r=2"} {
		if _, ok := PlainTarget(target); !ok {
			t.Errorf("%q is not plain", target)
		}
	}
}

func FuzzPlainTarget(f *testing.F) {
	for _, s := range []string{"/", "/a?b", "/a?", "/a%20b", "//x", "/a?b#c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, ok := PlainTarget(target)
		if !ok {
			return
		}
		want, err := url.ParseRequestURI(target)
		if err != nil || !reflect.DeepEqual(u, *want) {
			t.Fatalf("%q: %+v; url.ParseRequestURI %+v, %v", target, u, want, err)
		}
	})
}
