package gatewayapi

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// waypointName is the name of the waypoint Gateway in each mesh namespace,
// and so the value of the namespaces' istio.io/use-waypoint label.
const waypointName = "waypoint"

// meshNamespaces are the namespaces of the suite's mesh manifests
// (mesh/manifests.yaml): the producer namespace, whose Services the routes
// attach to, and the consumer namespace of MeshConsumerRoute.
var meshNamespaces = []string{suite.MeshNamespace, suite.MeshConsumerNamespace}

// namespaceLabels enrol every namespace the suite applies in the ambient
// mesh and bind it to its waypoint. The suite overwrites a namespace's
// labels with its manifest's when it applies it, so the harness's labels
// alone would not survive.
var namespaceLabels = map[string]string{
	"istio.io/dataplane-mode": "ambient",
	"istio.io/use-waypoint":   waypointName,
}

// supportedFeatures is what Skiff claims: the core and every extended
// feature of both mesh profiles, and the HTTPRoute features that mesh tests
// also need (response header modification, parentRef ports, 303/307/308
// redirects); without them the suite skips those tests. Nothing is exempt:
// a feature that fails is a bug to fix, recorded in the report.
func supportedFeatures() []features.FeatureName {
	fs := []features.FeatureName{
		features.SupportMesh,
		features.SupportHTTPRoute,
		features.SupportGRPCRoute,
		features.SupportHTTPRouteResponseHeaderModification,
		features.SupportHTTPRouteParentRefPort,
		features.SupportHTTPRoute303RedirectStatusCode,
		features.SupportHTTPRoute307RedirectStatusCode,
		features.SupportHTTPRoute308RedirectStatusCode,
	}
	for _, f := range features.MeshExtendedFeatures.UnsortedList() {
		fs = append(fs, f.Name)
	}
	return fs
}

// TestMeshConformance brings up (or reuses) the local cluster with Skiff
// installed from this checkout, prepares the mesh namespaces with their
// waypoints, and runs the suite's MESH-HTTP and MESH-GRPC profiles. The
// suite's own flags work as usual after -args, for example
// `-args -run-test=MeshConsumerRoute -cleanup-base-resources=false`.
//
//	cd conformance/gatewayapi && SKIFF_E2E=1 go test -count=1 -run TestMeshConformance -v -timeout 60m .
func TestMeshConformance(t *testing.T) {
	kubetest.RequireE2E(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	step(t, repo, "cluster", "conformance/cluster/up.sh")
	step(t, repo, "Skiff", "conformance/cluster/install-skiff.sh")
	// The suite's echo image is Istio's echo app, built from source and
	// imported into every node's containerd under the name the suite uses.
	step(t, repo, "echo-advanced image", "go", "run", "./conformance/cmd/skiff-images", "-istio",
		"-only", "registry.k8s.io/gateway-api/echo-advanced")

	k := kubetest.New(t)
	prepareMeshNamespaces(t, k)
	t.Logf("set-up done (%.0fs)", time.Since(start).Seconds())

	// The suite reads its cluster from controller-runtime's config, which
	// follows KUBECONFIG.
	t.Setenv("KUBECONFIG", k.Cfg)
	opts := conformance.DefaultOptions(t)
	opts.ConformanceProfiles = []suite.ConformanceProfileName{
		suite.MeshHTTPConformanceProfileName,
		suite.MeshGRPCConformanceProfileName,
	}
	opts.SupportedFeatures = supportedFeatures()
	opts.ExemptFeatures = nil
	opts.EnableAllSupportedFeatures = false
	opts.NamespaceLabels = namespaceLabels
	opts.Implementation = confv1.Implementation{
		Organization: "skiffmesh",
		Project:      "skiff",
		URL:          "https://github.com/skiffmesh/skiff",
		Version:      version(repo),
		Contact:      []string{"https://github.com/skiffmesh/skiff/issues"},
	}
	opts.ReportOutputPath = reportPath(t, repo, opts.RunTest != "" || len(opts.SkipTests) > 0)
	results := &testResults{}
	opts.Hook = func(st *testing.T, test suite.ConformanceTest, _ *suite.ConformanceTestSuite) {
		results.record(st, test)
		if st.Failed() {
			logWaypoints(st, k)
		}
	}
	// Registered before the suite's own clean-up, so it runs after it:
	// every test has been recorded by then.
	t.Cleanup(func() {
		if err := results.write(testsPath(opts.ReportOutputPath)); err != nil {
			t.Errorf("writing the per-test results: %v", err)
		}
		t.Logf("conformance run took %.0fs in all", time.Since(start).Seconds())
	})
	conformance.RunConformanceWithOptions(t, opts)
}

// prepareMeshNamespaces creates the suite's mesh namespaces, already
// enrolled and bound, with a waypoint Gateway in each, and waits for the
// waypoints to run: the suite then finds its namespaces there, and its
// routes are served by Skiff's waypoint from the first request. Namespaces
// left from an earlier run are deleted first, so that every run starts from
// the same state.
func prepareMeshNamespaces(t *testing.T, k *kubetest.Kubectl) {
	t.Helper()
	for _, ns := range meshNamespaces {
		k.Run("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=180s")
	}
	var m strings.Builder
	for _, ns := range meshNamespaces {
		fmt.Fprintf(&m, `apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: %[2]s
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: %[2]s
  namespace: %[1]s
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
`, ns, waypointName)
	}
	k.Apply(m.String())
	for _, ns := range meshNamespaces {
		k.Must("-n", ns, "wait", "--for=condition=Programmed", "gateway/"+waypointName, "--timeout=180s")
		k.Must("-n", ns, "rollout", "status", "deploy/"+waypointName, "--timeout=180s")
	}
}

// logWaypoints logs the end of each waypoint's log (its access log) after a
// failed test, for diagnosis.
func logWaypoints(t *testing.T, k *kubetest.Kubectl) {
	for _, ns := range meshNamespaces {
		out, err := k.Run("-n", ns, "logs", "deploy/"+waypointName, "--tail=40")
		if err != nil {
			t.Logf("waypoint log of %s: %v", ns, err)
		}
		t.Logf("waypoint log of %s (last 40 lines):\n%s", ns, out)
	}
}

// reportPath is where the suite writes its report: SKIFF_CONFORMANCE_REPORT
// when set, else the committed report under conformance/reports. A partial
// run (-run-test, -skip-tests) writes to the temporary directory instead,
// so that it does not overwrite the committed report with skipped tests.
func reportPath(t *testing.T, repo string, partial bool) string {
	if p := os.Getenv("SKIFF_CONFORMANCE_REPORT"); p != "" {
		return p
	}
	dir := filepath.Join(repo, "conformance", "reports", "gateway-api-v1.6.3")
	if partial {
		dir = filepath.Join(os.TempDir(), "skiff-conformance")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "skiff-mesh-report.yaml")
}

// version names the checkout under test: its commit, marked when the work
// tree has changes.
func version(repo string) string {
	out, err := exec.Command("git", "-C", repo, "describe", "--always", "--dirty", "--abbrev=12").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}

// step runs a set-up command from the repository root, its output shown.
func step(t *testing.T, repo, what, name string, args ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(name, args...)
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %s %s: %v", what, name, strings.Join(args, " "), err)
	}
	t.Logf("%s ready (%.1fs)", what, time.Since(start).Seconds())
}
