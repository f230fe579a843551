package deployments

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/fleetgate/fleetgate/controlplane/config"
	fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"
)

// The kustomizations under test, by the name the tests use.
var kustomizations = map[string]string{
	"base":    "kubernetes/base",
	"example": "kubernetes/overlays/example",
}

// The example overlay's namespace.
const exampleNamespace = "fleetgate"

// object is one rendered Kubernetes object, decoded strictly into its API type.
type object struct {
	apiVersion, kind, name, namespace string
	typed                             any
}

func (o *object) String() string { return o.kind + "/" + o.name }

// workload is an object with a pod template.
type workload struct {
	obj            *object
	replicas       int32 // 0: unset (an HPA's)
	podLabels      map[string]string
	spec           *corev1.PodSpec
	claimTemplates map[string]bool
	sts            *appsv1.StatefulSet // for the pods' DNS names
}

// podName is a pod name of the workload, as $(POD_NAME) expands to: ordinal i of a StatefulSet,
// a made-up one of a Deployment's or Job's.
func (w *workload) podName(i int) string {
	if w.sts != nil {
		return fmt.Sprintf("%s-%d", w.obj.name, i)
	}
	return fmt.Sprintf("%s-5d8f7c9b4-x%d", w.obj.name, i)
}

// render is the output of one kustomization.
type render struct {
	name       string
	dir        string // absolute
	objects    []*object
	services   map[string]*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	workloads  []*workload
	hpas       []*autoscalingv2.HorizontalPodAutoscaler
	pdbs       []*policyv1.PodDisruptionBudget
}

func (r *render) workload(kind, name string) *workload {
	for _, w := range r.workloads {
		if w.obj.kind == kind && w.obj.name == name {
			return w
		}
	}
	return nil
}

var (
	rendersOnce sync.Once
	renders     map[string]*render
	renderErrs  map[string]error
)

// mustRender returns the named kustomization's output, built once for all tests.
func mustRender(t *testing.T, name string) *render {
	t.Helper()
	rendersOnce.Do(func() {
		renders, renderErrs = map[string]*render{}, map[string]error{}
		for n, dir := range kustomizations {
			renders[n], renderErrs[n] = build(n, dir)
		}
	})
	if err := renderErrs[name]; err != nil {
		t.Fatalf("kustomize build %s: %v", kustomizations[name], err)
	}
	return renders[name]
}

// build runs kustomize (the library kubectl and the kustomize binary are built on: offline, with
// its default options) and decodes every object strictly.
func build(name, dir string) (*render, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, err
	}
	r := &render{
		name: name, dir: abs,
		services:   map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{},
		secrets:    map[string]*corev1.Secret{},
	}
	for _, res := range resMap.Resources() {
		data, err := res.AsYAML()
		if err != nil {
			return nil, err
		}
		o, err := decodeObject(data)
		if err != nil {
			return nil, err
		}
		r.add(o)
	}
	return r, nil
}

// decodeObject decodes one object into its Kubernetes API type, strictly: a field the type does
// not have (a typo, a field at the wrong level) or a field given twice is an error.
func decodeObject(data []byte) (*object, error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return nil, err
	}
	o := &object{apiVersion: head.APIVersion, kind: head.Kind, name: head.Metadata.Name, namespace: head.Metadata.Namespace}
	switch head.APIVersion + " " + head.Kind {
	case "v1 Namespace":
		o.typed = &corev1.Namespace{}
	case "v1 Service":
		o.typed = &corev1.Service{}
	case "v1 ConfigMap":
		o.typed = &corev1.ConfigMap{}
	case "v1 Secret":
		o.typed = &corev1.Secret{}
	case "v1 ServiceAccount":
		o.typed = &corev1.ServiceAccount{}
	case "apps/v1 Deployment":
		o.typed = &appsv1.Deployment{}
	case "apps/v1 StatefulSet":
		o.typed = &appsv1.StatefulSet{}
	case "policy/v1 PodDisruptionBudget":
		o.typed = &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		o.typed = &autoscalingv2.HorizontalPodAutoscaler{}
	case "batch/v1 Job":
		o.typed = &batchv1.Job{}
	default:
		return nil, fmt.Errorf("%s %s/%s: a kind the test does not decode (add it to decodeObject)", head.APIVersion, head.Kind, head.Metadata.Name)
	}
	if err := yaml.UnmarshalStrict(data, o.typed); err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return o, nil
}

