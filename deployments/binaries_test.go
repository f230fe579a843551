package deployments

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The binaries the deployment material runs, by the name their image, Dockerfile and ENTRYPOINT
// use, with the package each is built from.
var binaryPackages = map[string]string{
	"controlplane": "./controlplane/cmd/controlplane",
	"dataplane":    "./dataplane/cmd/dataplane",
	"gatewayctl":   "./controlplane/cmd/gatewayctl",
	"demo-backend": "./scripts/demo/backend",
}

// pendingFlag is a flag the manifests use already although its binary does not have it yet.
type pendingFlag struct {
	takesValue bool
	why        string
}

// pendingFlags: binary -> flag name -> why it is pending. While the binary lacks such a flag,
// TestPendingFlags skips with the reason and the other tests accept it; once the binary has it, it
// is checked like every other flag and its entry here can go. (The data plane has had
// --admin-address since the observability commit; the entry stays only as long as trees without
// it are tested.)
var pendingFlags = map[string]map[string]pendingFlag{
	"dataplane": {
		"admin-address": {takesValue: true, why: "issue 7: the data plane's admin endpoint (/healthz, /readyz), " +
			"which the data plane's readiness and liveness probes use"},
	},
}

// stdSubcommands: binary -> the subcommand paths of a binary that uses Go's flag package, each
// with flags of its own (its help: BINARY PATH... -h). The subcommand must come first, before any
// flag. TestStdSubcommands checks that each exists.
var stdSubcommands = map[string][]string{
	"controlplane": {"certs init", "certs issue"},
}

// addressFlags: binary -> flag -> what its value is, for the cross-checks of addresses:
//
//	dial        host:port of another component (a Service, a compose service)
//	dial-urls   comma-separated URLs of another component
//	listen      host:port the binary listens on (its port must be a container port)
//	listen-urls comma-separated URLs the binary listens on
var addressFlags = map[string]map[string]string{
	"controlplane": {"listen": "listen", "metrics-address": "listen", "health-address": "listen", "etcd-endpoints": "dial-urls"},
	"dataplane":    {"controlplane": "dial", "admin-address": "listen"},
	"gatewayctl":   {"server": "dial"},
	"demo-backend": {"listen": "listen"},
	"etcd": {
		"listen-client-urls": "listen-urls", "listen-peer-urls": "listen-urls", "listen-metrics-urls": "listen-urls",
		"advertise-client-urls": "dial-urls", "initial-advertise-peer-urls": "dial-urls",
	},
}

var (
	// repoRoot is the module's root directory (absolute).
	repoRoot string
	// binaries by name, built once in TestMain (plus etcd when one is on PATH).
	binaries = map[string]*binary{}
	// setupErr is why the binaries could not be built.
	setupErr error
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "fleetgate-deployments-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	setupErr = buildBinaries(dir)
	if path, err := exec.LookPath("etcd"); err == nil {
		binaries["etcd"] = &binary{name: "etcd", path: path, style: styleEtcd}
	}
	return m.Run()
}

// buildBinaries builds every binary of binaryPackages into dir, in one go build (it links them in
// parallel).
func buildBinaries(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	names := make([]string, 0, len(binaryPackages))
	for name := range binaryPackages {
		names = append(names, name)
	}
	slices.Sort(names)
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, name := range names {
		args = append(args, binaryPackages[name])
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, name := range names {
		style := styleStd
		if name == "gatewayctl" {
			style = styleCobra
		}
		// go build names a binary after its package's directory.
		path := filepath.Join(dir, filepath.Base(binaryPackages[name]))
		if _, err := os.Stat(path); err != nil {
			return err
		}
		binaries[name] = &binary{name: name, path: path, style: style}
	}
	return nil
}

// requireBinary returns a built binary or ends the test.
func requireBinary(t *testing.T, name string) *binary {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("building the binaries: %v", setupErr)
	}
	b := binaries[name]
	if b == nil {
		t.Fatalf("no binary %q", name)
	}
	return b
}

