package deployments

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	dockerDir    = "docker"
	builderImage = "golang:1.26"
	runtimeImage = "gcr.io/distroless/static-debian12:nonroot"
)

// instruction is one logical line of a Dockerfile: continuation lines joined, comments dropped.
type instruction struct {
	cmd  string // upper case
	rest string
}

func parseDockerfile(data []byte) []instruction {
	var ins []instruction
	var cur strings.Builder
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s)
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		cmd, rest, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		ins = append(ins, instruction{cmd: strings.ToUpper(cmd), rest: strings.TrimSpace(rest)})
		cur.Reset()
	}
	return ins
}

// fromImage is the image of a FROM line, without --platform and the stage name.
func fromImage(rest string) (image, stage string) {
	fields := slices.DeleteFunc(strings.Fields(rest), func(f string) bool { return strings.HasPrefix(f, "--") })
	if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
		return fields[0], fields[2]
	}
	if len(fields) > 0 {
		return fields[0], ""
	}
	return "", ""
}

// TestDockerfiles checks each deployments/docker/Dockerfile.NAME statically (no Docker engine
// here): a golang:1.26 builder building NAME's package as a static, trimmed binary, and a distroless
// nonroot final stage whose ENTRYPOINT is that binary.
func TestDockerfiles(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(dockerDir, "Dockerfile.*"))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, p := range paths {
		name := strings.TrimPrefix(filepath.Base(p), "Dockerfile.")
		if strings.Contains(name, ".") {
			continue // Dockerfile.NAME.dockerignore
		}
		found[name] = true
		t.Run(name, func(t *testing.T) {
			pkg, ok := binaryPackages[name]
			if !ok {
				t.Fatalf("%s builds %q, which is none of the binaries %v", p, name, slices.Sorted(maps.Keys(binaryPackages)))
			}
			if _, err := os.Stat(p + ".dockerignore"); err != nil {
				t.Errorf("no %s.dockerignore: the build context (the repository root) would include .git and bin/", p)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var stages [][]instruction
			for _, in := range parseDockerfile(data) {
				if in.cmd == "FROM" {
					stages = append(stages, nil)
				}
				if len(stages) == 0 {
					if in.cmd != "ARG" {
						t.Fatalf("%s before the first FROM", in.cmd)
					}
					continue
				}
				stages[len(stages)-1] = append(stages[len(stages)-1], in)
			}
			if len(stages) < 2 {
				t.Fatalf("%d stages: want a builder and a final stage", len(stages))
			}
			builder, builderName := fromImage(stages[0][0].rest)
			if builder != builderImage || builderName == "" {
				t.Errorf("first stage FROM %s AS %q: want %s AS <name>", builder, builderName, builderImage)
			}
			out := "/out/" + name
			var builds int
			for _, in := range stages[0] {
				if in.cmd != "RUN" || !strings.Contains(in.rest, "go build") {
					continue
				}
				builds++
				for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "-o " + out + " "} {
					if !strings.Contains(in.rest, want) {
						t.Errorf("go build lacks %s: %s", want, in.rest)
					}
				}
				if f := strings.Fields(in.rest); f[len(f)-1] != pkg {
					t.Errorf("go build builds %s, want %s", f[len(f)-1], pkg)
				}
			}
			if builds != 1 {
				t.Errorf("%d go build RUNs in the builder stage, want 1", builds)
			}
			final := stages[len(stages)-1]
			if img, _ := fromImage(final[0].rest); img != runtimeImage {
				t.Errorf("final stage FROM %s, want %s", img, runtimeImage)
			}
			var user, entrypoint, copied string
			for _, in := range final {
				switch in.cmd {
				case "USER":
					user = in.rest
				case "ENTRYPOINT":
					var ep []string
					if err := json.Unmarshal([]byte(in.rest), &ep); err != nil || len(ep) != 1 {
						t.Errorf("ENTRYPOINT %s: want the exec form with the binary alone", in.rest)
						continue
					}
					entrypoint = ep[0]
				case "COPY":
					f := strings.Fields(in.rest)
					if slices.Contains(f, "--from="+builderName) && slices.Contains(f, out) {
						copied = f[len(f)-1]
					}
				case "RUN":
					t.Errorf("RUN in the final stage: distroless has no shell")
				}
			}
			if user != "nonroot" {
				t.Errorf("final stage USER %q, want nonroot", user)
			}
			if path.Base(entrypoint) != name {
				t.Errorf("ENTRYPOINT runs %q, want the %s binary", entrypoint, name)
			}
			if copied == "" || copied != entrypoint {
				t.Errorf("the binary is copied from %s to %q, but ENTRYPOINT runs %q", out, copied, entrypoint)
			}
		})
	}
	for name := range binaryPackages {
		if !found[name] {
			t.Errorf("no %s", filepath.Join(dockerDir, "Dockerfile."+name))
		}
	}
}

