package http2_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	srv "github.com/fleetgate/fleetgate/dataplane/http2"
)

// h2specTimeout bounds one h2spec run: its whole suite takes seconds against a conforming
// server; one that leaves each case to time out (2 s each, 145 cases) fails here instead.
const h2specTimeout = 3 * time.Minute

// TestH2Spec runs h2spec (github.com/summerwind/h2spec), the HTTP/2 conformance suite, against a
// Server on 127.0.0.1, over TLS (-t -k) and over h2c, with a handler that reads the request body
// and answers 200 with a small body. It asserts that h2spec ran its suite (its JUnit report has
// 100+ cases) and that no case failed; the failed cases are listed with what h2spec expected.
// Without h2spec the test is skipped, unless FLEETGATE_REQUIRE_H2SPEC is set (as in CI).
func TestH2Spec(t *testing.T) {
	t.Parallel()
	bin := findH2spec(t)
	for _, useTLS := range []bool{true, false} {
		t.Run(modeName(useTLS), func(t *testing.T) {
			t.Parallel()
			ts := serve(t, &srv.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				io.WriteString(w, "hello from fleetgate\n")
			})}, useTLS)
			host, port, err := net.SplitHostPort(ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(t.TempDir(), "h2spec.xml")
			args := []string{"-h", host, "-p", port, "-o", "2", "-j", report}
			if useTLS {
				args = append(args, "-t", "-k")
			}
			ctx, cancel := context.WithTimeout(context.Background(), h2specTimeout)
			defer cancel()
			out, runErr := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("h2spec did not finish in %v:\n%s", h2specTimeout, tail(out))
			}
			cases, err := readJUnit(report)
			if err != nil {
				t.Fatalf("h2spec (%v) left no readable report: %v\n%s", runErr, err, tail(out))
			}
			var failed []string
			skipped := 0
			for _, c := range cases {
				switch {
				case c.Failure != nil || c.Error != nil:
					detail := ""
					if c.Failure != nil {
						detail = c.Failure.Content
					} else {
						detail = c.Error.Content
					}
					failed = append(failed, fmt.Sprintf("%s: %s\n    %s", c.Package, c.ClassName,
						strings.ReplaceAll(strings.TrimSpace(detail), "\n", "\n    ")))
				case c.Skipped != nil:
					skipped++
				}
			}
			t.Logf("h2spec %s: %d cases, %d failed, %d skipped", modeName(useTLS), len(cases), len(failed), skipped)
			if len(cases) < 100 {
				t.Errorf("h2spec ran %d cases, want its whole suite (145 cases in h2spec 2.2.1)", len(cases))
			}
			if len(failed) > 0 {
				t.Errorf("h2spec: %d of %d cases failed:\n%s", len(failed), len(cases), strings.Join(failed, "\n"))
			} else if runErr != nil {
				t.Errorf("h2spec: %v with no failed case in its report:\n%s", runErr, tail(out))
			}
		})
	}
}

// findH2spec finds the h2spec binary on PATH, in $(go env GOPATH)/bin, or in ~/go/bin.
func findH2spec(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "h2spec")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	const install = "go install github.com/summerwind/h2spec/cmd/h2spec@latest"
	if os.Getenv("FLEETGATE_REQUIRE_H2SPEC") != "" {
		t.Fatalf("h2spec is not installed (looked on PATH and in %v), and FLEETGATE_REQUIRE_H2SPEC is set: %s", dirs, install)
	}
	t.Skipf("h2spec is not installed (looked on PATH and in %v): %s", dirs, install)
	return ""
}

// junitCase is a <testcase> of h2spec's JUnit report. h2spec reports a failed case as <error>
// or <failure> (which depends on the kind of its error value), so both count.
type junitCase struct {
	Package   string        `xml:"package,attr"`
	ClassName string        `xml:"classname,attr"`
	Failure   *junitContent `xml:"failure"`
	Error     *junitContent `xml:"error"`
	Skipped   *junitContent `xml:"skipped"`
}

type junitContent struct {
	Content string `xml:",innerxml"`
}

func readJUnit(path string) ([]junitCase, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var report struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &report); err != nil {
		return nil, err
	}
	var cases []junitCase
	for _, s := range report.Suites {
		cases = append(cases, s.Cases...)
	}
	return cases, nil
}

// tail is the end of h2spec's output, where it lists the failed cases and sums up.
func tail(out []byte) string {
	const n = 8 << 10
	if len(out) > n {
		return "…" + string(out[len(out)-n:])
	}
	return string(out)
}