// How a binary parses its command line.
const (
	styleStd   = "flag"  // Go's flag package: -name or --name, stops at the first non-flag
	styleCobra = "cobra" // cobra/pflag: --name, -n shorthands, subcommands
	styleEtcd  = "etcd"  // etcd: flags only, written --name=value here
)

// flagInfo is one flag a binary accepts.
type flagInfo struct {
	name       string // long name, without dashes
	takesValue bool   // the next argument is its value unless written --name=value
	typ        string // the value's type as the help shows it ("string", "duration", "int"); "" for booleans
}

// command is what one (sub)command accepts.
type command struct {
	flags       map[string]flagInfo // by spelling: "--name", "-name", "-n"
	subcommands map[string]bool
}

// binary is a program whose accepted flags the test learns from its help output.
type binary struct {
	name, path, style string

	mu       sync.Mutex
	commands map[string]*command // by subcommand path, space-separated
}

// command returns what the (sub)command path accepts, from its help output.
func (b *binary) command(path []string) (*command, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := strings.Join(path, " ")
	if c, ok := b.commands[key]; ok {
		return c, nil
	}
	helpFlag := "-h"
	if b.style != styleStd {
		helpFlag = "--help"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, b.path, append(slices.Clone(path), helpFlag)...).CombinedOutput()
	// Go's flag package exits 2 after -h; the help text is what counts.
	if len(out) == 0 {
		return nil, fmt.Errorf("%s %s %s: no help output (%v)", b.name, key, helpFlag, err)
	}
	var c *command
	switch b.style {
	case styleStd:
		c = parseStdHelp(out)
	case styleCobra:
		if err != nil {
			return nil, fmt.Errorf("%s %s --help: %v\n%s", b.name, key, err, out)
		}
		c = parseCobraHelp(out)
	case styleEtcd:
		c = parseEtcdHelp(out)
	}
	if len(c.flags) == 0 {
		return nil, fmt.Errorf("%s %s %s: found no flags in its help:\n%s", b.name, key, helpFlag, out)
	}
	if b.commands == nil {
		b.commands = map[string]*command{}
	}
	b.commands[key] = c
	return c, nil
}

// has reports whether the binary's top-level command accepts the flag (long name, no dashes).
func (b *binary) has(name string) (bool, error) {
	c, err := b.command(nil)
	if err != nil {
		return false, err
	}
	_, ok := c.flags["--"+name]
	return ok, nil
}

// "  -name type" or "  -name" (a boolean), as flag.PrintDefaults writes them.
var stdFlagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: ([A-Za-z]\w*))?`)

func parseStdHelp(out []byte) *command {
	c := &command{flags: map[string]flagInfo{}}
	for line := range strings.Lines(string(out)) {
		m := stdFlagLine.FindStringSubmatch(strings.TrimRight(line, "\n"))
		if m == nil {
			continue
		}
		f := flagInfo{name: m[1], typ: m[2], takesValue: m[2] != ""}
		c.flags["-"+f.name] = f
		c.flags["--"+f.name] = f
	}
	return c
}

var (
	// "  -f, --file string   usage", "      --dry-run   usage", "      --watch duration[=2s]   usage"
	cobraFlagLine = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)(?: (\S+))?(?:\s{2,}|$)`)
	// "  apply       Validate ..."
	cobraCommandLine = regexp.MustCompile(`^  ([a-z][\w-]*)\s{2,}`)
)

func parseCobraHelp(out []byte) *command {
	c := &command{flags: map[string]flagInfo{}, subcommands: map[string]bool{}}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			section = ""
			continue
		case !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":"):
			section = line
			continue
		}
		switch section {
		case "Available Commands:", "Additional Commands:":
			if m := cobraCommandLine.FindStringSubmatch(line); m != nil {
				c.subcommands[m[1]] = true
			}
		case "Flags:", "Global Flags:":
			m := cobraFlagLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			typ := m[3]
			// A flag with an optional value (--watch[=2s]) takes it only as --watch=VALUE.
			takesValue := typ != "" && !strings.Contains(typ, "[=")
			typ, _, _ = strings.Cut(typ, "[")
			f := flagInfo{name: m[2], typ: typ, takesValue: takesValue}
			c.flags["--"+f.name] = f
			if m[1] != "" {
				c.flags["-"+m[1]] = f
			}
		}
	}
	return c
}

