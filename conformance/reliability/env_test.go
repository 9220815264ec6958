package reliability

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const (
	istioNS = "istio-system"
	td      = "cluster.local"
)

// profile is how long the scenarios run. make reliability runs them in
// full; make test sets SKIFF_RELIABILITY_PROFILE=short: the same scenarios
// and pass bars, with shorter loads and outages.
var profile suiteProfile

type suiteProfile struct{}

// pick returns full, or short in the short profile.
func (suiteProfile) pick(full, short time.Duration) time.Duration {
	if os.Getenv("SKIFF_RELIABILITY_PROFILE") == "short" {
		return short
	}
	return full
}

// env is one scenario's view of the cluster: its namespaces (ns in the
// mesh, out outside it), the nodes, and what it must put back.
type env struct {
	t       *testing.T
	k       *kubetest.Kubectl
	repo    string
	ns, out string
	nodes   []string
}

// newEnv starts a scenario: fresh namespaces skiff-rel-<name> (enrolled)
// and skiff-rel-<name>-out (not), removed when the test ends, after the
// cluster's health was checked.
func newEnv(t *testing.T, name string) *env {
	kubetest.RequireE2E(t)
	e := &env{t: t, k: kubetest.New(t), repo: kubetest.RepoRoot(t), ns: "skiff-rel-" + name, out: "skiff-rel-" + name + "-out"}
	e.nodes = strings.Fields(e.k.Must("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(e.nodes) < 2 {
		t.Fatalf("the scenarios need 2 nodes, the cluster has %v", e.nodes)
	}
	e.k.Run("delete", "namespace", e.ns, e.out, "--ignore-not-found", "--wait=true", "--timeout=120s")
	// Cleanups run last first: the scenario's own restorations, then the
	// health check, then the namespaces go.
	t.Cleanup(func() { e.k.DeleteNamespaces(e.ns, e.out) })
	t.Cleanup(func() { e.k.Healthy(t, 5*time.Minute) })
	e.k.Apply(fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Namespace
metadata:
  name: %[2]s
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: %[1]s}
`, e.ns, e.out))
	return e
}

// echo deploys the echo app (2 replicas, one per node) in ns and waits for
// it; it returns the Service's cluster IP. Its pods serve on for 3 s after
// SIGTERM, as a well-behaved application does while its endpoint is
// withdrawn, so that a scenario that replaces them counts the mesh's
// failures and not the application's.
func (e *env) echo(ns string) string {
	e.t.Helper()
	sa := ""
	if ns == e.ns {
		sa = "echo"
	}
	e.k.Apply(kubetest.EchoDraining(ns, 2, sa, 3*time.Second))
	e.k.Must("-n", ns, "rollout", "status", "deploy/echo", "--timeout=180s")
	return e.k.Must("-n", ns, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}")
}

// toolbox starts a toolbox pod in the mesh namespace and waits for it.
func (e *env) toolbox(name, node, sa string) {
	e.t.Helper()
	e.k.Apply(kubetest.Toolbox(e.ns, name, node, sa))
	e.k.Must("-n", e.ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=180s")
}

// load starts a load pod in the mesh namespace (service account client
// unless sa says otherwise) against url; args go to echo load after it.
func (e *env) load(name, node, sa, url string, args ...string) {
	e.t.Helper()
	if sa == "" {
		sa = "client"
	}
	e.k.Apply(kubetest.LoadPod(e.ns, name, node, sa, url, args...))
}

// loadOnNodes starts a load pod on each of the first two nodes, named
// prefix-1 and prefix-2, against url; args go to echo load after it. It
// returns their names.
func (e *env) loadOnNodes(prefix, url string, args ...string) []string {
	e.t.Helper()
	var names []string
	for i, node := range e.nodes[:2] {
		name := fmt.Sprintf("%s-%d", prefix, i+1)
		e.load(name, node, "", url, args...)
		names = append(names, name)
	}
	return names
}

// newConns are the load arguments of most scenarios: a new connection per
// request, 20 a second over 2 connections, for d, once a first answer came
// (within 90 s).
func newConns(d time.Duration) []string {
	return []string{"-mode", "new", "-rate", "20", "-conns", "2", "-timeout", "5s", "-duration", durationArg(d), "-warmup", "90s"}
}

// serviceAccounts creates service accounts in the mesh namespace.
func (e *env) serviceAccounts(names ...string) {
	e.t.Helper()
	var docs []string
	for _, n := range names {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n", n, e.ns))
	}
	e.k.Apply(strings.Join(docs, "---\n"))
}

// measuring waits until every named load pod is measuring.
func (e *env) measuring(names ...string) {
	e.t.Helper()
	for _, n := range names {
		e.k.WaitMeasuring(e.t, e.ns, n, 3*time.Minute)
	}
}

// results waits for the named load pods to end and returns their results.
func (e *env) results(d time.Duration, names ...string) map[string]*kubetest.LoadResult {
	e.t.Helper()
	out := map[string]*kubetest.LoadResult{}
	for _, n := range names {
		out[n] = e.k.LoadResult(e.t, e.ns, n, d)
	}
	return out
}

// explainFailures says when the loads' requests failed, in seconds after
// their measurement began, and what Skiff's components logged from 30 s
// before that on, except access log lines: for a failed scenario's message,
// so that a run elsewhere (CI) can be understood from it.
func (e *env) explainFailures(rs map[string]*kubetest.LoadResult, loads []string) string {
	e.t.Helper()
	var origin int64
	for _, n := range loads {
		if r := rs[n]; r != nil && (origin == 0 || r.StartMS < origin) {
			origin = r.StartMS
		}
	}
	var b strings.Builder
	for _, n := range loads {
		fmt.Fprintf(&b, "failed runs of %s: %s; ", n, rs[n].FailedRuns(origin))
	}
	var lines []string
	for _, app := range []string{"ztunnel", "istio-cni-node", "istiod"} {
		lines = append(lines, e.componentLog("app="+app, time.UnixMilli(origin).Add(-30*time.Second))...)
	}
	const most = 60
	if len(lines) > most {
		lines = append(lines[:most], fmt.Sprintf("(%d more lines)", len(lines)-most))
	}
	b.WriteString("what Skiff's components logged from 30 s before the measurement on:\n" + strings.Join(lines, "\n"))
	return b.String()
}

// componentLog returns what pods in istio-system matching selector logged
// since since, prefixed with their pod: warnings and errors, and pods
// added to or removed from the mesh, but no access log lines.
func (e *env) componentLog(selector string, since time.Time) []string {
	e.t.Helper()
	out, err := e.k.Run("-n", istioNS, "logs", "-l", selector, "--prefix", "--tail=-1", "--max-log-requests=20",
		"--since-time="+since.UTC().Format(time.RFC3339))
	if err != nil {
		return []string{fmt.Sprintf("logs of %s: %v", selector, err)}
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "scope=access") || strings.Contains(l, `"scope":"access"`) {
			continue
		}
		for _, s := range []string{"level=WARN", "level=ERROR", `"level":"WARN"`, `"level":"ERROR"`, "pod added", "pod removed", "pod enrolled", "in sync"} {
			if strings.Contains(l, s) {
				lines = append(lines, l)
				break
			}
		}
	}
	return lines
}

// figure logs the scenario's figure on the line make reliability prints.
func (e *env) figure(format string, args ...any) {
	e.t.Helper()
	e.t.Logf("figure: %s: %s", e.t.Name(), fmt.Sprintf(format, args...))
}

// sum adds up the load results: failed, total.
func sum(rs map[string]*kubetest.LoadResult, names ...string) (failed, total int) {
	for _, n := range names {
		failed += rs[n].Failed
		total += rs[n].Total()
	}
	return failed, total
}

// durationArg formats d for a load pod's -duration.
func durationArg(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }

// helmValue returns a value of a release (dotted path into its computed
// values), as JSON.
func (e *env) helmValue(release, path string) string {
	e.t.Helper()
	out, err := e.k.Helm(e.t, e.repo, "get", "values", release, "-n", istioNS, "--all", "-o", "json")
	if err != nil {
		e.t.Fatalf("helm get values %s: %v\n%s", release, err, out)
	}
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("helm get values %s: %v", release, err)
	}
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			e.t.Fatalf("helm values of %s have no %s", release, path)
		}
		v = m[p]
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// helmSet upgrades a release of this checkout's chart with its values and
// these settings (--set-json path=json), and waits for it and for the
// cluster to be healthy again.
func (e *env) helmSet(release, chart string, settings ...string) error {
	args := []string{"upgrade", release, "helm/" + chart, "-n", istioNS, "--reuse-values", "--wait", "--timeout", "5m"}
	for _, s := range settings {
		args = append(args, "--set-json", s)
	}
	out, err := e.k.Helm(e.t, e.repo, args...)
	if err != nil {
		return fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	// A replaced istiod-lite's clients reconnect after its rollout: what
	// comes next must find them connected.
	e.k.Healthy(e.t, 5*time.Minute)
	return nil
}

// withHelmValues sets release values for the rest of the test and puts
// the old ones back when it ends.
func (e *env) withHelmValues(release, chart string, values map[string]string) {
	e.t.Helper()
	var set, restore []string
	for path, v := range values {
		restore = append(restore, path+"="+e.helmValue(release, path))
		set = append(set, path+"="+v)
	}
	e.t.Cleanup(func() {
		if err := e.helmSet(release, chart, restore...); err != nil {
			e.t.Errorf("restoring %s: %v", release, err)
		}
	})
	if err := e.helmSet(release, chart, set...); err != nil {
		e.t.Fatal(err)
	}
}

// ztunnelDump is the certificates part of a ztunnel's /config_dump.
type ztunnelDump struct {
	Certificates []struct {
		Identity string    `json:"identity"`
		State    string    `json:"state"`
		Serial   string    `json:"serialNumber"`
		NotAfter time.Time `json:"expirationTime"`
	} `json:"certificates"`
}

// ztunnelDump reads the /config_dump of the ztunnel on node (its admin
// endpoint listens on the pod's loopback: through a port-forward).
func (e *env) ztunnelDump(node string) ztunnelDump {
	e.t.Helper()
	return e.dumpAt(e.ztunnelAdmin(node))
}

// ztunnelAdmin forwards a local port to the admin endpoint of the ztunnel
// on node, for the rest of the test, and returns its address.
func (e *env) ztunnelAdmin(node string) string {
	e.t.Helper()
	return e.k.PortForward(e.t, istioNS, e.k.PodOn(e.t, istioNS, "app=ztunnel", node), 15000)
}

func (e *env) dumpAt(addr string) ztunnelDump {
	e.t.Helper()
	resp, err := http.Get("http://" + addr + "/config_dump")
	if err != nil {
		e.t.Fatalf("ztunnel config_dump: %v", err)
	}
	defer resp.Body.Close()
	var d ztunnelDump
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		e.t.Fatalf("ztunnel config_dump: %v", err)
	}
	return d
}

// metric reads the value of a counter or gauge (the sum of its series)
// from a Prometheus text exposition.
func metric(text, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.eE+-]+)$`)
	var v float64
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		f, _ := strconv.ParseFloat(m[2], 64)
		v += f
	}
	return v
}

// istiodMetrics reads istiod-lite's /metrics through the apiserver.
func (e *env) istiodMetrics() string {
	e.t.Helper()
	pod := e.k.Must("-n", istioNS, "get", "pods", "-l", "app=istiod", "--field-selector", "status.phase=Running", "-o", "jsonpath={.items[0].metadata.name}")
	return e.k.Must("get", "--raw", "/api/v1/namespaces/"+istioNS+"/pods/"+pod+":15014/proxy/metrics")
}

// canReach reports whether a toolbox pod of the mesh namespace gets an
// answer from url.
func (e *env) canReach(pod, url string) bool {
	_, err := e.k.Run("-n", e.ns, "exec", pod, "--", "echo-app", "get", "-timeout", "3s", url)
	return err == nil
}

// eventually retries cond every second until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Second)
	}
}

// denyPolicy is the AuthorizationPolicy the scenarios use to show policy
// at work: echo refuses the service account "denied" of the namespace.
func (e *env) denyPolicy() string {
	return kubetest.DenyEcho(e.ns, "deny-denied", td+"/ns/"+e.ns+"/sa/denied")
}
