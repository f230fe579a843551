package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/config"
	"github.com/fleetgate/fleetgate/controlplane/cptest"
	"github.com/fleetgate/fleetgate/dataplane/health"
	"github.com/fleetgate/fleetgate/dataplane/proxy"
)

// FuzzAffinityCookie sends requests with arbitrary Cookie headers through the request path to three
// real backend servers with cookie affinity on (the second one unhealthy). A request must never
// panic the proxy; it is answered by one of the healthy servers; if it carries (under the affinity
// cookie's name, else the CORS one) the cookie of a healthy server, that server answers and no
// cookie is set, and otherwise both cookies are issued anew, naming the server that answered.
func FuzzAffinityCookie(f *testing.F) {
	for _, s := range []string{
		"",
		"ApplicationGatewayAffinity=forged",
		"a=1; ApplicationGatewayAffinity=; b=2",
		"ApplicationGatewayAffinityCORS=x; ApplicationGatewayAffinity=y",
		`ApplicationGatewayAffinity="quoted"`,
		"ApplicationGatewayAffinity=%00; ;;=;ApplicationGatewayAffinity",
		"SERVER0",
		"ApplicationGatewayAffinity=SERVER1",
		"ApplicationGatewayAffinityCORS=SERVER2",
		"ApplicationGatewayAffinity=bad; ApplicationGatewayAffinityCORS=SERVER0",
	} {
		f.Add(s)
	}
	env := newAffinityEnv(f)
	f.Fuzz(func(t *testing.T, cookie string) {
		// A real client cannot send control characters in a header (net/http's server refuses
		// them with 400); SERVERn stands for server n's real cookie value.
		for i := range len(cookie) {
			if c := cookie[i]; (c < ' ' && c != '\t') || c == 0x7f {
				return
			}
		}
		for i, h := range env.hashes {
			cookie = strings.ReplaceAll(cookie, fmt.Sprint("SERVER", i), h)
		}
		req := httptest.NewRequest("GET", "http://gw.test/", nil)
		req.Header["Cookie"] = []string{cookie}
		rec := httptest.NewRecorder()
		env.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("Cookie %q: %d %q", cookie, rec.Code, rec.Body.String())
		}
		served := rec.Body.String()
		if served != "server0" && served != "server2" {
			t.Fatalf("Cookie %q: answered by %q, want a healthy server", cookie, served)
		}
		want := "" // the server the cookie names, if it is usable
		for _, name := range []string{"ApplicationGatewayAffinity", "ApplicationGatewayAffinityCORS"} {
			if c, err := req.Cookie(name); err == nil && want == "" {
				for i, h := range env.hashes {
					if c.Value == h && i != 1 {
						want = fmt.Sprint("server", i)
					}
				}
			}
		}
		set := rec.Header().Values("Set-Cookie")
		if want != "" {
			if served != want || len(set) != 0 {
				t.Fatalf("Cookie %q names %s: answered by %s, Set-Cookie %q", cookie, want, served, set)
			}
			return
		}
		h := env.hashes[served[len(served)-1]-'0']
		if len(set) != 2 || !strings.HasPrefix(set[0], "ApplicationGatewayAffinity="+h+";") ||
			!strings.HasPrefix(set[1], "ApplicationGatewayAffinityCORS="+h+";") {
			t.Fatalf("Cookie %q: answered by %s with Set-Cookie %q, want fresh cookies naming it", cookie, served, set)
		}
	})
}

type affinityEnv struct {
	handler http.Handler
	hashes  []string // cookie value of each server
}

func newAffinityEnv(t testing.TB) *affinityEnv {
	var addrs []string
	port := ""
	for i, ip := range []string{"127.0.0.71", "127.0.0.72", "127.0.0.73"} {
		name := fmt.Sprint("server", i)
		l, err := net.Listen("tcp", ip+":"+port)
		if err != nil {
			t.Skipf("listen %s: %v", ip, err)
		}
		_, port, _ = net.SplitHostPort(l.Addr().String())
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go s.Serve(l)
		t.Cleanup(func() { s.Close() })
		addrs = append(addrs, l.Addr().String())
	}
	doc := strings.Replace(gateway(t, 20, addrs...), "requestTimeout: 20", "requestTimeout: 20, cookieBasedAffinity: Enabled", 1)
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	unhealthy := health.NewTracker(1)
	unhealthy.Observe(health.Outcome{Reason: "tcp-connect-error"})
	lookup := func(k health.Key) *health.Tracker {
		if k.Address == addrs[1] {
			return unhealthy
		}
		return nil
	}
	p := proxy.New(cptest.Logger(t))
	t.Cleanup(p.Close)
	if _, err := p.Apply(1, gw, lookup, []byte("0123456789abcdef0123456789abcdef"), nil); err != nil {
		t.Fatal(err)
	}
	env := &affinityEnv{handler: p.Handler(80), hashes: make([]string, 3)}
	// Learn each server's cookie: fresh clients go round-robin over the healthy servers; the
	// unhealthy one's cookie is read off once it is healthy again.
	learn := func() {
		for range 4 {
			rec := httptest.NewRecorder()
			env.handler.ServeHTTP(rec, httptest.NewRequest("GET", "http://gw.test/", nil))
			body := rec.Body.String()
			if set := rec.Header().Values("Set-Cookie"); len(set) == 2 && strings.HasPrefix(body, "server") {
				v := strings.TrimPrefix(strings.SplitN(set[0], ";", 2)[0], "ApplicationGatewayAffinity=")
				env.hashes[body[len(body)-1]-'0'] = v
			}
		}
	}
	unhealthy.Observe(health.Outcome{OK: true})
	learn()
	unhealthy.Observe(health.Outcome{Reason: "tcp-connect-error"})
	for i, h := range env.hashes {
		if h == "" {
			t.Fatalf("no cookie learnt for server %d", i)
		}
	}
	return env
}
