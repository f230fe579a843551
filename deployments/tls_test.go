package deployments

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fleetgate/fleetgate/controlplane/pki"
)

// The TLS checks. The Secrets are empty placeholders and the compose PKI is made at run time, so
// the checks make the PKI the way the documentation (README.md) and compose.yaml say, with the real
// `controlplane certs init`, fill in what each container would read, and shake hands with the
// control plane's own TLS configuration (pki.ServerTLS, pki.ClientTLS) for every client and control
// plane: names, CA, client roles and worker ids, as the running system would see them.

// tlsFileFlags: binary -> the flags naming TLS material it reads, files or a PKI directory.
var tlsFileFlags = map[string][]string{
	"controlplane": {"tls-cert-file", "tls-key-file", "tls-client-ca-file", "pki-dir", "token-file"},
	"dataplane":    {"ca-file", "cert-file", "key-file", "pki-dir"},
	"gatewayctl":   {"ca-file", "cert-file", "key-file", "pki-dir"},
}

// adminCommands are gatewayctl's commands that need role admin; the others need reader.
var adminCommands = []string{"apply", "delete", "probe", "drain", "undrain"}

// tlsServer is a control plane's TLS material, as files here.
type tlsServer struct {
	where                  string
	cert, key, clientCA    string
	extraNames             []string // names its certificate must hold besides those its clients dial
	host                   string   // its own host name, when clients dial replicas by theirs (compose)
	listenPort, healthPort string
}

// tlsClient is a worker's or gatewayctl's TLS material, as files here, and what it must be.
type tlsClient struct {
	where          string
	ca, cert, key  string
	serverName     string // the name it verifies: --tls-server-name, else the host dialled
	explicitName   bool   // serverName is --tls-server-name
	role, workerID string
}

// handshake shakes hands between a control plane and a client with their real TLS configurations
// and checks what the control plane learns of the client: its role and, for a worker, its id.
func handshake(s tlsServer, c tlsClient) error {
	scfg, err := pki.ServerTLS(s.cert, s.key, s.clientCA)
	if err != nil {
		return fmt.Errorf("control plane's TLS configuration: %w", err)
	}
	ccfg, err := pki.ClientTLS(pki.ClientFiles{CAFile: c.ca, CertFile: c.cert, KeyFile: c.key, ServerName: c.serverName})
	if err != nil {
		return fmt.Errorf("client's TLS configuration: %w", err)
	}
	if ccfg.ServerName == "" {
		ccfg.ServerName = c.serverName
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv, cli := tls.Server(sc, scfg), tls.Client(cc, ccfg)
	errc := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err != nil {
			sc.Close()
		}
		errc <- err
	}()
	cerr := cli.HandshakeContext(ctx)
	if cerr != nil {
		cc.Close()
	} else {
		// With TLS 1.3 the client is done before the control plane has checked its certificate:
		// read what the control plane sends (an alert, if it refuses it), or it blocks on the pipe.
		go func() { _, _ = io.Copy(io.Discard, cli) }()
	}
	serr := <-errc
	if cerr != nil || serr != nil {
		return fmt.Errorf("TLS handshake (server name %q): client: %v; control plane: %v", c.serverName, cerr, serr)
	}
	peers := srv.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return errors.New("the client presented no certificate")
	}
	id := pki.IdentityOf(peers[0])
	if !id.Has(c.role) {
		return fmt.Errorf("the control plane sees %s, which lacks role %s", id, c.role)
	}
	if c.role == pki.RoleDataPlane && !id.MayClaim(c.workerID) {
		return fmt.Errorf("the control plane sees %s, which may not connect as worker %q (it may be %v)", id, c.workerID, id.DataPlaneIDs)
	}
	return nil
}

