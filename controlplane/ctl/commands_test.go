package ctl

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

var revisionRE = regexp.MustCompile(`^gateway/(\S+) (applied|unchanged|deleted) \(revision (\d+)\)\n$`)

// revisionOf parses "gateway/NAME VERB (revision N)" and checks name and verb.
func revisionOf(t *testing.T, r result, name, verb string) int64 {
	t.Helper()
	m := revisionRE.FindStringSubmatch(r.stdout)
	if m == nil || m[1] != name || m[2] != verb {
		t.Fatalf("want \"gateway/%s %s (revision N)\", got %s", name, verb, r)
	}
	rev, _ := strconv.ParseInt(m[3], 10, 64)
	if rev <= 0 {
		t.Fatalf("revision %d is not positive", rev)
	}
	return rev
}

// normalized decodes a document and fills in its defaults, as the control plane stores it.
func normalized(t *testing.T, doc string) *fgv1.Gateway {
	t.Helper()
	gw, err := config.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	return gw
}

// stored reads a gateway back with get -o yaml: its revision and configuration.
func stored(t *testing.T, name string) (int64, *fgv1.Gateway) {
	t.Helper()
	r := mustRun(t, "get", name, "-o", "yaml")
	first, _, _ := strings.Cut(r.stdout, "\n")
	rev, err := strconv.ParseInt(strings.TrimPrefix(first, "# revision: "), 10, 64)
	if !strings.HasPrefix(first, "# revision: ") || err != nil {
		t.Fatalf("first line of get -o yaml is %q, want \"# revision: N\"", first)
	}
	gw, err := config.Decode([]byte(r.stdout))
	if err != nil {
		t.Fatalf("get -o yaml output does not decode: %v\n%s", err, r.stdout)
	}
	return rev, gw
}

// assertNotFound checks that get reports the gateway missing.
func assertNotFound(t *testing.T, name string) {
	t.Helper()
	r := run(t, "get", name)
	if r.code != ExitError || !strings.Contains(r.stderr, "not found") || r.stdout != "" {
		t.Fatalf("get %s: want exit 1 and \"not found\", got %s", name, r)
	}
	if strings.Contains(r.stderr, "rpc error") {
		t.Errorf("raw rpc error shown: %s", r.stderr)
	}
}

func TestApplyGetRoundTrip(t *testing.T) {
	name := uniqueName(t, "roundtrip")
	doc := fmt.Sprintf(validDoc, name)
	file := writeDoc(t, doc)
	rev := revisionOf(t, mustRun(t, "apply", "-f", file), name, "applied")

	gotRev, got := stored(t, name)
	if gotRev != rev {
		t.Errorf("get says revision %d, apply said %d", gotRev, rev)
	}
	if want := normalized(t, doc); !proto.Equal(got, want) {
		t.Errorf("get -o yaml does not round-trip:\ngot  %v\nwant %v", got, want)
	}

	r := mustRun(t, "get", name, "-o", "json")
	if strings.Contains(r.stdout, "revision") {
		t.Errorf("get -o json printed the revision: %s", r.stdout)
	}
	fromJSON, err := config.Decode([]byte(r.stdout))
	if err != nil || !proto.Equal(fromJSON, got) {
		t.Errorf("get -o json = %v (err %v), want %v", fromJSON, err, got)
	}

	again := revisionOf(t, mustRun(t, "apply", "-f", file), name, "unchanged")
	if again != rev {
		t.Errorf("unchanged apply says revision %d, want %d", again, rev)
	}
}

func TestApplyFromStdinWithGatewayFlag(t *testing.T) {
	name := uniqueName(t, "fromstdin")
	other := uniqueName(t, "other")
	doc := fmt.Sprintf(validDoc, "")
	r := runWith(t, doc, nil, "--server", cpAddr, "--gateway", name, "apply", "-f", "-")
	if r.code != ExitOK {
		t.Fatalf("apply -f - with --gateway: %s", r)
	}
	revisionOf(t, r, name, "applied")
	if _, gw := stored(t, name); gw.GetName() != name || len(gw.GetHttpListeners()) != 2 {
		t.Errorf("stored %v", gw)
	}

	// A name in the document must agree with --gateway.
	r = runWith(t, fmt.Sprintf(validDoc, other), nil, "--server", cpAddr, "--gateway", name, "apply", "-f", "-")
	if r.code != ExitError || !strings.Contains(r.stderr, fmt.Sprintf("names gateway %q", other)) {
		t.Errorf("mismatched --gateway: %s", r)
	}
	assertNotFound(t, other)
}