// composeFile is the part of the compose specification compose.yaml may use. It is decoded
// strictly: a field missing here is a typo, or a real compose field to add here.
type composeFile struct {
	Name     string                     `json:"name"`
	Services map[string]*composeService `json:"services"`
	Volumes  map[string]*struct{}       `json:"volumes"`
}

type composeService struct {
	Image           string              `json:"image"`
	Build           *composeBuild       `json:"build"`
	Command         []string            `json:"command"`
	DependsOn       composeDependsOn    `json:"depends_on"`
	Healthcheck     *composeHealthcheck `json:"healthcheck"`
	Ports           []string            `json:"ports"`
	Volumes         []string            `json:"volumes"`
	StopGracePeriod string              `json:"stop_grace_period"`
	Restart         string              `json:"restart"`
	ReadOnly        bool                `json:"read_only"`
	CapDrop         []string            `json:"cap_drop"`
	SecurityOpt     []string            `json:"security_opt"`
}

type composeBuild struct {
	Context    string `json:"context"`
	Dockerfile string `json:"dockerfile"`
}

type composeHealthcheck struct {
	Test        []string `json:"test"`
	Interval    string   `json:"interval"`
	Timeout     string   `json:"timeout"`
	Retries     int      `json:"retries"`
	StartPeriod string   `json:"start_period"`
}

// composeDependsOn is depends_on in either form: a list of services or a map to conditions.
type composeDependsOn map[string]string