func (r *render) add(o *object) {
	r.objects = append(r.objects, o)
	switch v := o.typed.(type) {
	case *corev1.Service:
		r.services[o.name] = v
	case *corev1.ConfigMap:
		r.configMaps[o.name] = v
	case *corev1.Secret:
		r.secrets[o.name] = v
	case *autoscalingv2.HorizontalPodAutoscaler:
		r.hpas = append(r.hpas, v)
	case *policyv1.PodDisruptionBudget:
		r.pdbs = append(r.pdbs, v)
	case *appsv1.Deployment:
		w := &workload{obj: o, podLabels: v.Spec.Template.Labels, spec: &v.Spec.Template.Spec}
		if v.Spec.Replicas != nil {
			w.replicas = *v.Spec.Replicas
		}
		r.workloads = append(r.workloads, w)
	case *appsv1.StatefulSet:
		w := &workload{obj: o, podLabels: v.Spec.Template.Labels, spec: &v.Spec.Template.Spec, sts: v, claimTemplates: map[string]bool{}}
		if v.Spec.Replicas != nil {
			w.replicas = *v.Spec.Replicas
		}
		for _, c := range v.Spec.VolumeClaimTemplates {
			w.claimTemplates[c.Name] = true
		}
		r.workloads = append(r.workloads, w)
	case *batchv1.Job:
		r.workloads = append(r.workloads, &workload{obj: o, replicas: 1, podLabels: v.Spec.Template.Labels, spec: &v.Spec.Template.Spec})
	}
}

// imageBinary names what an image runs: one of binaryPackages for Fleetgate's images
// (fleetgate/NAME, REGISTRY/.../NAME), "etcd" for etcd's, "" for anything else.
func imageBinary(image string) string {
	repo := image
	if i := strings.LastIndex(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	base := path.Base(repo)
	switch {
	case base == "etcd":
		return "etcd"
	case binaryPackages[base] != "" && strings.Contains(repo, "fleetgate/"):
		return base
	}
	return ""
}

// containerArgs is a container's command line without the program: its args after the image's
// ENTRYPOINT (Fleetgate's images) or after its command (etcd's image has none).
func containerArgs(t *testing.T, c corev1.Container, bin string) []string {
	t.Helper()
	if bin == "etcd" {
		if len(c.Command) == 0 || path.Base(c.Command[0]) != "etcd" {
			t.Errorf("container %s: etcd's image has no ENTRYPOINT: command must run etcd, not %q", c.Name, c.Command)
			return c.Args
		}
		return append(slices.Clone(c.Command[1:]), c.Args...)
	}
	if len(c.Command) > 0 {
		if path.Base(c.Command[0]) != bin {
			t.Errorf("container %s: command %q does not run %s, the image's binary", c.Name, c.Command, bin)
		}
		return append(slices.Clone(c.Command[1:]), c.Args...)
	}
	return c.Args
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand expands $(VAR) like the kubelet does in command and args, with env's values, and
// reports references to variables the container does not define (the kubelet would leave them
// as they are).
func expand(s string, env map[string]string) (string, []string) {
	var undefined []string
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := env[name]
		if !ok {
			undefined = append(undefined, name)
			return m
		}
		return v
	})
	return out, undefined
}

// containerEnv is the values of a container's environment for expanding its args in pod i.
func containerEnv(w *workload, c corev1.Container, i int) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = w.podName(i)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = "NAMESPACE"
		default:
			env[e.Name] = "VALUE-OF-" + e.Name
		}
	}
	return env
}

// podContainer is one container of a rendered workload, with its command line parsed against its
// binary.
type podContainer struct {
	r   *render
	w   *workload
	c   corev1.Container
	bin string
	inv invocation // with $(VAR) expanded for pod 0
}

func (pc *podContainer) where() string {
	return fmt.Sprintf("%s: %s container %s", pc.r.name, pc.w.obj, pc.c.Name)
}

