// Package helm_test checks Skiff's Helm charts the way a user meets them:
// every chart passes `helm lint --strict`, the all-in-one chart renders the
// facts its values promise (the waypoint's flags, images, the PDB, toggles),
// and everything it renders is accepted by a real kube-apiserver (envtest),
// CRDs first, with a server-side dry-run apply. The RBAC it installs is then
// probed with SubjectAccessReviews, so that least privilege is tested and
// not only reviewed, and the README's `helm install` is run against it.
//
// The tests need the helm binary (SKIFF_HELM, helm in the Skiff cache that
// `make k8s-bin` fills, or helm on PATH) and, for the apiserver, envtest's
// KUBEBUILDER_ASSETS; without them they skip and say what is missing.
package helm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/skiffmesh/skiff/pkg/apis/apistest"
)

// namespace is where the charts are installed, as in the README.
const namespace = "istio-system"

// charts are the chart directories, relative to this package.
var charts = []string{"base", "istiod", "cni", "ztunnel", "skiff"}

// helmBinary finds helm or skips the test.
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SKIFF_HELM"); p != "" {
		return p
	}
	cache := os.Getenv("SKIFF_CACHE")
	if cache == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(dir, "skiff")
		}
	}
	if cache != "" {
		// conformance/cluster/build-k8s.sh caches helm by version; take the
		// newest by name.
		if found, _ := filepath.Glob(filepath.Join(cache, "helm-*", "bin", "helm")); len(found) > 0 {
			sort.Strings(found)
			return found[len(found)-1]
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skip("helm not found: set SKIFF_HELM, or run `make k8s-bin` to build it into the Skiff cache")
	return ""
}

// runHelm runs helm with args and returns its standard output.
func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// render is `helm template` of the all-in-one chart with CRDs, decoded.
func render(t *testing.T, helm string, set []string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "skiff", "skiff", "--namespace", namespace, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	objs, err := decode(runHelm(t, helm, args...))
	if err != nil {
		t.Fatalf("decode the rendered chart: %v", err)
	}
	return objs
}

// decode splits a multi-document YAML stream into objects, skipping empty
// documents; every document must have an apiVersion, a kind and a name.
func decode(manifest []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		// Unstructured's own decoding keeps integers as int64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion, kind or name", i)
		}
		objs = append(objs, u)
	}
}

func TestLint(t *testing.T) {
	helm := helmBinary(t)
	for _, chart := range charts {
		t.Run(chart, func(t *testing.T) {
			t.Parallel()
			runHelm(t, helm, "lint", "--strict", chart)
		})
	}
	t.Run("skiff with values", func(t *testing.T) {
		runHelm(t, helm, "lint", "--strict", "skiff", "--namespace", namespace,
			"--set", "istiod.pilot.replicaCount=2,istiod.waypoint.rateLimitService=rls.rl.svc:8081,cni.enabled=false")
	})
}