func TestApplyInvalidReportsEveryFieldError(t *testing.T) {
	name := uniqueName(t, "invalid")
	r := run(t, "apply", "-f", writeDoc(t, fmt.Sprintf(invalidDoc, name)))
	if r.code != ExitError {
		t.Fatalf("want exit 1, got %s", r)
	}
	if r.stdout != "" {
		t.Errorf("stdout: %q", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if lines[0] != "error: invalid gateway (3 errors)" {
		t.Errorf("heading %q", lines[0])
	}
	if len(lines) != 1+len(invalidFields) {
		t.Fatalf("want a heading and %d violations, got:\n%s", len(invalidFields), r.stderr)
	}
	for _, f := range invalidFields {
		found := false
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "  "+f+": ") && len(l) > len("  "+f+": ") {
				found = true
			}
		}
		if !found {
			t.Errorf("no line \"  %s: ...\" in:\n%s", f, r.stderr)
		}
	}
	assertNotFound(t, name)
}

func TestApplyDecodeError(t *testing.T) {
	r := run(t, "apply", "-f", writeDoc(t, "name: x\nbogusField: 1\n"))
	if r.code != ExitError || !strings.Contains(r.stderr, "decode gateway") || !strings.Contains(r.stderr, "gateway.yaml") {
		t.Errorf("unknown field: %s", r)
	}
	r = run(t, "apply", "-f", "/nonexistent/gateway.yaml")
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "error: read /nonexistent/gateway.yaml") {
		t.Errorf("missing file: %s", r)
	}
}

func TestApplyDryRunStoresNothing(t *testing.T) {
	name := uniqueName(t, "dryrun")
	file := writeDoc(t, fmt.Sprintf(validDoc, name))
	r := mustRun(t, "apply", "-f", file, "--dry-run")
	if r.stdout != "gateway/"+name+" valid (dry run)\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	assertNotFound(t, name)

	// An invalid document fails a dry run just the same.
	r = run(t, "apply", "-f", writeDoc(t, fmt.Sprintf(invalidDoc, name)), "--dry-run")
	if r.code != ExitError || !strings.Contains(r.stderr, "invalid gateway (3 errors)") {
		t.Errorf("invalid dry run: %s", r)
	}

	// A dry run tells when the real apply would meet a revision conflict.
	r = run(t, "apply", "-f", file, "--dry-run", "--expected-revision", "5")
	if r.code != ExitError || !strings.Contains(r.stderr, "stored revision is 0, not 5") {
		t.Errorf("dry run with stale revision: %s", r)
	}
	assertNotFound(t, name)
}

func TestApplyStaleExpectedRevision(t *testing.T) {
	name := uniqueName(t, "conflict")
	v1 := fmt.Sprintf(validDoc, name)
	rev := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, v1)), name, "applied")

	v2 := strings.Replace(v1, "port: 9001", "port: 9002", 1)
	file2 := writeDoc(t, v2)
	r := run(t, "apply", "-f", file2, "--expected-revision", strconv.FormatInt(rev-1, 10))
	if r.code != ExitError || !strings.Contains(r.stderr, "revision conflict") ||
		!strings.Contains(r.stderr, fmt.Sprintf("stored revision is %d", rev)) || r.stdout != "" {
		t.Fatalf("stale --expected-revision: %s", r)
	}
	if gotRev, got := stored(t, name); gotRev != rev || !proto.Equal(got, normalized(t, v1)) {
		t.Errorf("after the conflict the store holds revision %d: %v", gotRev, got)
	}

	// "0: must not exist yet" conflicts with an existing gateway.
	if r := run(t, "apply", "-f", file2, "--expected-revision", "0"); r.code != ExitError || !strings.Contains(r.stderr, "revision conflict") {
		t.Errorf("--expected-revision 0 on an existing gateway: %s", r)
	}

	// The current revision applies.
	rev2 := revisionOf(t, mustRun(t, "apply", "-f", file2, "--expected-revision", strconv.FormatInt(rev, 10)), name, "applied")
	if gotRev, got := stored(t, name); rev2 <= rev || gotRev != rev2 || !proto.Equal(got, normalized(t, v2)) {
		t.Errorf("apply at the current revision: revision %d -> %d, stored %d: %v", rev, rev2, gotRev, got)
	}
}