// "  --name 'default'" in etcd's help.
var etcdFlagLine = regexp.MustCompile(`^\s+--([a-z0-9][a-z0-9-]*)`)

func parseEtcdHelp(out []byte) *command {
	c := &command{flags: map[string]flagInfo{}}
	for line := range strings.Lines(string(out)) {
		if m := etcdFlagLine.FindStringSubmatch(line); m != nil {
			// etcd's help does not tell booleans apart: values are written --name=value here.
			c.flags["--"+m[1]] = flagInfo{name: m[1]}
		}
	}
	return c
}

// invocation is a command line parsed against what its binary accepts.
type invocation struct {
	flags      map[string]string   // long name -> value ("true" for a boolean without one); the last one
	values     map[string][]string // long name -> every value, for repeatable flags
	subcommand []string            // gatewayctl's command path
	positional []string
	problems   []string
	pending    []string // pending flags used while the binary lacks them
}

// parseArgs checks args (without the program name) against what b accepts: every flag must be
// one of b's (or pending while b lacks it), every value of a typed flag must parse, and programs
// using Go's flag package must get no positional argument (parsing stops there: flags after it
// would be ignored without a word).
func parseArgs(b *binary, args []string) invocation {
	inv := invocation{flags: map[string]string{}, values: map[string][]string{}}
	problemf := func(format string, a ...any) { inv.problems = append(inv.problems, fmt.Sprintf(format, a...)) }
	cmd, err := b.command(nil)
	if err != nil {
		problemf("%v", err)
		return inv
	}
	commandOpen := b.style == styleCobra || len(stdSubcommands[b.name]) > 0
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || !strings.HasPrefix(arg, "-") || arg == "-" {
			rest := args[i:]
			if arg == "--" {
				rest = args[i+1:]
			}
			if commandOpen && cmd.subcommands[arg] {
				inv.subcommand = append(inv.subcommand, arg)
				if cmd, err = b.command(inv.subcommand); err != nil {
					problemf("%v", err)
					return inv
				}
				continue
			}
			if commandOpen && b.style == styleStd {
				path := strings.Join(append(slices.Clone(inv.subcommand), arg), " ")
				switch {
				case slices.Contains(stdSubcommands[b.name], path):
					inv.subcommand = append(inv.subcommand, arg)
					if cmd, err = b.command(inv.subcommand); err != nil {
						problemf("%v", err)
						return inv
					}
					commandOpen = false
					continue
				case slices.ContainsFunc(stdSubcommands[b.name], func(p string) bool { return strings.HasPrefix(p, path+" ") }):
					inv.subcommand = append(inv.subcommand, arg)
					continue
				}
			}
			if len(inv.subcommand) > 0 && b.style == styleStd && commandOpen {
				problemf("%s %s %s: no such subcommand (known: %s)", b.name, strings.Join(inv.subcommand, " "), arg, strings.Join(stdSubcommands[b.name], ", "))
				return inv
			}
			commandOpen = false
			switch b.style {
			case styleCobra:
				inv.positional = append(inv.positional, arg)
				continue
			case styleEtcd:
				problemf("positional argument %q: write etcd flags as --flag=value", arg)
			default:
				problemf("positional argument %q: %s parses no arguments, and flags after one are ignored", arg, b.name)
			}
			inv.positional = append(inv.positional, rest...)
			return inv
		}
		if b.style == styleStd && commandOpen {
			// Go's flag package: a subcommand comes before every flag, or is not one.
			if len(inv.subcommand) > 0 {
				problemf("%s %s: an incomplete subcommand (known: %s)", b.name, strings.Join(inv.subcommand, " "), strings.Join(stdSubcommands[b.name], ", "))
				return inv
			}
			commandOpen = false
		}
		spelling, value, hasValue := strings.Cut(arg, "=")
		f, ok := cmd.flags[spelling]
		if !ok {
			name := strings.TrimLeft(spelling, "-")
			p, isPending := pendingFlags[b.name][name]
			if !isPending {
				problemf("unknown flag %s: %s does not have it", spelling, strings.Join(append([]string{b.name}, inv.subcommand...), " "))
				continue
			}
			inv.pending = append(inv.pending, name)
			f = flagInfo{name: name, takesValue: p.takesValue}
		}
		if !hasValue {
			value = "true"
			if f.takesValue {
				if i+1 == len(args) {
					problemf("flag %s needs a value", spelling)
					continue
				}
				i++
				value = args[i]
			}
		}
		if _, dup := inv.flags[f.name]; dup && !repeatable(f) {
			problemf("flag --%s given twice", f.name)
		}
		inv.flags[f.name] = value
		inv.values[f.name] = append(inv.values[f.name], value)
		if strings.Contains(value, "$(") {
			continue // expanded by Kubernetes; checked with the expansion
		}
		switch f.typ {
		case "duration":
			if _, err := time.ParseDuration(value); err != nil {
				problemf("--%s=%s: %v", f.name, value, err)
			}
		case "int", "int64", "uint":
			if _, err := strconv.ParseInt(value, 10, 64); err != nil {
				problemf("--%s=%s: not an integer", f.name, value)
			}
		}
	}
	if b.style == styleStd && commandOpen && len(inv.subcommand) > 0 {
		problemf("%s %s: an incomplete subcommand (known: %s)", b.name, strings.Join(inv.subcommand, " "), strings.Join(stdSubcommands[b.name], ", "))
	}
	return inv
}