// cases are the value sets the all-in-one chart is rendered and applied with.
var cases = []struct {
	name  string
	set   []string
	check func(t *testing.T, objs []*unstructured.Unstructured)
}{
	{
		name: "defaults",
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			crds, err := filepath.Glob(filepath.Join("base", "crds", "*.yaml"))
			if err != nil || len(crds) == 0 {
				t.Fatalf("no CRDs in base/crds: %v", err)
			}
			wantKinds(t, objs, map[string]int{
				"CustomResourceDefinition": len(crds), "Deployment": 1, "DaemonSet": 2, "PodDisruptionBudget": 0,
			})
			args := istiodArgs(t, objs)
			for _, flag := range []string{"--waypoint-rate-limit-service=", "--waypoint-otlp-endpoint="} {
				if hasPrefix(args, flag) {
					t.Errorf("istiod args have %s by default: %q", flag, args)
				}
			}
			wantArgs(t, args, "--waypoint-image=skiff.local/waypoint:dev", "--waypoint-replicas=1",
				"--waypoint-cpu-request=100m", "--waypoint-memory-limit=512Mi",
				"--node-accounts=istio-system/ztunnel", "--waypoint-xds-address=istiod.istio-system.svc:15012")
			wantImages(t, objs, "skiff.local/istiod-lite:dev", "skiff.local/cni:dev", "skiff.local/ztunnel:dev")
		},
	},
	{
		name: "waypoint settings",
		set: []string{
			"istiod.waypoint.rateLimitService=ratelimit.ratelimit.svc:8081",
			"istiod.waypoint.otlpEndpoint=otel-collector.observability.svc:4317",
			"istiod.waypoint.otlpInsecure=false",
			"istiod.waypoint.replicas=3",
			"istiod.waypoint.image=waypoint-debug",
			"istiod.waypoint.resources.requests.cpu=250m",
			"istiod.waypoint.resources.limits.cpu=2",
		},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			wantArgs(t, istiodArgs(t, objs),
				"--waypoint-rate-limit-service=ratelimit.ratelimit.svc:8081",
				"--waypoint-otlp-endpoint=otel-collector.observability.svc:4317",
				"--waypoint-otlp-insecure=false",
				"--waypoint-replicas=3",
				"--waypoint-image=skiff.local/waypoint-debug:dev",
				"--waypoint-cpu-request=250m", "--waypoint-memory-request=64Mi",
				"--waypoint-cpu-limit=2", "--waypoint-memory-limit=512Mi")
		},
	},
	{
		// A GOMEMLIMIT of the user's replaces the one from the limit.
		name: "GOMEMLIMIT set by hand",
		set:  []string{"ztunnel.env.GOMEMLIMIT=40MiB", "ztunnel.resources.limits.memory=128Mi"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			c := find(t, objs, "DaemonSet", "ztunnel")
			containers, _, _ := unstructured.NestedSlice(c.Object, "spec", "template", "spec", "containers")
			env, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "env")
			for _, e := range env {
				if e := e.(map[string]any); e["name"] == "GOMEMLIMIT" && e["value"] != "40MiB" {
					t.Errorf("GOMEMLIMIT %v, want the value set, 40MiB", e)
				}
			}
		},
	},
	{
		name: "highly available istiod",
		set:  []string{"istiod.pilot.replicaCount=3"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			pdb := find(t, objs, "PodDisruptionBudget", "istiod")
			if got, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "minAvailable"); got != 1 {
				t.Errorf("istiod PDB minAvailable = %d, want 1", got)
			}
			sel, _, _ := unstructured.NestedStringMap(pdb.Object, "spec", "selector", "matchLabels")
			pod, _, _ := unstructured.NestedStringMap(find(t, objs, "Deployment", "istiod").Object, "spec", "template", "metadata", "labels")
			for k, v := range sel {
				if pod[k] != v {
					t.Errorf("istiod PDB selects %s=%s, which istiod's pods do not carry (%v)", k, v, pod)
				}
			}
			if got, _, _ := unstructured.NestedInt64(find(t, objs, "Deployment", "istiod").Object, "spec", "replicas"); got != 3 {
				t.Errorf("istiod replicas = %d, want 3", got)
			}
		},
	},
	{
		name: "PDB turned off",
		set:  []string{"istiod.pilot.replicaCount=2", "global.defaultPodDisruptionBudget.enabled=false"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			wantKinds(t, objs, map[string]int{"PodDisruptionBudget": 0})
		},
	},
	{
		name: "own registry",
		set:  []string{"global.hub=registry.example.com/skiff", "global.tag=1.2.3", "ztunnel.tag=1.2.4-debug"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			wantImages(t, objs, "registry.example.com/skiff/istiod-lite:1.2.3",
				"registry.example.com/skiff/cni:1.2.3", "registry.example.com/skiff/ztunnel:1.2.4-debug")
			wantArgs(t, istiodArgs(t, objs), "--waypoint-image=registry.example.com/skiff/waypoint:1.2.3")
		},
	},
	{
		name: "without cni and CRDs",
		set:  []string{"cni.enabled=false", "base.enabled=false"},
		check: func(t *testing.T, objs []*unstructured.Unstructured) {
			wantKinds(t, objs, map[string]int{"CustomResourceDefinition": 0, "DaemonSet": 1, "Deployment": 1})
			for _, o := range objs {
				if strings.Contains(o.GetName(), "cni") {
					t.Errorf("cni disabled, yet %s %s is rendered", o.GetKind(), o.GetName())
				}
			}
		},
	},
}

func TestRender(t *testing.T) {
	helm := helmBinary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, helm, tc.set)
			everyContainerIsBounded(t, objs)
			nodeAgentsKnowTheirMemoryLimit(t, objs)
			tc.check(t, objs)
		})
	}
}