// containers parses every container of every workload of the render whose binary the test knows.
func containers(t *testing.T, r *render) []*podContainer {
	t.Helper()
	var pcs []*podContainer
	for _, w := range r.workloads {
		for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
			bin := imageBinary(c.Image)
			if bin == "" {
				t.Errorf("%s: %s container %s: image %q is neither Fleetgate's nor etcd's", r.name, w.obj, c.Name, c.Image)
				continue
			}
			b := binaries[bin]
			if b == nil {
				if bin != "etcd" {
					requireBinary(t, bin)
				}
				continue // no etcd on PATH: TestContainerFlags says so
			}
			env := containerEnv(w, c, 0)
			var args []string
			for _, a := range containerArgs(t, c, bin) {
				x, undefined := expand(a, env)
				for _, u := range undefined {
					t.Errorf("%s: %s container %s: %q refers to $(%s), which the container's env does not define", r.name, w.obj, c.Name, a, u)
				}
				args = append(args, x)
			}
			pcs = append(pcs, &podContainer{r: r, w: w, c: c, bin: bin, inv: parseArgs(b, args)})
		}
	}
	return pcs
}

// forEachRender runs f as a subtest for every kustomization.
func forEachRender(t *testing.T, f func(t *testing.T, r *render)) {
	for _, name := range slices.Sorted(maps.Keys(kustomizations)) {
		t.Run(name, func(t *testing.T) { f(t, mustRender(t, name)) })
	}
}

// TestKustomizeBuild builds the base and the overlay, decodes every object strictly into its
// Kubernetes API type (in build), and checks namespaces and the objects the base must have.
func TestKustomizeBuild(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		kinds := map[string]int{}
		for _, o := range r.objects {
			kinds[o.kind]++
			cluster := o.kind == "Namespace"
			switch {
			case r.name == "base" && o.namespace != "":
				t.Errorf("%s: the base is namespace-free, but it sets namespace %q", o, o.namespace)
			case r.name == "example" && !cluster && o.namespace != exampleNamespace:
				t.Errorf("%s: namespace %q, want %q", o, o.namespace, exampleNamespace)
			}
		}
		t.Logf("%s: %d objects %v", r.name, len(r.objects), kinds)
		for _, want := range []struct{ kind, name string }{
			{"StatefulSet", "etcd"}, {"Service", "etcd"}, {"PodDisruptionBudget", "etcd"},
			{"Deployment", "controlplane"}, {"Service", "controlplane"}, {"PodDisruptionBudget", "controlplane"},
			{"Deployment", "dataplane"}, {"Service", "dataplane"}, {"PodDisruptionBudget", "dataplane"},
			{"HorizontalPodAutoscaler", "dataplane"},
			{"Secret", "controlplane-tls"}, {"Secret", "dataplane-tls"},
		} {
			if !slices.ContainsFunc(r.objects, func(o *object) bool { return o.kind == want.kind && o.name == want.name }) {
				t.Errorf("no %s/%s", want.kind, want.name)
			}
		}
		if r.name == "example" {
			if !slices.ContainsFunc(r.objects, func(o *object) bool { return o.kind == "Namespace" && o.name == exampleNamespace }) {
				t.Errorf("no Namespace/%s", exampleNamespace)
			}
			if r.workload("Job", "gatewayctl-apply") == nil {
				t.Error("no Job/gatewayctl-apply")
			}
			if r.secrets["gatewayctl-tls"] == nil {
				t.Error("no Secret/gatewayctl-tls")
			}
		}
	})
}

// TestStrictDecodingRejectsTypos makes sure the strict decoding that build relies on does reject
// what it should.
func TestStrictDecodingRejectsTypos(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: {terminationGracePeriod: 5}}}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1, port: 2}]}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
	} {
		if _, err := decodeObject([]byte(doc)); err == nil {
			t.Errorf("decoded without error:\n%s", doc)
		}
	}
}

// TestContainerFlags checks every container's command line against its binary's real flags.
func TestContainerFlags(t *testing.T) {
	if binaries["etcd"] == nil {
		t.Log("no etcd on PATH: etcd's flags are not checked")
	} else {
		t.Logf("etcd's flags are checked against %s (a local etcd, maybe older than the image's)", binaries["etcd"].path)
	}
	forEachRender(t, func(t *testing.T, r *render) {
		for _, pc := range containers(t, r) {
			for _, p := range pc.inv.problems {
				t.Errorf("%s (%s): %s", pc.where(), pc.bin, p)
			}
			if len(pc.inv.pending) > 0 {
				t.Logf("%s uses pending flags %v (see TestPendingFlags)", pc.where(), pc.inv.pending)
			}
		}
	})
}