// repeatable reports whether a flag may be given more than once: a flag.Var of Go's flag package
// (its help shows the type "value"; Fleetgate's are lists) or a pflag slice or array.
func repeatable(f flagInfo) bool {
	return slices.Contains([]string{"value", "strings", "stringArray", "ints", "durations"}, f.typ)
}

// TestPendingFlags reports the flags the deployment material uses ahead of the binaries.
func TestPendingFlags(t *testing.T) {
	for bin, flags := range pendingFlags {
		b := requireBinary(t, bin)
		for name, p := range flags {
			t.Run(bin+"/"+name, func(t *testing.T) {
				has, err := b.has(name)
				if err != nil {
					t.Fatal(err)
				}
				if has {
					t.Logf("%s has --%s now, so it is checked like every other flag (this entry can go)", bin, name)
					return
				}
				t.Skipf("PENDING: %s has no --%s yet (%s). The manifests use it already; everything else is checked.", bin, name, p.why)
			})
		}
	}
}

// TestArgParser checks the checker on known-good and known-bad command lines, so that a flag check
// passing means something.
func TestArgParser(t *testing.T) {
	cases := []struct {
		bin      string
		args     []string
		problems int
	}{
		{"controlplane", []string{"--listen=0.0.0.0:7070", "-lease-ttl", "10", "--log-format", "json"}, 0},
		{"controlplane", []string{"--lisen=0.0.0.0:7070"}, 1},
		{"controlplane", []string{"--lease-ttl=ten"}, 1},
		{"controlplane", []string{"--listen", "0.0.0.0:7070", "extra", "--replica=x"}, 1},
		{"dataplane", []string{"--gateway=a", "--shutdown-grace=30"}, 1},
		{"dataplane", []string{"--gateway=a", "--shutdown-grace=30s", "--id=$(POD_NAME)"}, 0},
		{"gatewayctl", []string{"--server", "cp:7070", "apply", "-f", "/config/a.yaml"}, 0},
		{"gatewayctl", []string{"apply", "--filename=/a.yaml", "--dry-run", "--server=cp:7070"}, 0},
		{"gatewayctl", []string{"--server", "cp:7070", "apply", "--fil", "/config/a.yaml"}, 1},
		{"gatewayctl", []string{"--server", "cp:7070", "list", "-f", "/config/a.yaml"}, 1},
		{"gatewayctl", []string{"--server"}, 1},
		{"controlplane", []string{"--tls-cert-file=/tls/tls.crt", "--tls-key-file", "/tls/tls.key", "--health-address=:7071"}, 0},
		{"controlplane", []string{"certs", "init", "--dir=/pki", "--san", "cp-1", "--san=cp-2"}, 0},
		{"controlplane", []string{"certs", "issue", "--dir=/pki", "--dataplane", "dp-1", "--validity=720h"}, 0},
		{"controlplane", []string{"certs", "issue", "--dir=/pki", "--validity=month"}, 1},
		{"controlplane", []string{"certs", "init", "--dir=/pki", "--listen=:7070"}, 1}, // a top-level flag
		{"controlplane", []string{"certs", "init", "--dri=/pki"}, 1},
		{"controlplane", []string{"certs", "renew", "--dir=/pki"}, 1},
		{"controlplane", []string{"certs", "--dir=/pki"}, 1},
		{"controlplane", []string{"certs"}, 1},
		{"controlplane", []string{"--listen=:7070", "certs", "init"}, 1}, // flag parsing stops at "certs"
		{"controlplane", []string{"--listen=:7070", "--listen=:7071"}, 1},
		{"dataplane", []string{"certs", "init"}, 1},
		{"dataplane", []string{"--gateway=a", "--ca-file=/tls/ca.crt", "--cert-file=/tls/tls.crt", "--key-file=/tls/tls.key"}, 0},
		{"gatewayctl", []string{"--ca-file=/tls/ca.crt", "--cert-file", "/tls/tls.crt", "--key-file=/tls/tls.key", "apply", "-f", "a.yaml"}, 0},
	}
	for _, c := range cases {
		inv := parseArgs(requireBinary(t, c.bin), c.args)
		if len(inv.problems) != c.problems {
			t.Errorf("%s %q: %d problems %q, want %d", c.bin, c.args, len(inv.problems), inv.problems, c.problems)
		}
	}
	// A pending flag absent from its binary is no problem, only reported as pending.
	pendingFlags["demo-backend"] = map[string]pendingFlag{"future-flag": {takesValue: true, why: "a test"}}
	defer delete(pendingFlags, "demo-backend")
	pinv := parseArgs(requireBinary(t, "demo-backend"), []string{"--future-flag", "x", "--name=a"})
	if len(pinv.problems) != 0 || !slices.Equal(pinv.pending, []string{"future-flag"}) || pinv.flags["name"] != "a" {
		t.Errorf("pending flag: problems %q, pending %q, flags %v", pinv.problems, pinv.pending, pinv.flags)
	}

	inv := parseArgs(requireBinary(t, "gatewayctl"), []string{"--server", "cp:7070", "apply", "-f", "x.yaml"})
	if got := strings.Join(inv.subcommand, " "); got != "apply" || inv.flags["filename"] != "x.yaml" || inv.flags["server"] != "cp:7070" {
		t.Errorf("gatewayctl parse: subcommand %q, flags %v", got, inv.flags)
	}
	cinv := parseArgs(requireBinary(t, "controlplane"), []string{"certs", "init", "--dir", "/pki", "--san=a", "--san", "b"})
	if got := strings.Join(cinv.subcommand, " "); got != "certs init" || cinv.flags["dir"] != "/pki" || len(cinv.problems) > 0 {
		t.Errorf("controlplane certs init parse: subcommand %q, flags %v, problems %q", got, cinv.flags, cinv.problems)
	}
}

// TestStdSubcommands checks that the subcommands of stdSubcommands exist: each one's help lists
// flags, and one that does not exist has none.
func TestStdSubcommands(t *testing.T) {
	for bin, paths := range stdSubcommands {
		b := requireBinary(t, bin)
		for _, p := range paths {
			c, err := b.command(strings.Fields(p))
			if err != nil {
				t.Errorf("%s %s: %v", bin, p, err)
				continue
			}
			top, err := b.command(nil)
			if err != nil {
				t.Fatal(err)
			}
			if maps.Equal(c.flags, top.flags) {
				t.Errorf("%s %s -h shows the top-level flags: is it a subcommand?", bin, p)
			}
		}
		words := strings.Fields(paths[0])
		if _, err := b.command(append(words[:len(words)-1:len(words)-1], "no-such-command")); err == nil {
			t.Errorf("%s: a made-up subcommand shows flags too: the subcommand check means nothing", bin)
		}
	}
}