// everyContainerIsBounded checks what every chart promises for every
// container: resource requests, a readiness probe and no privilege
// escalation unless the container is privileged on purpose.
func everyContainerIsBounded(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		containers, found, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if !found {
			continue
		}
		for _, c := range containers {
			c := c.(map[string]any)
			where := fmt.Sprintf("%s %s container %v", o.GetKind(), o.GetName(), c["name"])
			if req, _, _ := unstructured.NestedStringMap(c, "resources", "requests"); req["cpu"] == "" || req["memory"] == "" {
				t.Errorf("%s: no cpu and memory requests (%v)", where, req)
			}
			if _, ok := c["readinessProbe"]; !ok {
				t.Errorf("%s: no readiness probe", where)
			}
			if _, ok := c["securityContext"]; !ok {
				t.Errorf("%s: no securityContext", where)
			}
		}
	}
}

// nodeAgentsKnowTheirMemoryLimit checks that the per-node DaemonSets
// (ztunnel, the CNI node agent) give the Go runtime their container's
// memory limit as GOMEMLIMIT, once (a value in env replaces it).
func nodeAgentsKnowTheirMemoryLimit(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			c := c.(map[string]any)
			env, _, _ := unstructured.NestedSlice(c, "env")
			n := 0
			for _, e := range env {
				e := e.(map[string]any)
				if e["name"] != "GOMEMLIMIT" {
					continue
				}
				n++
				if _, ok := e["value"]; ok {
					continue
				}
				ref, _, _ := unstructured.NestedStringMap(e, "valueFrom", "resourceFieldRef")
				if ref["containerName"] != c["name"] || ref["resource"] != "limits.memory" {
					t.Errorf("DaemonSet %s container %v: GOMEMLIMIT from %v, want its own limits.memory", o.GetName(), c["name"], ref)
				}
			}
			if n != 1 {
				t.Errorf("DaemonSet %s container %v: %d GOMEMLIMIT variables, want 1", o.GetName(), c["name"], n)
			}
		}
	}
}

func wantKinds(t *testing.T, objs []*unstructured.Unstructured, want map[string]int) {
	t.Helper()
	got := map[string]int{}
	for _, o := range objs {
		got[o.GetKind()]++
	}
	for kind, n := range want {
		if got[kind] != n {
			t.Errorf("%d objects of kind %s, want %d", got[kind], kind, n)
		}
	}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

func istiodArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(find(t, objs, "Deployment", "istiod").Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		c := c.(map[string]any)
		if c["name"] == "discovery" {
			args, _, _ := unstructured.NestedStringSlice(c, "args")
			return args
		}
	}
	t.Fatal("istiod has no discovery container")
	return nil
}

func hasPrefix(args []string, prefix string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, prefix) })
}

func wantArgs(t *testing.T, args []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("istiod args lack %s: %q", w, args)
		}
	}
}

func wantImages(t *testing.T, objs []*unstructured.Unstructured, want ...string) {
	t.Helper()
	var got []string
	for _, o := range objs {
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			got = append(got, fmt.Sprint(c.(map[string]any)["image"]))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("images = %q, want %q", got, want)
	}
}

// applier applies objects with server-side apply through the dynamic client.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply server-side applies o; dryRun asks the apiserver to validate and
// admit it without storing it.
func (a *applier) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset() // a CRD applied since the last discovery
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
	}
	var r dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := o.GetNamespace()
		if ns == "" {
			ns = namespace
		}
		r = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	opts := metav1.ApplyOptions{FieldManager: "skiff-charts-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := r.Apply(ctx, o.GetName(), o, opts); err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
	}
	return nil
}

// installCRDs applies the rendered CRDs for real and waits until they are
// established, as Helm does before the rest of a release.
func installCRDs(t *testing.T, a *applier, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := t.Context()
	var names []string
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			if err := a.apply(ctx, o, false); err != nil {
				t.Fatal(err)
			}
			names = append(names, o.GetName())
		}
	}
	crdGVR := apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")
	for _, name := range names {
		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			u, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				c := c.(map[string]any)
				if c["type"] == string(apiextensionsv1.Established) && c["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", name, err)
		}
	}
	a.mapper.Reset()
}