// TestPodSecurity checks that every pod runs non-root, with a read-only root filesystem, no
// capabilities, no privilege escalation and RuntimeDefault seccomp (the "restricted" Pod Security
// Standard the example namespace enforces), and that every container has resources.
func TestPodSecurity(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		for _, w := range r.workloads {
			psc := w.spec.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			if w.spec.AutomountServiceAccountToken == nil || *w.spec.AutomountServiceAccountToken {
				t.Errorf("%s: set automountServiceAccountToken: false (nothing here talks to the API server)", w.obj)
			}
			for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
				where := fmt.Sprintf("%s container %s", w.obj, c.Name)
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s: no securityContext", where)
					continue
				}
				if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
					t.Errorf("%s: runAsNonRoot is not set", where)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: allowPrivilegeEscalation must be false", where)
				}
				if !isTrue(sc.ReadOnlyRootFilesystem) {
					t.Errorf("%s: readOnlyRootFilesystem must be true", where)
				}
				if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
					t.Errorf("%s: capabilities must drop ALL and add none", where)
				}
				seccomp := psc.SeccompProfile
				if sc.SeccompProfile != nil {
					seccomp = sc.SeccompProfile
				}
				if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: seccompProfile must be RuntimeDefault", where)
				}
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
					switch {
					case req.IsZero():
						t.Errorf("%s: no %s request", where, res)
					case lim.IsZero():
						t.Errorf("%s: no %s limit", where, res)
					case lim.Cmp(req) < 0:
						t.Errorf("%s: %s limit %s below the request %s", where, res, lim.String(), req.String())
					}
				}
			}
		}
	})
}

func isTrue(b *bool) bool { return b != nil && *b }

// TestReferences checks what refers to what by name or label: Services, PDBs, HPAs and spread
// constraints select pods; ports and probes name container ports; mounts name volumes; volumes
// name ConfigMaps and Secrets that exist.
func TestReferences(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		selects := func(sel *metav1.LabelSelector) []*workload {
			s, err := metav1.LabelSelectorAsSelector(sel)
			if err != nil || s.Empty() {
				return nil
			}
			var ws []*workload
			for _, w := range r.workloads {
				if s.Matches(labels.Set(w.podLabels)) {
					ws = append(ws, w)
				}
			}
			return ws
		}
		for name, svc := range r.services {
			ws := selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
			if len(ws) == 0 {
				t.Errorf("Service/%s: its selector %v matches no pod template", name, svc.Spec.Selector)
			}
			for _, w := range ws {
				for _, p := range svc.Spec.Ports {
					target := p.TargetPort
					if target.Type == intstr.Int && target.IntVal == 0 {
						target = intstr.FromInt32(p.Port)
					}
					if !hasPort(w.spec.Containers, target) {
						t.Errorf("Service/%s port %s: targetPort %s is no container port of %s", name, p.Name, target.String(), w.obj)
					}
				}
			}
			if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(svc.Spec.Ports) == 0 {
				t.Errorf("Service/%s: no ports", name)
			}
		}
		for _, pdb := range r.pdbs {
			ws := selects(pdb.Spec.Selector)
			if len(ws) == 0 {
				t.Errorf("PodDisruptionBudget/%s selects no pods", pdb.Name)
			}
			for _, w := range ws {
				if pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int && w.replicas > 0 &&
					pdb.Spec.MinAvailable.IntVal >= w.replicas {
					t.Errorf("PodDisruptionBudget/%s: minAvailable %d blocks every eviction of %s's %d replicas",
						pdb.Name, pdb.Spec.MinAvailable.IntVal, w.obj, w.replicas)
				}
			}
		}
		for _, hpa := range r.hpas {
			ref := hpa.Spec.ScaleTargetRef
			w := r.workload(ref.Kind, ref.Name)
			if w == nil {
				t.Errorf("HorizontalPodAutoscaler/%s: no %s/%s to scale", hpa.Name, ref.Kind, ref.Name)
				continue
			}
			if w.replicas != 0 {
				t.Errorf("%s sets replicas, which HorizontalPodAutoscaler/%s owns: every apply would reset them", w.obj, hpa.Name)
			}
			if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
				t.Errorf("HorizontalPodAutoscaler/%s: want 2 <= minReplicas <= maxReplicas", hpa.Name)
			}
			for _, m := range hpa.Spec.Metrics {
				if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil {
					continue
				}
				for _, c := range w.spec.Containers {
					if q := c.Resources.Requests[m.Resource.Name]; q.IsZero() {
						t.Errorf("HorizontalPodAutoscaler/%s scales on %s utilization, but %s container %s requests none",
							hpa.Name, m.Resource.Name, w.obj, c.Name)
					}
				}
			}
		}
		for _, w := range r.workloads {
			for _, tsc := range w.spec.TopologySpreadConstraints {
				if !slices.Contains(selects(tsc.LabelSelector), w) {
					t.Errorf("%s: a topology spread constraint does not select its own pods", w.obj)
				}
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range w.spec.Volumes {
				volumes[v.Name] = v
				switch {
				case v.ConfigMap != nil && r.configMaps[v.ConfigMap.Name] == nil && !isTrue(v.ConfigMap.Optional):
					t.Errorf("%s volume %s: no ConfigMap/%s", w.obj, v.Name, v.ConfigMap.Name)
				case v.Secret != nil && r.secrets[v.Secret.SecretName] == nil && !isTrue(v.Secret.Optional):
					t.Errorf("%s volume %s: no Secret/%s", w.obj, v.Name, v.Secret.SecretName)
				}
			}
			for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
				for _, m := range c.VolumeMounts {
					if _, ok := volumes[m.Name]; !ok && !w.claimTemplates[m.Name] {
						t.Errorf("%s container %s: mount %s names no volume", w.obj, c.Name, m.Name)
					}
				}
				for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
					if p == nil {
						continue
					}
					var port intstr.IntOrString
					switch {
					case p.HTTPGet != nil:
						port = p.HTTPGet.Port
					case p.TCPSocket != nil:
						port = p.TCPSocket.Port
					case p.GRPC != nil:
						port = intstr.FromInt32(p.GRPC.Port)
					default:
						continue
					}
					if !hasPort([]corev1.Container{c}, port) {
						t.Errorf("%s container %s: %s probe port %s is none of the container's ports", w.obj, c.Name, kind, port.String())
					}
				}
			}
		}
	})
}

