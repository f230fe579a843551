package config_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

func TestValidateLimits(t *testing.T) {
	i32, i64 := proto.Int32, proto.Int64
	tests := []struct {
		name   string
		limits *fgv1.Limits
		want   []fe // nil: valid
	}{
		{"unset ok", nil, nil},
		{"empty ok", &fgv1.Limits{}, nil},
		{"every bound ok (low)", &fgv1.Limits{MaxRequestHeaderBytes: i32(1024), ReadHeaderTimeoutSeconds: i32(1),
			ClientIdleTimeoutSeconds: i32(1), MaxConnectionsPerListener: i32(0), MaxRequestBodyBytes: i64(0)}, nil},
		{"every bound ok (high)", &fgv1.Limits{MaxRequestHeaderBytes: i32(1 << 20), ReadHeaderTimeoutSeconds: i32(300),
			ClientIdleTimeoutSeconds: i32(3600), MaxConnectionsPerListener: i32(1_000_000), MaxRequestBodyBytes: i64(10 << 30)}, nil},
		{"header bytes low", &fgv1.Limits{MaxRequestHeaderBytes: i32(1023)},
			[]fe{{"limits.maxRequestHeaderBytes", "1023 is out of range 1024-1048576"}}},
		{"header bytes high", &fgv1.Limits{MaxRequestHeaderBytes: i32(1<<20 + 1)},
			[]fe{{"limits.maxRequestHeaderBytes", "1048577 is out of range 1024-1048576"}}},
		{"header bytes explicit zero", &fgv1.Limits{MaxRequestHeaderBytes: i32(0)},
			[]fe{{"limits.maxRequestHeaderBytes", "0 is out of range 1024-1048576"}}},
		{"read header timeout zero", &fgv1.Limits{ReadHeaderTimeoutSeconds: i32(0)},
			[]fe{{"limits.readHeaderTimeoutSeconds", "0 is out of range 1-300"}}},
		{"read header timeout high", &fgv1.Limits{ReadHeaderTimeoutSeconds: i32(301)},
			[]fe{{"limits.readHeaderTimeoutSeconds", "301 is out of range 1-300"}}},
		{"idle timeout negative", &fgv1.Limits{ClientIdleTimeoutSeconds: i32(-1)},
			[]fe{{"limits.clientIdleTimeoutSeconds", "-1 is out of range 1-3600"}}},
		{"idle timeout high", &fgv1.Limits{ClientIdleTimeoutSeconds: i32(3601)},
			[]fe{{"limits.clientIdleTimeoutSeconds", "3601 is out of range 1-3600"}}},
		{"connections negative", &fgv1.Limits{MaxConnectionsPerListener: i32(-1)},
			[]fe{{"limits.maxConnectionsPerListener", "-1 is out of range 0-1000000"}}},
		{"connections high", &fgv1.Limits{MaxConnectionsPerListener: i32(1_000_001)},
			[]fe{{"limits.maxConnectionsPerListener", "1000001 is out of range 0-1000000"}}},
		{"body negative", &fgv1.Limits{MaxRequestBodyBytes: i64(-1)},
			[]fe{{"limits.maxRequestBodyBytes", "-1 is out of range 0-10737418240"}}},
		{"body high", &fgv1.Limits{MaxRequestBodyBytes: i64(10<<30 + 1)},
			[]fe{{"limits.maxRequestBodyBytes", "10737418241 is out of range 0-10737418240"}}},
		{"all wrong at once", &fgv1.Limits{MaxRequestHeaderBytes: i32(1), ReadHeaderTimeoutSeconds: i32(1000),
			ClientIdleTimeoutSeconds: i32(0), MaxConnectionsPerListener: i32(-5), MaxRequestBodyBytes: i64(-5)},
			[]fe{
				{"limits.maxRequestHeaderBytes", "1 is out of range"},
				{"limits.readHeaderTimeoutSeconds", "1000 is out of range"},
				{"limits.clientIdleTimeoutSeconds", "0 is out of range"},
				{"limits.maxConnectionsPerListener", "-5 is out of range"},
				{"limits.maxRequestBodyBytes", "-5 is out of range"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := golden(t)
			gw.Limits = tt.limits
			config.Normalize(gw)
			checkErrors(t, fieldErrors(t, config.Validate(gw)), tt.want)
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	gw, err := config.Decode([]byte(`
name: gw
limits: {maxRequestHeaderBytes: 8192, readHeaderTimeoutSeconds: 5, clientIdleTimeoutSeconds: 60,
         maxConnectionsPerListener: 1000, maxRequestBodyBytes: 10737418240}
`))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatal(err)
	}
	want := config.Limits{MaxRequestHeaderBytes: 8192, ReadHeaderTimeout: 5 * time.Second,
		ClientIdleTimeout: time.Minute, MaxConnections: 1000, MaxRequestBody: 10 << 30}
	if got := config.LimitsOf(gw); got != want {
		t.Errorf("LimitsOf = %+v, want %+v", got, want)
	}
	// Unknown fields in limits are errors, like everywhere else.
	if _, err := config.Decode([]byte("name: gw\nlimits: {maxHeaderBytes: 1}")); err == nil {
		t.Error("Decode accepted an unknown field in limits")
	}
}

// LimitsOf fills in defaults whether or not the gateway was normalized: a worker may be handed a
// snapshot from a control plane that predates limits.
func TestLimitsOfDefaults(t *testing.T) {
	want := config.Limits{MaxRequestHeaderBytes: 64 << 10, ReadHeaderTimeout: 10 * time.Second,
		ClientIdleTimeout: 120 * time.Second, MaxConnections: 0, MaxRequestBody: 0}
	for name, gw := range map[string]*fgv1.Gateway{
		"nil gateway":  nil,
		"no limits":    {Name: "gw"},
		"empty limits": {Name: "gw", Limits: &fgv1.Limits{}},
		"normalized":   func() *fgv1.Gateway { g := &fgv1.Gateway{Name: "gw"}; config.Normalize(g); return g }(),
	} {
		if got := config.LimitsOf(gw); got != want {
			t.Errorf("%s: LimitsOf = %+v, want %+v", name, got, want)
		}
	}
	// A set zero is kept, not replaced by the default.
	gw := &fgv1.Gateway{Limits: &fgv1.Limits{MaxRequestBodyBytes: proto.Int64(5), MaxConnectionsPerListener: proto.Int32(7)}}
	if got := config.LimitsOf(gw); got.MaxRequestBody != 5 || got.MaxConnections != 7 {
		t.Errorf("LimitsOf = %+v, want body 5, connections 7", got)
	}
}
