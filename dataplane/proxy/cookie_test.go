package proxy

import (
	"net/http"
	"strings"
	"testing"
)

// cookieValue finds what http.Request.Cookie finds, in the cases where the two could part ways.
func TestCookieValueAsNetHTTP(t *testing.T) {
	const name = "ApplicationGatewayAffinity"
	cases := [][]string{
		nil,
		{"ApplicationGatewayAffinity=abc"},
		{"a=1; ApplicationGatewayAffinity=abc; b=2"},
		{"a=1", "ApplicationGatewayAffinity=second-line"},
		{`ApplicationGatewayAffinity="quoted"`},
		{`ApplicationGatewayAffinity="`},
		{`ApplicationGatewayAffinity=bad\value; ApplicationGatewayAffinity=good`},
		{"ApplicationGatewayAffinity=with space; x=y"},
		{"  ApplicationGatewayAffinity =\tpadded ;"},
		{"ApplicationGatewayAffinity\t= v"},
		{"ApplicationGatewayAffinity\v=v"},
		{"applicationgatewayaffinity=lower"},
		{"ApplicationGatewayAffinity"},
		{"ApplicationGatewayAffinity="},
		{";;ApplicationGatewayAffinity=after-empties"},
		{"ApplicationGatewayAffinity=caf\u00e9"},
		{"ApplicationGatewayAffinity=x\x7f"},
		{strings.Repeat("a=1;", 3000) + "ApplicationGatewayAffinity=past-the-limit"},
		{strings.Repeat("a=1;", 2990) + "ApplicationGatewayAffinity=within-the-limit"},
	}
	for _, lines := range cases {
		r := &http.Request{Header: http.Header{}}
		if lines != nil {
			r.Header["Cookie"] = lines
		}
		want, err := r.Cookie(name)
		got, ok := cookieValue(r.Header, name)
		if ok != (err == nil) || ok && got != want.Value {
			t.Errorf("Cookie %q: cookieValue = %q, %v; http.Request.Cookie = %v, %v", lines, got, ok, want, err)
		}
	}
}

func TestCookieValueAllocatesNothing(t *testing.T) {
	h := http.Header{"Cookie": {"session=x; ApplicationGatewayAffinity=vgMD7_xrAaqGELhMFymJGWsn; theme=dark"}}
	if n := testing.AllocsPerRun(100, func() { cookieValue(h, "ApplicationGatewayAffinity") }); n != 0 {
		t.Errorf("%v allocations; want 0", n)
	}
}