// hasPort reports whether one of the containers has the port, by name or number.
func hasPort(cs []corev1.Container, p intstr.IntOrString) bool {
	for _, c := range cs {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return true
			}
		}
	}
	return false
}

// resolve checks that host:port reaches a Service of the render: host is the Service's name or
// POD.SERVICE (a StatefulSet pod behind its headless Service), and the port one of the Service's.
func (r *render) resolve(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	labels := strings.Split(host, ".")
	svcName := labels[0]
	if len(labels) == 2 {
		svcName = labels[1]
	} else if len(labels) > 2 {
		return fmt.Errorf("%s: use SERVICE or POD.SERVICE, names that work in any namespace", hostport)
	}
	svc := r.services[svcName]
	if svc == nil {
		return fmt.Errorf("%s: no Service %q", hostport, svcName)
	}
	if len(labels) == 2 {
		w := r.statefulSetBehind(svcName)
		if svc.Spec.ClusterIP != corev1.ClusterIPNone || w == nil {
			return fmt.Errorf("%s: %q is no headless Service of a StatefulSet", hostport, svcName)
		}
		if !slices.ContainsFunc(podNames(w), func(p string) bool { return p == labels[0] }) {
			return fmt.Errorf("%s: StatefulSet %s has no pod %q (replicas %d)", hostport, w.obj.name, labels[0], w.replicas)
		}
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
		return fmt.Errorf("%s: Service %s has no port %s", hostport, svcName, port)
	}
	return nil
}

func (r *render) statefulSetBehind(service string) *workload {
	for _, w := range r.workloads {
		if w.sts != nil && w.sts.Spec.ServiceName == service {
			return w
		}
	}
	return nil
}

func podNames(w *workload) []string {
	var names []string
	for i := range int(w.replicas) {
		names = append(names, w.podName(i))
	}
	return names
}

// urlHostPorts returns the host:port of each comma-separated URL.
func urlHostPorts(list string) ([]string, error) {
	var hps []string
	for _, s := range strings.Split(list, ",") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		if u.Port() == "" {
			return nil, fmt.Errorf("%s: no port", s)
		}
		hps = append(hps, u.Host)
	}
	return hps, nil
}