// TestServerSideDryRun renders the all-in-one chart with every value set
// and has a real apiserver accept each object (validation, defaulting and
// admission, e.g. the PriorityClass of the node agents), CRDs first.
func TestServerSideDryRun(t *testing.T) {
	helm := helmBinary(t)
	env, cfg := apistest.Start(t)
	a := newApplier(t, cfg)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// helm install --create-namespace creates it before the release.
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}}}
	if err := a.apply(ctx, ns, false); err != nil {
		t.Fatal(err)
	}
	installCRDs(t, a, render(t, helm, nil))

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, o := range render(t, helm, tc.set) {
				if err := a.apply(ctx, o, true); err != nil {
					t.Error(err)
				}
			}
		})
	}

	// The dry-run is not vacuous: a value the apiserver cannot accept fails.
	t.Run("bad value rejected", func(t *testing.T) {
		var rejected bool
		for _, o := range render(t, helm, []string{"cni.resources.requests.cpu=lots"}) {
			if err := a.apply(ctx, o, true); err != nil {
				if o.GetKind() != "DaemonSet" || o.GetName() != "istio-cni-node" {
					t.Errorf("only istio-cni-node should be rejected: %v", err)
				}
				rejected = true
			}
		}
		if !rejected {
			t.Error("a cpu request of \"lots\" was accepted")
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		for _, o := range render(t, helm, nil) {
			if err := a.apply(ctx, o, false); err != nil {
				t.Fatal(err)
			}
		}
		checkRBAC(t, cs)
	})

	// The README's command, for real (nothing runs the pods: envtest has
	// no nodes), in a namespace of its own; the CRDs exist already, which
	// Helm accepts.
	t.Run("helm install", func(t *testing.T) {
		admin, err := env.AddUser(envtest.User{Name: "helm", Groups: []string{"system:masters"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig, err := admin.KubeConfig()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
			t.Fatal(err)
		}
		const ns = "skiff-install"
		runHelm(t, helm, "install", "skiff", "skiff", "-n", ns, "--create-namespace", "--kubeconfig", path,
			"--set", "istiod.pilot.replicaCount=2,istiod.waypoint.rateLimitService=ratelimit.ratelimit.svc:8081")
		if _, err := cs.AppsV1().Deployments(ns).Get(ctx, "istiod", metav1.GetOptions{}); err != nil {
			t.Errorf("istiod after helm install: %v", err)
		}
		for _, ds := range []string{"ztunnel", "istio-cni-node"} {
			if _, err := cs.AppsV1().DaemonSets(ns).Get(ctx, ds, metav1.GetOptions{}); err != nil {
				t.Errorf("%s after helm install: %v", ds, err)
			}
		}
		if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "istiod", metav1.GetOptions{}); err != nil {
			t.Errorf("istiod PDB after helm install: %v", err)
		}
		if out := runHelm(t, helm, "status", "skiff", "-n", ns, "--kubeconfig", path); !bytes.Contains(out, []byte("STATUS: deployed")) {
			t.Errorf("helm status:\n%s", out)
		}
	})
}

// access is one question to the authorizer: may the service account do verb
// on resource (in namespace ns, named name)?
type access struct {
	account  string
	verb     string
	group    string
	resource string
	sub      string
	ns       string
	name     string
	allowed  bool
}

// checkRBAC asks the apiserver what the charts' service accounts may do:
// what the components need is allowed, and the nearest things they do not
// need are denied.
func checkRBAC(t *testing.T, cs *kubernetes.Clientset) {
	t.Helper()
	const gw = "gateway.networking.k8s.io"
	for _, q := range []access{
		// istiod: the mesh's view, tokens, the root certificate, status.
		{account: "istiod", verb: "watch", resource: "pods", allowed: true},
		{account: "istiod", verb: "list", group: "discovery.k8s.io", resource: "endpointslices", allowed: true},
		{account: "istiod", verb: "create", group: "authentication.k8s.io", resource: "tokenreviews", allowed: true},
		{account: "istiod", verb: "update", resource: "configmaps", ns: "app", allowed: true},
		{account: "istiod", verb: "update", group: gw, resource: "httproutes", sub: "status", ns: "app", allowed: true},
		{account: "istiod", verb: "update", group: "policy.skiff.dev", resource: "ratelimitpolicies", sub: "status", ns: "app", allowed: true},
		{account: "istiod", verb: "create", group: gw, resource: "gatewayclasses", allowed: true},
		{account: "istiod", verb: "create", group: "apps", resource: "deployments", ns: "app", allowed: true},
		{account: "istiod", verb: "update", resource: "services", ns: "app", allowed: true},
		{account: "istiod", verb: "update", group: gw, resource: "gateways", sub: "finalizers", ns: "app", allowed: true},
		{account: "istiod", verb: "get", resource: "secrets", ns: namespace, name: "istio-ca-secret", allowed: true},
		{account: "istiod", verb: "get", resource: "secrets", ns: namespace, name: "cacerts", allowed: true},
		{account: "istiod", verb: "create", resource: "secrets", ns: namespace, allowed: true},
		{account: "istiod", verb: "update", group: "coordination.k8s.io", resource: "leases", ns: namespace, name: "istiod-lite-leader", allowed: true},
		// ... and not more.
		{account: "istiod", verb: "get", resource: "secrets", ns: namespace, name: "other"},
		{account: "istiod", verb: "list", resource: "secrets", ns: namespace},
		{account: "istiod", verb: "get", resource: "secrets", ns: "app", name: "istio-ca-secret"},
		{account: "istiod", verb: "delete", group: "apps", resource: "deployments", ns: "app"},
		{account: "istiod", verb: "update", group: gw, resource: "httproutes", ns: "app"},
		{account: "istiod", verb: "create", group: gw, resource: "gateways", ns: "app"},
		{account: "istiod", verb: "update", group: "coordination.k8s.io", resource: "leases", ns: namespace, name: "other"},
		{account: "istiod", verb: "list", resource: "nodes"},
		{account: "istiod", verb: "create", resource: "pods", ns: "app"},
		// cni: pods and namespaces, the enrolment annotation, events.
		{account: "istio-cni", verb: "watch", resource: "pods", allowed: true},
		{account: "istio-cni", verb: "patch", resource: "pods", ns: "app", allowed: true},
		{account: "istio-cni", verb: "create", group: "events.k8s.io", resource: "events", ns: "app", allowed: true},
		{account: "istio-cni", verb: "update", resource: "pods", ns: "app"},
		{account: "istio-cni", verb: "get", resource: "secrets", ns: "app"},
		// ztunnel has no Kubernetes API access: it asks istiod.
		{account: "ztunnel", verb: "list", resource: "pods"},
		{account: "ztunnel", verb: "get", resource: "secrets", ns: namespace},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + namespace + ":" + q.account,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: q.ns, Verb: q.verb, Group: q.group, Resource: q.resource, Subresource: q.sub, Name: q.name,
			},
		}}
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if got.Status.Allowed != q.allowed {
			t.Errorf("%s may %s %s/%s/%s %s/%s: %v, want %v (%s)", q.account, q.verb, q.group, q.resource, q.sub, q.ns, q.name,
				got.Status.Allowed, q.allowed, got.Status.Reason)
		}
	}
}