func TestList(t *testing.T) {
	name := uniqueName(t, "listed")
	rev := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, fmt.Sprintf(validDoc, name))), name, "applied")
	r := mustRun(t, "list")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAME REVISION LISTENERS RULES POOLS DATAPLANES" {
		t.Errorf("header %q", lines[0])
	}
	want := fmt.Sprintf("%s %d 2 2 1 0", name, rev)
	found := false
	for _, l := range lines[1:] {
		if strings.Join(strings.Fields(l), " ") == want {
			found = true
		}
	}
	if !found {
		t.Errorf("no row %q in:\n%s", want, r.stdout)
	}

	r = mustRun(t, "list", "-o", "json")
	var resp fgv1.ListGatewaysResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, r.stdout)
	}
	found = false
	for _, g := range resp.GetGateways() {
		if g.GetName() == name && g.GetRevision() == rev && g.GetPools() == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("gateway %s (revision %d) missing from %v", name, rev, &resp)
	}
}

func TestDelete(t *testing.T) {
	name := uniqueName(t, "deleted")
	rev := revisionOf(t, mustRun(t, "apply", "-f", writeDoc(t, fmt.Sprintf(validDoc, name))), name, "applied")

	r := run(t, "delete", name, "--expected-revision", strconv.FormatInt(rev+100, 10))
	if r.code != ExitError || !strings.Contains(r.stderr, "revision conflict") {
		t.Fatalf("delete with a stale revision: %s", r)
	}
	if gotRev, _ := stored(t, name); gotRev != rev {
		t.Fatalf("after a refused delete the revision is %d, want %d", gotRev, rev)
	}

	delRev := revisionOf(t, mustRun(t, "--gateway", name, "delete", "--expected-revision", strconv.FormatInt(rev, 10)), name, "deleted")
	if delRev <= rev {
		t.Errorf("delete revision %d is not after %d", delRev, rev)
	}
	assertNotFound(t, name)

	if r := run(t, "delete", name); r.code != ExitError || !strings.Contains(r.stderr, "not found") {
		t.Errorf("deleting again: %s", r)
	}
}

func TestDataPlanesWithoutWorkers(t *testing.T) {
	name := uniqueName(t, "noworkers")
	r := mustRun(t, "dataplanes", name)
	if got := strings.Join(strings.Fields(r.stdout), " "); got != "ID GATEWAY ADDRESS APPLIED DESIRED STATUS CONTROLPLANE AGE STATE" {
		t.Errorf("want the header only, got %q", r.stdout)
	}
	if strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("want one line, got %q", r.stdout)
	}

	r = mustRun(t, "--gateway", name, "dataplanes", "-o", "json")
	var resp fgv1.ListDataPlanesResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil || len(resp.GetDataplanes()) != 0 {
		t.Errorf("dataplanes -o json = %q (err %v)", r.stdout, err)
	}
}

func TestBackendHealthUnknown(t *testing.T) {
	name := uniqueName(t, "health")
	mustRun(t, "apply", "-f", writeDoc(t, fmt.Sprintf(validDoc, name)))

	r := run(t, "backend-health", name)
	if r.code != ExitNotHealthy {
		t.Fatalf("servers Unknown: want exit 3, got %s", r)
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("colored output to a non-terminal: %q", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	want := []string{
		"POOL SETTINGS ADDRESS HEALTH REASON WORKERS LAST-PROBE",
		"pool1 settings1 127.0.0.10:9001 Unknown - 0/0 -",
		"pool1 settings1 app.internal.example:9001 Unknown - 0/0 -",
	}
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got:\n%s", len(want), r.stdout)
	}
	for i := range want {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != want[i] {
			t.Errorf("line %d = %q, want %q", i, got, want[i])
		}
	}

	r = run(t, "backend-health", name, "--pool", "pool1", "-o", "json")
	if r.code != ExitNotHealthy {
		t.Fatalf("-o json: want exit 3, got %s", r)
	}
	var resp fgv1.BackendHealthResponse
	if err := protojson.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("backend-health -o json does not parse: %v\n%s", err, r.stdout)
	}
	servers := resp.GetPools()[0].GetSettings()[0].GetServers()
	if resp.GetGateway() != name || len(servers) != 2 || servers[0].GetHealth() != "Unknown" {
		t.Errorf("backend-health -o json = %v", &resp)
	}

	if r := run(t, "backend-health", name, "--pool", "nosuchpool"); r.code != ExitError || !strings.Contains(r.stderr, "nosuchpool") {
		t.Errorf("unknown pool: %s", r)
	}
	if r := run(t, "backend-health", "nosuchgateway"); r.code != ExitError || !strings.Contains(r.stderr, "not found") {
		t.Errorf("unknown gateway: %s", r)
	}
}