// TestAddresses checks the addresses in command lines: what a component dials is a Service of the
// render (with that port), and what it listens on is one of its container's ports.
func TestAddresses(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		for _, pc := range containers(t, r) {
			for flag, kind := range addressFlags[pc.bin] {
				value, ok := pc.inv.flags[flag]
				if !ok {
					continue
				}
				var hostports []string
				switch kind {
				case "dial", "listen":
					hostports = []string{value}
				case "dial-urls", "listen-urls":
					var err error
					if hostports, err = urlHostPorts(value); err != nil {
						t.Errorf("%s: --%s: %v", pc.where(), flag, err)
						continue
					}
				}
				for _, hp := range hostports {
					if strings.HasPrefix(kind, "dial") {
						if err := r.resolve(hp); err != nil {
							t.Errorf("%s: --%s: %v", pc.where(), flag, err)
						}
						continue
					}
					_, port, err := net.SplitHostPort(hp)
					n, _ := strconv.Atoi(port)
					if err != nil || !hasPort([]corev1.Container{pc.c}, intstr.FromInt(n)) {
						t.Errorf("%s: --%s=%s: port %s is none of the container's ports", pc.where(), flag, value, port)
					}
				}
			}
		}
	})
}

// TestEtcdCluster checks that --initial-cluster names exactly the StatefulSet's pods, by the
// names each member advertises.
func TestEtcdCluster(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		w := r.workload("StatefulSet", "etcd")
		if w == nil {
			t.Fatal("no StatefulSet/etcd")
		}
		if w.sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Error("etcd members must start in parallel (podManagementPolicy: Parallel): one alone never gets ready")
		}
		if svc := r.services[w.sts.Spec.ServiceName]; svc == nil || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s must publish not-ready addresses: members resolve each other before they are ready", w.sts.Spec.ServiceName)
		}
		if w.replicas%2 == 0 {
			t.Errorf("etcd replicas %d: use an odd number", w.replicas)
		}
		c := w.spec.Containers[0]
		args := containerArgs(t, c, "etcd")
		flag := func(args []string, name string) string {
			for _, a := range args {
				if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
					return v
				}
			}
			t.Fatalf("etcd: no --%s=", name)
			return ""
		}
		members := map[string]string{}
		for _, m := range strings.Split(flag(args, "initial-cluster"), ",") {
			name, u, _ := strings.Cut(m, "=")
			members[name] = u
		}
		want := podNames(w)
		if got := slices.Sorted(maps.Keys(members)); !slices.Equal(got, want) {
			t.Errorf("--initial-cluster names %v; the StatefulSet's pods are %v", got, want)
		}
		for i, pod := range want {
			env := containerEnv(w, c, i)
			name, _ := expand(flag(args, "name"), env)
			peer, _ := expand(flag(args, "initial-advertise-peer-urls"), env)
			if name != pod {
				t.Errorf("pod %s: --name expands to %q", pod, name)
			}
			if members[pod] != peer {
				t.Errorf("pod %s advertises peer URL %q, but --initial-cluster has %q", pod, peer, members[pod])
			}
			hp, err := urlHostPorts(peer)
			if err != nil {
				t.Error(err)
				continue
			}
			if err := r.resolve(hp[0]); err != nil {
				t.Errorf("pod %s: peer URL: %v", pod, err)
			}
		}
	})
}

// TestDataplaneShutdown checks that the kubelet gives a data-plane worker the time its shutdown
// takes: terminationGracePeriodSeconds > preStop sleep + --shutdown-grace.
func TestDataplaneShutdown(t *testing.T) {
	forEachRender(t, func(t *testing.T, r *render) {
		pcs := slices.DeleteFunc(containers(t, r), func(pc *podContainer) bool { return pc.bin != "dataplane" })
		if len(pcs) == 0 {
			t.Fatal("no data-plane container")
		}
		for _, pc := range pcs {
			grace := 30 * time.Second // the binary's default
			if v, ok := pc.inv.flags["shutdown-grace"]; ok {
				var err error
				if grace, err = time.ParseDuration(v); err != nil {
					t.Fatalf("%s: --shutdown-grace=%s: %v", pc.where(), v, err)
				}
			}
			var sleep time.Duration
			switch pre := pc.c.Lifecycle; {
			case pre == nil || pre.PreStop == nil:
				t.Errorf("%s: no preStop hook: the worker would get SIGTERM while endpoints still send it clients", pc.where())
			case pre.PreStop.Sleep != nil:
				sleep = time.Duration(pre.PreStop.Sleep.Seconds) * time.Second
			default:
				t.Errorf("%s: preStop must be a sleep action (the image has no shell or sleep binary)", pc.where())
			}
			if sleep == 0 || sleep > 15*time.Second {
				t.Errorf("%s: preStop sleeps %s: want a few seconds", pc.where(), sleep)
			}
			tgps := pc.w.spec.TerminationGracePeriodSeconds
			if tgps == nil {
				t.Errorf("%s: no terminationGracePeriodSeconds (default 30s)", pc.where())
				continue
			}
			if total := time.Duration(*tgps) * time.Second; total <= sleep+grace {
				t.Errorf("%s: terminationGracePeriodSeconds %s must exceed preStop %s + --shutdown-grace %s", pc.where(), total, sleep, grace)
			}
			if pc.inv.flags["bind-address"] != "0.0.0.0" {
				t.Errorf("%s: --bind-address=%q: a pod's listeners bind to 0.0.0.0", pc.where(), pc.inv.flags["bind-address"])
			}
			if !strings.Contains(strings.Join(pc.c.Args, " "), "$(POD_NAME)") {
				t.Errorf("%s: --id must come from the pod's name ($(POD_NAME))", pc.where())
			}
			if dir := pc.inv.flags["state-dir"]; !mountedFrom(pc, dir, func(v corev1.Volume) bool { return v.EmptyDir != nil }) {
				t.Errorf("%s: --state-dir=%q is not on an emptyDir", pc.where(), dir)
			}
		}
	})
}