func (d *composeDependsOn) UnmarshalJSON(data []byte) error {
	var list []string
	if err := json.Unmarshal(data, &list); err == nil {
		*d = composeDependsOn{}
		for _, s := range list {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `json:"condition"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("depends_on: %w", err)
	}
	*d = composeDependsOn{}
	for s, c := range m {
		(*d)[s] = c.Condition
	}
	return nil
}

// composeContainer is one compose service running a binary the test knows, its command parsed.
type composeContainer struct {
	name string
	svc  *composeService
	bin  string
	inv  invocation
}

// TestCompose checks deployments/docker/compose.yaml statically: builds use the Dockerfiles from
// the repository root, commands use the binaries' real flags, dependencies, volumes and addresses
// name what exists, TLS material comes from the one PKI a one-shot makes (checkComposeTLS), the
// workers get time to drain, and the gateway it applies is valid.
func TestCompose(t *testing.T) {
	dir, err := filepath.Abs(dockerDir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.UnmarshalStrict(data, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var ccs []*composeContainer
	listenPorts := map[string][]string{} // service -> ports it listens on
	for _, name := range slices.Sorted(maps.Keys(cf.Services)) {
		svc := cf.Services[name]
		bin := imageBinary(svc.Image)
		if svc.Build != nil {
			ctx := filepath.Join(dir, svc.Build.Context)
			if ctx != repoRoot {
				t.Errorf("%s: build context %s is not the repository root", name, svc.Build.Context)
			}
			if _, err := os.Stat(filepath.Join(ctx, svc.Build.Dockerfile)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			fromDockerfile := strings.TrimPrefix(path.Base(svc.Build.Dockerfile), "Dockerfile.")
			if fromDockerfile != bin {
				t.Errorf("%s: image %q, but it is built from %s", name, svc.Image, svc.Build.Dockerfile)
			}
		}
		if bin == "" {
			t.Errorf("%s: image %q is neither Fleetgate's nor etcd's", name, svc.Image)
			continue
		}
		args := svc.Command
		if bin == "etcd" {
			if len(args) == 0 || path.Base(args[0]) != "etcd" {
				t.Errorf("%s: etcd's image has no ENTRYPOINT: command must run etcd, not %q", name, args)
				continue
			}
			args = args[1:]
		} else if !svc.ReadOnly || !slices.Contains(svc.CapDrop, "ALL") || !slices.Contains(svc.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: want read_only, cap_drop [ALL] and no-new-privileges, like the Kubernetes pods", name)
		}
		cc := &composeContainer{name: name, svc: svc, bin: bin}
		if b := binaries[bin]; b != nil {
			cc.inv = parseArgs(b, args)
		} else if bin == "etcd" {
			cc.inv = naiveArgs(args) // no etcd on PATH
		} else {
			requireBinary(t, bin)
		}
		for _, p := range cc.inv.problems {
			t.Errorf("%s (%s): %s", name, bin, p)
		}
		for flag, kind := range addressFlags[bin] {
			v, ok := cc.inv.flags[flag]
			if !ok || !strings.HasPrefix(kind, "listen") {
				continue
			}
			hps := []string{v}
			if kind == "listen-urls" {
				if hps, err = urlHostPorts(v); err != nil {
					t.Errorf("%s: --%s: %v", name, flag, err)
				}
			}
			for _, hp := range hps {
				if _, port, err := net.SplitHostPort(hp); err == nil {
					listenPorts[name] = append(listenPorts[name], port)
				}
			}
		}
		ccs = append(ccs, cc)

		for dep, cond := range svc.DependsOn {
			target := cf.Services[dep]
			switch {
			case target == nil:
				t.Errorf("%s depends on %s, which is no service", name, dep)
			case cond == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, cond):
				t.Errorf("%s depends on %s: condition %q", name, dep, cond)
			}
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: bind mount %s: %v", name, v, err)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not declared under volumes", name, src)
			}
		}
	}

	// What a component dials is a compose service, on a port that service listens on.
	for _, cc := range ccs {
		for flag, kind := range addressFlags[cc.bin] {
			v, ok := cc.inv.flags[flag]
			if !ok || !strings.HasPrefix(kind, "dial") {
				continue
			}
			hps := []string{v}
			if kind == "dial-urls" {
				if hps, err = urlHostPorts(v); err != nil {
					t.Errorf("%s: --%s: %v", cc.name, flag, err)
				}
			}
			for _, hp := range hps {
				if err := composeResolve(cf, listenPorts, hp); err != nil {
					t.Errorf("%s: --%s: %v", cc.name, flag, err)
				}
			}
		}
	}

	// TLS: one PKI, made by a one-shot, read by everyone else.
	checkComposeTLS(t, cf, ccs)

	// The workers get to finish their requests before docker stop kills them.
	var dataplanes []*composeContainer
	for _, cc := range ccs {
		if cc.bin != "dataplane" {
			continue
		}
		dataplanes = append(dataplanes, cc)
		grace, err := time.ParseDuration(orDefault(cc.inv.flags["shutdown-grace"], "30s"))
		if err != nil {
			t.Fatal(err)
		}
		stop, err := time.ParseDuration(orDefault(cc.svc.StopGracePeriod, "10s"))
		if err != nil {
			t.Errorf("%s: stop_grace_period: %v", cc.name, err)
		}
		if stop <= grace {
			t.Errorf("%s: stop_grace_period %s must exceed --shutdown-grace %s (docker stop kills after it)", cc.name, stop, grace)
		}
		if cc.inv.flags["bind-address"] != "0.0.0.0" {
			t.Errorf("%s: --bind-address=%q: a container's listeners bind to 0.0.0.0", cc.name, cc.inv.flags["bind-address"])
		}
	}
	if len(dataplanes) != 2 {
		t.Errorf("%d data-plane services, want 2", len(dataplanes))
	}

	// The gateway the one-shot gatewayctl applies.
	var apply *composeContainer
	for _, cc := range ccs {
		if cc.bin == "gatewayctl" && slices.Equal(cc.inv.subcommand, []string{"apply"}) {
			apply = cc
		}
	}
	if apply == nil {
		t.Fatal("no gatewayctl apply service")
	}
	if apply.svc.Restart != "on-failure" {
		t.Errorf("%s: restart %q: want on-failure, to retry until the control plane answers", apply.name, apply.svc.Restart)
	}
	file := apply.inv.flags["filename"]
	var source string
	for _, v := range apply.svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == file {
			source = filepath.Join(dir, parts[0])
		}
	}
	if source == "" {
		t.Fatalf("%s: -f %s is not a bind-mounted file", apply.name, file)
	}
	doc, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	gw := validGateway(t, doc)
	for _, cc := range dataplanes {
		if g := cc.inv.flags["gateway"]; g != gw.GetName() {
			t.Errorf("%s serves gateway %q, %s applies %q", cc.name, g, apply.name, gw.GetName())
		}
		for _, l := range gw.GetHttpListeners() {
			if !slices.ContainsFunc(cc.svc.Ports, func(p string) bool { return containerPort(p) == strconv.Itoa(int(l.GetPort())) }) {
				t.Errorf("%s does not publish listener %s's port %d", cc.name, l.GetName(), l.GetPort())
			}
		}
	}
	forEachBackend(gw, func(host string, port int32) {
		if err := composeResolve(cf, listenPorts, net.JoinHostPort(host, strconv.Itoa(int(port)))); err != nil {
			t.Errorf("gateway backend: %v", err)
		}
	})
}

// composeResolve checks that host:port is a compose service listening on that port.
func composeResolve(cf composeFile, listenPorts map[string][]string, hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if cf.Services[host] == nil {
		return fmt.Errorf("%s: no service %q", hostport, host)
	}
	if !slices.Contains(listenPorts[host], port) {
		return fmt.Errorf("%s: service %s listens on %v, not %s", hostport, host, listenPorts[host], port)
	}
	return nil
}

// containerPort is the container side of a compose port mapping ("8081:8080" -> "8080").
func containerPort(mapping string) string {
	mapping, _, _ = strings.Cut(mapping, "/")
	return mapping[strings.LastIndex(mapping, ":")+1:]
}

// naiveArgs reads --name=value arguments when the binary is not at hand to check them.
func naiveArgs(args []string) invocation {
	inv := invocation{flags: map[string]string{}, values: map[string][]string{}}
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		inv.flags[name] = value
		inv.values[name] = append(inv.values[name], value)
	}
	return inv
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