func TestServerFromEnvironment(t *testing.T) {
	env := func(addr string) func(string) string {
		return func(k string) string {
			if k == EnvServer {
				return addr
			}
			return ""
		}
	}
	if r := runWith(t, "", env(cpAddr), "list"); r.code != ExitOK || !strings.HasPrefix(r.stdout, "NAME") {
		t.Errorf("%s=%s: %s", EnvServer, cpAddr, r)
	}

	dead := deadAddr(t)
	r := runWith(t, "", env(dead), "list")
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "error: control plane at "+dead+" unavailable: ") {
		t.Errorf("%s=%s: %s", EnvServer, dead, r)
	}
	if strings.Contains(r.stderr, "rpc error") {
		t.Errorf("raw rpc error shown: %s", r.stderr)
	}

	// The flag wins over the environment.
	if r := runWith(t, "", env(dead), "--server", cpAddr, "list"); r.code != ExitOK {
		t.Errorf("--server over %s: %s", EnvServer, r)
	}
	if r := runWith(t, "", env(cpAddr), "--server", dead, "list"); r.code != ExitError || !strings.Contains(r.stderr, dead) {
		t.Errorf("--server %s over %s: %s", dead, EnvServer, r)
	}
}

func TestUsageErrors(t *testing.T) {
	name := uniqueName(t, "usage")
	file := writeDoc(t, fmt.Sprintf(validDoc, name))
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"list", "--bogus"},
		{"--bogus", "list"},
		{"list", "extra"},
		{"apply"},
		{"apply", "-f", file, "extra"},
		{"apply", "-f", file, "--expected-revision", "-1"},
		{"apply", "-f", file, "--expected-revision", "x"},
		{"get"},
		{"get", "a", "b"},
		{"get", name, "-o", "xml"},
		{"--gateway", "a", "get", "b"},
		{"delete"},
		{"dataplanes"},
		{"dataplanes", "-A", name},
		{"dataplanes", name, "-o", "yaml"},
		{"backend-health"},
		{"--timeout", "0s", "list"},
		{"--timeout", "soon", "list"},
	} {
		r := run(t, args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("gatewayctl %s: want exit 2 with usage on stderr, got %s", strings.Join(args, " "), r)
		}
	}
	// None of it reached the store.
	assertNotFound(t, name)
}

func TestHelp(t *testing.T) {
	for _, c := range []string{"apply", "get", "list", "delete", "dataplanes", "backend-health"} {
		r := run(t, c, "--help")
		if r.code != ExitOK || !strings.Contains(r.stdout, "Usage:\n  gatewayctl "+c) || !strings.Contains(r.stdout, "--server") {
			t.Errorf("%s --help: %s", c, r)
		}
	}
	r := run(t, "--help")
	for _, c := range []string{"apply", "get", "list", "delete", "dataplanes", "backend-health"} {
		if r.code != ExitOK || !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("gatewayctl --help does not list %s: %s", c, r)
		}
	}
}

func TestDeadlineExceeded(t *testing.T) {
	// A listener that accepts connections but never speaks: the call runs into --timeout.
	start := time.Now()
	r := runWith(t, "", nil, "--server", silentServer(t), "--timeout", "200ms", "list")
	if r.code != ExitError || !strings.Contains(r.stderr, "within 200ms") {
		t.Errorf("silent server: %s", r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("--timeout 200ms took %s", d)
	}
}
