package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fleetgate/fleetgate/dataplane/admin"
	"github.com/fleetgate/fleetgate/dataplane/metrics"
)

func TestEndpoints(t *testing.T) {
	var version atomic.Int64
	m := metrics.New()
	srv := httptest.NewServer(admin.Handler(version.Load, m.Registry))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Fatalf("/readyz before any config = %d, want 503", code)
	}
	version.Store(7)
	m.ConfigVersion(7)
	m.Request("web", "r1", "pool1", "10.0.0.1:80", 204, 0)
	m.Probe("s1", "10.0.0.1:80", "tcp-connect-error", 0)
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "7") {
		t.Fatalf("/readyz after a config = %d %q", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		"fleetgate_config_version 7",
		`fleetgate_requests_total{code="2xx",listener="web",pool="pool1",rule="r1",server="10.0.0.1:80"} 1`,
		`fleetgate_probes_total{result="tcp-connect-error",server="10.0.0.1:80",settings="s1"} 1`,
		"go_goroutines",
		"go_gc_heap_live_bytes", // with the GC pacer, RSS says little about leaks; the live heap does
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
