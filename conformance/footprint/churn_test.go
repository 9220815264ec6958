package footprint

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// churnResult is what the churn did.
type churnResult struct {
	d       time.Duration
	deleted int // pods deleted (and replaced by their Deployments)
	loads   []*kubetest.LoadResult
}

// churn runs the echo app in the mesh with a load pod on every node
// sending it requests (a new connection each), and for d deletes, every
// churnEvery, the oldest pause pod of each node and, when all echo pods
// are ready, the oldest of them.
func churn(t *testing.T, k *kubetest.Kubectl, nodes []string, d time.Duration) churnResult {
	t.Helper()
	r := churnResult{d: d}
	// Echo pods serve on for a while after SIGTERM, as a preStop hook makes
	// them: a request failing here is the mesh's failure, not the app's.
	k.Apply(kubetest.EchoDraining(ns, 2*len(nodes), "", 3*time.Second))
	k.Must("-n", ns, "rollout", "status", "deploy/echo", "--timeout=300s")
	url := "http://" + k.Must("-n", ns, "get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}") + "/footprint"
	var loads []string
	for i, node := range nodes {
		name := fmt.Sprintf("load-%d", i+1)
		k.Apply(kubetest.LoadPod(ns, name, node, "", url, "-mode", "new", "-rate", "20", "-conns", "2",
			"-timeout", "5s", "-duration", fmt.Sprintf("%ds", int(d/time.Second)), "-warmup", "90s"))
		loads = append(loads, name)
	}
	for _, name := range loads {
		k.WaitMeasuring(t, ns, name, 3*time.Minute)
	}
	fmt.Fprintf(os.Stderr, "footprint: churning pods under traffic for %s\n", d)

	tick := time.NewTicker(churnEvery)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		victims := oldest(k, "app=pause", "{.metadata.labels.node}")
		// An echo pod goes only while all of them are ready: deleting
		// faster than the node starts them would leave the Service without
		// endpoints, and measure the node rather than the mesh.
		if allReady(k, "app=echo", 2*len(nodes)) {
			victims = append(victims, oldest(k, "app=echo", "echo")...)
		}
		if len(victims) == 0 {
			continue
		}
		if _, err := k.Run(append([]string{"-n", ns, "delete", "pods", "--wait=false"}, victims...)...); err == nil {
			r.deleted += len(victims)
		}
	}
	for _, name := range loads {
		r.loads = append(r.loads, k.LoadResult(t, ns, name, 5*time.Minute))
	}
	return r
}

// oldest returns, for each group (the value of the jsonpath group, or a
// constant), the oldest pod of the namespace matching selector that is
// not already terminating.
func oldest(k *kubetest.Kubectl, selector, group string) []string {
	out, err := k.Run("-n", ns, "get", "pods", "-l", selector, "--sort-by=.metadata.creationTimestamp", "-o",
		`jsonpath={range .items[*]}{.metadata.name} `+group+` {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || seen[f[1]] { // a third field: terminating
			continue
		}
		seen[f[1]] = true
		names = append(names, f[0])
	}
	return names
}

// allReady reports whether want pods of the namespace match selector, all
// ready and none terminating.
func allReady(k *kubetest.Kubectl, selector string, want int) bool {
	out, err := k.Run("-n", ns, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}`)
	if err != nil {
		return false
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 1 && f[0] == "True" {
			n++
		} else if len(f) > 0 {
			return false
		}
	}
	return n == want
}
