package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// FuzzDecodeValidate feeds arbitrary documents through Decode, Normalize and Validate, which must
// never panic. A document that validates must still validate after a round trip through EncodeJSON
// (and EncodeYAML). Run as a plain test it checks the seeds: the testdata documents and a few more.
func FuzzDecodeValidate(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yaml", "testdata/*.json"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, s := range []string{
		"",
		"{}",
		"null",
		"name: gw",
		"name: gw\nhttpListeners: [{name: a, port: 80, hostNames: [\"\"]}, {name: b, port: 80}]",
		"probes: [{name: p, pickHostNameFromBackendHttpSettings: true, match: {statusCodes: [\"200-\"]}}]",
		"requestRoutingRules: [{name: r, ruleType: PATHBASEDROUTING, priority: 1, httpListener: x}]",
		`{"name":"gw","backendAddressPools":[{"name":"p","backendAddresses":[{"ipAddress":"::1","fqdn":"x"}]}]}`,
		"[1, 2]",
		"name: &a [*a]",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		gw, err := config.Decode(data)
		if err != nil {
			if gw != nil {
				t.Fatalf("Decode returned a gateway alongside error %v", err)
			}
			return
		}
		config.Normalize(gw)
		err = config.Validate(gw)
		if err != nil {
			var ve *config.ValidationError
			if !errors.As(err, &ve) || len(ve.Errors) == 0 {
				t.Fatalf("Validate returned %T %v, want a non-empty *ValidationError", err, err)
			}
			for _, fe := range ve.Errors {
				if fe.Field == "" || fe.Description == "" {
					t.Fatalf("FieldError with an empty part: %+v", fe)
				}
			}
			return
		}
		for _, enc := range []struct {
			name string
			fn   func(*fgv1.Gateway) ([]byte, error)
		}{{"EncodeJSON", config.EncodeJSON}, {"EncodeYAML", config.EncodeYAML}} {
			out, err := enc.fn(gw)
			if err != nil {
				t.Fatalf("%s of a valid gateway: %v", enc.name, err)
			}
			again, err := config.Decode(out)
			if err != nil {
				t.Fatalf("Decode(%s(gw)): %v\n%s", enc.name, err, out)
			}
			config.Normalize(again)
			if err := config.Validate(again); err != nil {
				t.Fatalf("valid gateway is invalid after %s and Decode: %v\n%s", enc.name, err, out)
			}
		}
	})
}