// FuzzDecode checks the manifest decoder's promises on any input: an error
// or objects that each have an apiVersion, a kind and a name, and that
// survive a round trip through JSON documents unchanged in number and name.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n"))
	f.Add([]byte("---\n# only a comment\n"))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`))
	f.Add([]byte("kind: Pod\n"))
	f.Fuzz(func(t *testing.T, manifest []byte) {
		objs, err := decode(manifest)
		if err != nil {
			return
		}
		var again bytes.Buffer
		for _, o := range objs {
			if o.GetAPIVersion() == "" || o.GetKind() == "" || o.GetName() == "" {
				t.Fatalf("decoded an object without apiVersion, kind or name: %v", o.Object)
			}
			b, err := o.MarshalJSON()
			if err != nil {
				t.Fatalf("re-encode %v: %v", o.Object, err)
			}
			again.Write(b)
			again.WriteString("\n---\n")
		}
		round, err := decode(again.Bytes())
		if err != nil {
			t.Fatalf("decode of re-encoded objects: %v", err)
		}
		if len(round) != len(objs) {
			t.Fatalf("round trip: %d objects, want %d", len(round), len(objs))
		}
		for i := range objs {
			if round[i].GetName() != objs[i].GetName() || round[i].GetKind() != objs[i].GetKind() {
				t.Fatalf("round trip: object %d is %s %s, want %s %s", i, round[i].GetKind(), round[i].GetName(), objs[i].GetKind(), objs[i].GetName())
			}
		}
	})
}