// mountedFrom reports whether dir is at or under a mount of a volume ok accepts.
func mountedFrom(pc *podContainer, dir string, ok func(corev1.Volume) bool) bool {
	_, v := mountOf(pc, dir)
	return v != nil && ok(*v)
}

// mountOf returns the mount holding file and its volume.
func mountOf(pc *podContainer, file string) (*corev1.VolumeMount, *corev1.Volume) {
	if file == "" {
		return nil, nil
	}
	for i, m := range pc.c.VolumeMounts {
		if file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			for j, v := range pc.w.spec.Volumes {
				if v.Name == m.Name {
					return &pc.c.VolumeMounts[i], &pc.w.spec.Volumes[j]
				}
			}
		}
	}
	return nil, nil
}

// TestOverlayImages checks that the overlay's images are exactly the ones its kustomization sets,
// and that the base leaves none of them out.
func TestOverlayImages(t *testing.T) {
	base, ov := mustRender(t, "base"), mustRender(t, "example")
	data, err := os.ReadFile(filepath.Join(ov.dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("overlay kustomization.yaml: %v", err)
	}
	want := map[string]string{} // base image name -> image the overlay sets
	for _, img := range k.Images {
		name := img.Name
		if img.NewName != "" {
			name = img.NewName
		}
		switch {
		case img.Digest != "":
			want[img.Name] = name + "@" + img.Digest
		case img.NewTag != "":
			want[img.Name] = name + ":" + img.NewTag
		default:
			t.Errorf("images: %s sets no tag or digest", img.Name)
		}
	}
	imagesOf := func(r *render) map[string]bool {
		m := map[string]bool{}
		for _, w := range r.workloads {
			for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
				m[c.Image] = true
			}
		}
		return m
	}
	got := imagesOf(ov)
	used := map[string]bool{}
	for img := range got {
		if !slices.Contains(slices.Collect(maps.Values(want)), img) {
			t.Errorf("overlay runs image %q, which its kustomization does not set", img)
		}
		used[img] = true
	}
	for name, img := range want {
		if !used[img] {
			t.Errorf("images: %s -> %s is used by no container", name, img)
		}
	}
	for img := range imagesOf(base) {
		if !slices.ContainsFunc(k.Images, func(i kusttypes.Image) bool { return strings.HasPrefix(img, i.Name+":") || img == i.Name }) {
			t.Errorf("base image %q escapes the overlay's images", img)
		}
	}
}