// certsInit runs the real `controlplane certs init` with the given --san values into a new
// directory, and returns it.
func certsInit(t *testing.T, sans []string) string {
	t.Helper()
	b := requireBinary(t, "controlplane")
	dir := filepath.Join(t.TempDir(), "pki")
	args := []string{"certs", "init", "--dir", dir}
	for _, s := range sans {
		args = append(args, "--san", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, b.path, args...).CombinedOutput(); err != nil {
		t.Fatalf("controlplane %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// serverFrom and clientFrom read a control plane's or a client's TLS flags, with files already
// resolved to this machine by local. They report what is missing.
func serverFrom(where string, inv invocation, local map[string]string) (tlsServer, []string) {
	s := tlsServer{where: where, cert: local["tls-cert-file"], key: local["tls-key-file"], clientCA: local["tls-client-ca-file"]}
	var problems []string
	if _, ok := inv.flags["insecure"]; ok {
		problems = append(problems, "--insecure: TLS and authentication are off")
	}
	if s.cert == "" || s.key == "" || s.clientCA == "" {
		problems = append(problems, "want --tls-cert-file, --tls-key-file and --tls-client-ca-file from a mounted volume (the auto PKI cannot write to a read-only root filesystem, nor be shared by replicas)")
	}
	_, s.listenPort, _ = net.SplitHostPort(inv.flags["listen"])
	_, s.healthPort, _ = net.SplitHostPort(inv.flags["health-address"])
	return s, problems
}

func clientFrom(where, bin string, inv invocation, local map[string]string, podName string) (tlsClient, []string) {
	c := tlsClient{where: where, ca: local["ca-file"], cert: local["cert-file"], key: local["key-file"], serverName: inv.flags["tls-server-name"]}
	var problems []string
	if _, ok := inv.flags["insecure"]; ok {
		problems = append(problems, "--insecure: plaintext, no client certificate")
	}
	dial := inv.flags["controlplane"]
	c.role, c.workerID = pki.RoleDataPlane, inv.flags["id"]
	if podName != "" && strings.Contains(c.workerID, "$(") {
		c.workerID = podName
	}
	holder := pki.DataPlaneName
	if bin == "gatewayctl" {
		dial, c.role, c.workerID, holder = inv.flags["server"], pki.RoleReader, "", pki.AdminName
		if len(inv.subcommand) > 0 && slices.Contains(adminCommands, inv.subcommand[0]) {
			c.role = pki.RoleAdmin
		}
	}
	if dir := local["pki-dir"]; dir != "" {
		d := pki.FilesFromDir(dir, holder)
		c.ca = cmpOr(c.ca, d.CAFile)
		if c.cert == "" && c.key == "" {
			c.cert, c.key = d.CertFile, d.KeyFile
		}
	}
	if c.explicitName = c.serverName != ""; !c.explicitName {
		c.serverName, _, _ = net.SplitHostPort(dial)
	}
	if c.ca == "" || c.cert == "" || c.key == "" {
		problems = append(problems, "want --ca-file, --cert-file and --key-file (or --pki-dir) from a mounted volume")
	}
	return c, problems
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// checkConnections shakes hands between every client and every control plane: any replica may
// serve any client (pointed at it by its host name, in compose), so they must all share one CA.
func checkConnections(t *testing.T, servers []tlsServer, clients []tlsClient) {
	if len(servers) == 0 || len(clients) == 0 {
		t.Fatalf("%d control planes and %d clients with TLS material", len(servers), len(clients))
	}
	for _, s := range servers {
		for _, c := range clients {
			if s.host != "" && !c.explicitName {
				c.serverName = s.host
			}
			if err := handshake(s, c); err != nil {
				t.Errorf("%s -> %s: %v", c.where, s.where, err)
			}
		}
		for _, name := range s.extraNames {
			c := clients[0]
			c.serverName = name
			if err := handshake(s, c); err != nil {
				t.Errorf("%s: its certificate must also name %s: %v", s.where, name, err)
			}
		}
	}
}

// readmeDoc is what deployments/README.md says about making the Kubernetes TLS Secrets.
type readmeDoc struct {
	initDir  string
	sans     []string
	secrets  map[string]map[string]string // Secret -> key -> file (under initDir)
	problems []string
}

// readmeCommands returns the shell commands of README.md's code blocks, continuation lines joined,
// split into words.
func readmeCommands(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds [][]string
	var cur strings.Builder
	inCode := false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inCode = !inCode
			continue
		}
		if !inCode {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		text, _, _ := strings.Cut(cur.String(), " #")
		cur.Reset()
		if f := strings.Fields(text); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			cmds = append(cmds, f)
		}
	}
	return cmds
}

// parseReadme finds the `controlplane certs init` command (checked against the real binary's flags)
// and the `kubectl create secret generic` commands of README.md.
func parseReadme(t *testing.T) readmeDoc {
	t.Helper()
	doc := readmeDoc{secrets: map[string]map[string]string{}}
	inits := 0
	for _, f := range readmeCommands(t) {
		if i := slices.Index(f, "controlplane"); i >= 0 && len(f) > i+2 && f[i+1] == "certs" && f[i+2] == "init" {
			inits++
			inv := parseArgs(requireBinary(t, "controlplane"), f[i+1:])
			for _, p := range inv.problems {
				doc.problems = append(doc.problems, fmt.Sprintf("README.md: %s: %s", strings.Join(f, " "), p))
			}
			doc.initDir, doc.sans = inv.flags["dir"], inv.values["san"]
			continue
		}
		g := slices.Index(f, "generic")
		if g < 2 || f[g-1] != "secret" || f[g-2] != "create" || len(f) < g+2 {
			continue
		}
		name := f[g+1]
		if doc.secrets[name] != nil {
			doc.problems = append(doc.problems, fmt.Sprintf("README.md: Secret %s is made twice", name))
		}
		keys := map[string]string{}
		for j := g + 2; j < len(f); j++ {
			v, ok := strings.CutPrefix(f[j], "--from-file=")
			if !ok {
				if f[j] != "--from-file" || j+1 == len(f) {
					continue
				}
				j++
				v = f[j]
			}
			key, file, ok := strings.Cut(v, "=")
			if !ok {
				key = path.Base(v)
				file = v
			}
			keys[key] = file
		}
		doc.secrets[name] = keys
	}
	if inits != 1 {
		doc.problems = append(doc.problems, fmt.Sprintf("README.md has %d `controlplane certs init` commands, want 1", inits))
	}
	return doc
}

// secretFile resolves a file flag's value in a container: it must be in a read-only mount of a
// Secret of the render, readable by the container's user, under a key README.md says how to fill;
// it returns the file README.md fills that key from, in pkiDir.
func secretFile(r *render, pc *podContainer, value string, doc readmeDoc, pkiDir string) (string, error) {
	m, v := mountOf(pc, value)
	switch {
	case v == nil:
		return "", errors.New("not in a mounted volume")
	case v.Secret == nil:
		return "", fmt.Errorf("in volume %s, which is no Secret", v.Name)
	case !m.ReadOnly:
		return "", fmt.Errorf("mount %s is not read-only", m.Name)
	}
	key := strings.TrimPrefix(strings.TrimPrefix(value, m.MountPath), "/")
	if m.SubPath != "" {
		return "", fmt.Errorf("mount %s has a subPath: a Secret mounted with subPath is never updated", m.Name)
	}
	mode := int32(0o644)
	if v.Secret.DefaultMode != nil {
		mode = *v.Secret.DefaultMode
	}
	if len(v.Secret.Items) > 0 {
		i := slices.IndexFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == key })
		if i < 0 {
			return "", fmt.Errorf("volume %s projects no item to %s", v.Name, key)
		}
		if v.Secret.Items[i].Mode != nil {
			mode = *v.Secret.Items[i].Mode
		}
		key = v.Secret.Items[i].Key
	}
	s := r.secrets[v.Secret.SecretName]
	if s == nil {
		return "", fmt.Errorf("no Secret/%s", v.Secret.SecretName)
	}
	if _, ok := s.Data[key]; !ok {
		return "", fmt.Errorf("Secret/%s has no key %s", s.Name, key)
	}
	var fsGroup *int64
	if pc.w.spec.SecurityContext != nil {
		fsGroup = pc.w.spec.SecurityContext.FSGroup
	}
	if mode&0o004 == 0 && (fsGroup == nil || mode&0o040 == 0) {
		return "", fmt.Errorf("Secret/%s's files are mode %#o, owned by root: the non-root user reads them only with a pod fsGroup and group read", s.Name, mode)
	}
	file, ok := doc.secrets[s.Name][key]
	if !ok {
		return "", fmt.Errorf("README.md does not say how to fill Secret/%s's key %s (kubectl create secret generic %s --from-file=%s=...)", s.Name, key, s.Name, key)
	}
	rel, ok := strings.CutPrefix(path.Clean(file), path.Clean(doc.initDir)+"/")
	if !ok {
		return "", fmt.Errorf("README.md fills Secret/%s's key %s from %s, which is not in the PKI directory %s", s.Name, key, file, doc.initDir)
	}
	return filepath.Join(pkiDir, filepath.FromSlash(rel)), nil
}

// TestKubernetesTLS checks the manifests' TLS: every Fleetgate container reads its TLS material
// from a mounted Secret, the control plane's probes use the plaintext health port, and a PKI made
// and loaded into the Secrets as README.md says lets every client reach the control plane with the
// role it needs.
func TestKubernetesTLS(t *testing.T) {
	doc := parseReadme(t)
	for _, p := range doc.problems {
		t.Error(p)
	}
	if doc.initDir == "" {
		t.Fatal("README.md: no `controlplane certs init --dir DIR` command")
	}
	pkiDir := certsInit(t, doc.sans)
	forEachRender(t, func(t *testing.T, r *render) {
		var servers []tlsServer
		var clients []tlsClient
		for _, pc := range containers(t, r) {
			flags, ok := tlsFileFlags[pc.bin]
			if !ok {
				continue
			}
			local := map[string]string{}
			for _, f := range flags {
				v, ok := pc.inv.flags[f]
				if !ok {
					continue
				}
				file, err := secretFile(r, pc, v, doc, pkiDir)
				if err != nil {
					t.Errorf("%s: --%s=%s: %v", pc.where(), f, v, err)
					continue
				}
				local[f] = file
			}
			var problems []string
			if pc.bin == "controlplane" {
				var s tlsServer
				s, problems = serverFrom(pc.where(), pc.inv, local)
				if ns := pc.w.obj.namespace; ns != "" {
					s.extraNames = []string{"controlplane." + ns + ".svc"}
				}
				checkProbes(t, pc, s)
				servers = append(servers, s)
			} else {
				var c tlsClient
				c, problems = clientFrom(pc.where(), pc.bin, pc.inv, local, pc.w.podName(0))
				clients = append(clients, c)
			}
			for _, p := range problems {
				t.Errorf("%s: %s", pc.where(), p)
			}
		}
		if t.Failed() {
			return
		}
		checkConnections(t, servers, clients)
	})
}

// checkProbes checks that the control plane's probes use its plaintext health port: the kubelet's
// gRPC probes cannot do TLS.
func checkProbes(t *testing.T, pc *podContainer, s tlsServer) {
	if s.healthPort == "" {
		t.Errorf("%s: no --health-address: the kubelet's gRPC probes need a plaintext health port", pc.where())
		return
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": pc.c.ReadinessProbe, "liveness": pc.c.LivenessProbe, "startup": pc.c.StartupProbe} {
		if p == nil {
			if kind != "startup" {
				t.Errorf("%s: no %s probe", pc.where(), kind)
			}
			continue
		}
		var port intstr.IntOrString
		switch {
		case p.GRPC != nil:
			port = intstr.FromInt32(p.GRPC.Port)
		case p.TCPSocket != nil:
			port = p.TCPSocket.Port
			t.Errorf("%s: %s probe: a TCP probe of the control plane says nothing of its health; probe grpc.health.v1", pc.where(), kind)
		default:
			t.Errorf("%s: %s probe: want a gRPC probe (grpc.health.v1) of --health-address", pc.where(), kind)
			continue
		}
		if n := containerPortNumber(pc.c, port); fmt.Sprint(n) != s.healthPort {
			t.Errorf("%s: %s probe targets port %s, not the plaintext --health-address port %s (port %s is TLS)", pc.where(), kind, port.String(), s.healthPort, s.listenPort)
		}
	}
}

// containerPortNumber is the number of a port given by number or by the container's port name.
func containerPortNumber(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

// composeMount is one volume of a compose service: "SRC:DST[:MODE]".
type composeMount struct{ src, dst, mode string }

func composeMounts(svc *composeService) []composeMount {
	var ms []composeMount
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		m := composeMount{src: parts[0]}
		if len(parts) > 1 {
			m.dst = parts[1]
		}
		if len(parts) > 2 {
			m.mode = parts[2]
		}
		ms = append(ms, m)
	}
	return ms
}

// composeMountOf is the mount holding file.
func composeMountOf(svc *composeService, file string) (composeMount, bool) {
	for _, m := range composeMounts(svc) {
		if file == m.dst || strings.HasPrefix(file, strings.TrimSuffix(m.dst, "/")+"/") {
			return m, true
		}
	}
	return composeMount{}, false
}

// checkComposeTLS checks compose.yaml's TLS: one one-shot `controlplane certs init` into a named
// volume, every other Fleetgate service reading its TLS material from that volume, read-only and
// after the one-shot has finished, and the PKI it makes lets every client reach every control
// plane with the role it needs.
func checkComposeTLS(t *testing.T, cf composeFile, ccs []*composeContainer) {
	var certs *composeContainer
	for _, cc := range ccs {
		if cc.bin == "controlplane" && strings.Join(cc.inv.subcommand, " ") == "certs init" {
			if certs != nil {
				t.Errorf("two services run controlplane certs init: %s and %s: the control planes must share one CA", certs.name, cc.name)
			}
			certs = cc
		}
	}
	if certs == nil {
		t.Fatal("no service runs `controlplane certs init`")
	}
	dir := certs.inv.flags["dir"]
	vol, ok := composeMountOf(certs.svc, dir)
	if !ok || vol.dst != dir || !hasKey(cf.Volumes, vol.src) || vol.mode == "ro" {
		t.Fatalf("%s: --dir=%s must be a writable named volume's mount point", certs.name, dir)
	}
	if certs.svc.Restart != "" && certs.svc.Restart != "no" && certs.svc.Restart != "on-failure" {
		t.Errorf("%s: restart %q: it is a one-shot", certs.name, certs.svc.Restart)
	}
	pkiDir := certsInit(t, certs.inv.values["san"])

	var servers []tlsServer
	var clients []tlsClient
	for _, cc := range ccs {
		flags, ok := tlsFileFlags[cc.bin]
		if !ok || cc == certs {
			continue
		}
		local := map[string]string{}
		writable := false
		for _, f := range flags {
			v, ok := cc.inv.flags[f]
			if !ok {
				continue
			}
			m, ok := composeMountOf(cc.svc, v)
			switch {
			case !ok || m.src != vol.src:
				t.Errorf("%s: --%s=%s is not in the volume %s that %s writes", cc.name, f, v, vol.src, certs.name)
				continue
			case m.mode != "ro" && !writable:
				writable = true
				t.Errorf("%s: mount %s:%s: mount the PKI read-only (:ro)", cc.name, m.src, m.dst)
			}
			local[f] = filepath.Join(pkiDir, filepath.FromSlash(strings.TrimPrefix(strings.TrimPrefix(v, m.dst), "/")))
		}
		if len(local) > 0 && cc.svc.DependsOn[certs.name] != "service_completed_successfully" {
			t.Errorf("%s reads the PKI: it must depend on %s with condition service_completed_successfully", cc.name, certs.name)
		}
		var problems []string
		if cc.bin == "controlplane" {
			var s tlsServer
			s, problems = serverFrom(cc.name, cc.inv, local)
			s.host = cc.name
			servers = append(servers, s)
		} else {
			var c tlsClient
			c, problems = clientFrom(cc.name, cc.bin, cc.inv, local, "")
			clients = append(clients, c)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", cc.name, p)
		}
	}
	for _, s := range servers {
		for _, f := range []string{s.cert, s.key, s.clientCA} {
			if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: %s is not a file that %s makes", s.where, strings.TrimPrefix(f, pkiDir), certs.name)
			}
		}
	}
	if t.Failed() {
		return
	}
	checkConnections(t, servers, clients)
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}