// TestPlaceholderSecrets makes sure no key material is committed: the TLS Secrets (every Secret of
// every render) are empty placeholders.
func TestPlaceholderSecrets(t *testing.T) {
	want := map[string][]string{"base": {"controlplane-tls", "dataplane-tls"}, "example": {"controlplane-tls", "dataplane-tls", "gatewayctl-tls"}}
	forEachRender(t, func(t *testing.T, r *render) {
		if got := slices.Sorted(maps.Keys(r.secrets)); !slices.Equal(got, want[r.name]) {
			t.Errorf("Secrets %v, want %v", got, want[r.name])
		}
		for name, s := range r.secrets {
			wantKeys := []string{"ca.crt", "tls.crt", "tls.key"}
			if name == "controlplane-tls" {
				wantKeys = []string{"ca.crt", "encryption.key", "tls.crt", "tls.key"}
			}
			if got := slices.Sorted(maps.Keys(s.Data)); !slices.Equal(got, wantKeys) {
				t.Errorf("Secret/%s has keys %v, want %v", name, got, wantKeys)
			}
			for k, v := range s.Data {
				if len(v) > 0 {
					t.Errorf("Secret/%s %s holds %d bytes: commit no key material, only empty placeholders", name, k, len(v))
				}
			}
			if len(s.StringData) > 0 {
				t.Errorf("Secret/%s has stringData: commit no key material", name)
			}
		}
	})
}

// TestExampleGateway checks the gateway the overlay's Job applies: it is read from a ConfigMap the
// Job mounts, it is valid for the control plane, the data plane serves its gateway, exposes its
// listener ports, and its backends are Services of the overlay.
func TestExampleGateway(t *testing.T) {
	r := mustRender(t, "example")
	var apply *podContainer
	for _, pc := range containers(t, r) {
		if pc.bin == "gatewayctl" && slices.Equal(pc.inv.subcommand, []string{"apply"}) {
			apply = pc
		}
	}
	if apply == nil {
		t.Fatal("no gatewayctl apply container")
	}
	file := apply.inv.flags["filename"]
	m, v := mountOf(apply, file)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("%s: -f %s is not in a mounted ConfigMap", apply.where(), file)
	}
	cm := r.configMaps[v.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("no ConfigMap %s", v.ConfigMap.Name)
	}
	key := strings.TrimPrefix(strings.TrimPrefix(file, m.MountPath), "/")
	doc, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q (for -f %s)", cm.Name, key, file)
	}
	gw := validGateway(t, []byte(doc))

	dataplanes := slices.DeleteFunc(containers(t, r), func(pc *podContainer) bool { return pc.bin != "dataplane" })
	for _, pc := range dataplanes {
		if g := pc.inv.flags["gateway"]; g != gw.GetName() {
			t.Errorf("%s serves gateway %q, the Job applies %q", pc.where(), g, gw.GetName())
		}
		for _, l := range gw.GetHttpListeners() {
			if !hasPort([]corev1.Container{pc.c}, intstr.FromInt32(l.GetPort())) {
				t.Errorf("%s: listener %s's port %d is none of the container's ports", pc.where(), l.GetName(), l.GetPort())
			}
		}
	}
	for _, svc := range r.services {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, l := range gw.GetHttpListeners() {
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
				return p.TargetPort.IntVal == l.GetPort() || p.TargetPort.Type == intstr.String && dataplanePortNumber(dataplanes, p.TargetPort.StrVal) == l.GetPort()
			}) {
				t.Errorf("Service/%s does not expose listener %s's port %d", svc.Name, l.GetName(), l.GetPort())
			}
		}
	}
	forEachBackend(gw, func(host string, port int32) {
		if err := r.resolve(net.JoinHostPort(host, strconv.Itoa(int(port)))); err != nil {
			t.Errorf("gateway backend: %v", err)
		}
	})
}

func dataplanePortNumber(pcs []*podContainer, name string) int32 {
	for _, pc := range pcs {
		for _, p := range pc.c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return -1
}

// validGateway decodes, normalizes and validates a gateway document like the control plane does.
func validGateway(t *testing.T, doc []byte) *fgv1.Gateway {
	t.Helper()
	gw, err := config.Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	config.Normalize(gw)
	if err := config.Validate(gw); err != nil {
		t.Fatalf("gateway %s is invalid: %v", gw.GetName(), err)
	}
	return gw
}

// forEachBackend calls f with every backend server's host and each port the backend settings of
// its pool's rules send to.
func forEachBackend(gw *fgv1.Gateway, f func(host string, port int32)) {
	for _, use := range config.PoolUses(gw) {
		var ports []int32
		for _, s := range use.Settings {
			ports = append(ports, s.GetPort())
		}
		for _, s := range use.L4Settings {
			ports = append(ports, s.GetPort())
		}
		for _, a := range use.Pool.GetBackendAddresses() {
			host := a.GetFqdn()
			if host == "" {
				host = a.GetIpAddress()
			}
			for _, port := range ports {
				f(host, port)
			}
		}
	}
}
