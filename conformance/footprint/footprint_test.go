package footprint

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const ns = "skiff-footprint"

// podCounts are the enrolled pause pods per node the figures are taken at.
var podCounts = []int{0, 10, 100}

// churnDuration is how long pods are replaced under traffic before the
// last figures (SKIFF_FOOTPRINT_CHURN, default 10m).
func churnDuration(t *testing.T) time.Duration {
	return fromEnv(t, "SKIFF_FOOTPRINT_CHURN", 10*time.Minute, "a positive duration such as 10m",
		func(v string) (time.Duration, bool) { d, err := time.ParseDuration(v); return d, err == nil && d > 0 })
}

// churnRounds is how many times the churn and the figures after it are
// repeated (SKIFF_FOOTPRINT_ROUNDS, default 1). Memory that settles after
// the first round and stays there is fragmentation of a heap that is
// reused; memory that rises round after round is a leak.
func churnRounds(t *testing.T) int {
	return fromEnv(t, "SKIFF_FOOTPRINT_ROUNDS", 1, "a positive number of rounds",
		func(v string) (int, bool) { n, err := strconv.Atoi(v); return n, err == nil && n > 0 })
}

// fromEnv is the setting in the environment variable name, parsed by
// parse, or def if it is unset; a value parse refuses fails the test.
func fromEnv[T any](t *testing.T, name string, def T, want string, parse func(string) (T, bool)) T {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	x, ok := parse(v)
	if !ok {
		t.Fatalf("%s=%q: want %s", name, v, want)
	}
	return x
}

// churnEvery is how often one pause pod per node and one echo pod are
// deleted (their Deployments replace them).
const churnEvery = 5 * time.Second

// TestFootprint measures what Skiff costs on every node: ztunnel, the CNI
// node agent and istiod-lite, at 0, 10 and 100 enrolled pods per node and
// again after pods were replaced under traffic for a while. The report
// goes to SKIFF_FOOTPRINT_REPORT (make bench-footprint prints it). It
// fails only on a leak: more file descriptors, network-namespace handles
// or goroutines after the churn than before it, with the same pods.
func TestFootprint(t *testing.T) {
	kubetest.RequireE2E(t)
	k := kubetest.New(t)
	nodes := strings.Fields(k.Must("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"))
	sort.Strings(nodes)
	k.Run("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=300s")
	t.Cleanup(func() { k.DeleteNamespaces(ns) })
	k.Apply(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels: {istio.io/dataplane-mode: ambient}\n", ns))
	for i, node := range nodes {
		k.Apply(pauseDeployment(i+1, node))
	}

	// Pods of other namespaces in the mesh (make demo's, say) stay as they
	// are; they are counted once here and reported.
	others := map[string]int{}
	for _, node := range nodes {
		others[node] = enrolled(t, k, node)
	}
	r := &report{nodes: nodes, settle: settle(t), others: others}
	for _, n := range podCounts {
		scalePause(t, k, nodes, others, n)
		r.phases = append(r.phases, phase{name: fmt.Sprintf("%d pods", n), figures: measure(t, k)})
	}

	d, rounds := churnDuration(t), churnRounds(t)
	for i := range rounds {
		r.churn = append(r.churn, churn(t, k, nodes, d))
		// Back to the same pods as before the churn: 100 pause pods per node.
		k.Must("-n", ns, "delete", "deployment", "echo", "--wait=true", "--timeout=300s")
		k.Must("-n", ns, "delete", "pods", "-l", "app=load", "--wait=true", "--timeout=300s")
		scalePause(t, k, nodes, others, podCounts[len(podCounts)-1])
		name := fmt.Sprintf("%d pods after %s churn", podCounts[len(podCounts)-1], d)
		if rounds > 1 {
			name = fmt.Sprintf("%d pods after %d x %s churn", podCounts[len(podCounts)-1], i+1, d)
		}
		r.phases = append(r.phases, phase{name: name, figures: measure(t, k)})
	}

	out := r.String()
	t.Log("\n" + out)
	if path := os.Getenv("SKIFF_FOOTPRINT_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, after := r.before(), r.phases[len(r.phases)-1]
	// Handles come back exactly; a goroutine or two may be in flight
	// (a timer's, a scrape's) when a sample is taken.
	const goroutineSlack = 2
	for key, a := range after.figures {
		b, ok := before.figures[key]
		if !ok {
			continue
		}
		if a.NetNS > b.NetNS {
			t.Errorf("%s holds %d network-namespace handles after the churn, %d before it, with the same pods", key, a.NetNS, b.NetNS)
		}
		if a.FDs > b.FDs {
			t.Errorf("%s holds %d file descriptors after the churn, %d before it, with the same pods", key, a.FDs, b.FDs)
		}
		if b.Goroutines >= 0 && a.Goroutines > b.Goroutines+goroutineSlack {
			t.Errorf("%s runs %d goroutines after the churn, %d before it, with the same pods", key, a.Goroutines, b.Goroutines)
		}
	}
}

func pauseDeployment(i int, node string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: pause-%[1]d, namespace: %[2]s}
spec:
  replicas: 0
  selector:
    matchLabels: {app: pause, node: "%[1]d"}
  template:
    metadata:
      labels: {app: pause, node: "%[1]d"}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[3]s}
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      containers:
      - name: pause
        image: registry.k8s.io/pause:3.10
        imagePullPolicy: IfNotPresent
        resources:
          requests: {cpu: 1m, memory: 1Mi}
`, i, ns, node)
}

// scalePause sets every node's pause Deployment to n pods and waits until
// the node agents report exactly the namespace's running pods as enrolled,
// beside the others already there.
func scalePause(t *testing.T, k *kubetest.Kubectl, nodes []string, others map[string]int, n int) {
	t.Helper()
	start := time.Now()
	for i := range nodes {
		k.Must("-n", ns, "scale", fmt.Sprintf("deployment/pause-%d", i+1), "--replicas="+strconv.Itoa(n))
	}
	for i := range nodes {
		k.Must("-n", ns, "rollout", "status", fmt.Sprintf("deployment/pause-%d", i+1), "--timeout=15m")
	}
	waitEnrolled(t, k, nodes, others, 10*time.Minute)
	fmt.Fprintf(os.Stderr, "footprint: %d pause pods per node enrolled (%.0fs)\n", n, time.Since(start).Seconds())
}

// waitEnrolled waits until each node's agent counts as enrolled exactly
// the pods of the namespace running on that node plus others[node], and no
// pod of the namespace is terminating.
func waitEnrolled(t *testing.T, k *kubetest.Kubectl, nodes []string, others map[string]int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		want := maps.Clone(others)
		terminating := 0
		out := k.Must("-n", ns, "get", "pods", "-o", `jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}`)
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) == 3:
				terminating++
			case len(f) == 2 && f[1] == "Running":
				want[f[0]]++
			}
		}
		var off []string
		for _, node := range nodes {
			if got := enrolled(t, k, node); got != want[node] {
				off = append(off, fmt.Sprintf("%s: %d enrolled, want %d (%d of other namespaces)", node, got, want[node], others[node]))
			}
		}
		if terminating > 0 {
			off = append(off, fmt.Sprintf("%d pods terminating", terminating))
		}
		if len(off) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not settled after %s: %s", d, strings.Join(off, "; "))
		}
		time.Sleep(2 * time.Second) // polling the apiserver
	}
}

// enrolled is skiff_cni_pods_enrolled of the node agent on node.
func enrolled(t *testing.T, k *kubetest.Kubectl, node string) int {
	t.Helper()
	c := cniAgent
	v, ok := scrape(k, c.ns, k.PodOn(t, c.ns, c.selector, node), c.port)["skiff_cni_pods_enrolled"]
	if !ok {
		return -1
	}
	return int(v)
}

// settle is how long measure lets the processes idle first: longer than
// the Go runtime's forced GC period (2 minutes), so that memory freed by
// the work just done has been collected and given back to the kernel, in
// every phase alike (SKIFF_FOOTPRINT_SETTLE, default 2m10s).
func settle(t *testing.T) time.Duration {
	return fromEnv(t, "SKIFF_FOOTPRINT_SETTLE", 130*time.Second, "a duration such as 2m10s",
		func(v string) (time.Duration, bool) { d, err := time.ParseDuration(v); return d, err == nil && d >= 0 })
}

// Samples of a phase: their median is its figure. They span a minute, the
// period at which the processes return the pages of their binary they are
// not using (--binary-page-release): between two releases the file-backed
// RSS climbs from what was just released back to what runs (from 7 MiB to
// 14 MiB for ztunnel), so a few seconds of samples would report where in
// that cycle the phase happened to fall.
const (
	samples   = 13
	sampleGap = 5 * time.Second
)

// measure takes every Skiff process's figures, after the settle time: the
// median of samples over a minute, so that neither one GC cycle nor one
// page release decides them. Keys are "component node".
func measure(t *testing.T, k *kubetest.Kubectl) map[string]usage {
	t.Helper()
	time.Sleep(settle(t)) // letting the runtime return memory, not waiting for an event
	type proc struct {
		c   component
		pod string
		pid int
	}
	procs := map[string]proc{}
	for _, c := range components {
		for _, p := range k.Pods(c.ns, c.selector) {
			procs[c.name+" "+p.Node] = proc{c, p.Name, podProcess(t, k, c.ns, p.Name)}
		}
	}
	all := map[string][]usage{}
	for i := range samples {
		if i > 0 {
			time.Sleep(sampleGap) // spacing samples, not waiting for an event
		}
		for key, p := range procs {
			u, err := readUsage(p.pid)
			if err != nil {
				t.Fatalf("%s (pod %s, pid %d): %v", key, p.pod, p.pid, err)
			}
			readMetrics(k, p.c, p.pod, &u)
			all[key] = append(all[key], u)
		}
	}
	out := map[string]usage{}
	for key, us := range all {
		out[key] = median(us)
	}
	return out
}

// median is the field-by-field median of us.
func median(us []usage) usage {
	m64 := func(f func(usage) int64) int64 {
		v := make([]int64, len(us))
		for i, u := range us {
			v[i] = f(u)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	mi := func(f func(usage) int) int {
		return int(m64(func(u usage) int64 { return int64(f(u)) }))
	}
	return usage{
		RSS:        m64(func(u usage) int64 { return u.RSS }),
		Anon:       m64(func(u usage) int64 { return u.Anon }),
		File:       m64(func(u usage) int64 { return u.File }),
		Cgroup:     m64(func(u usage) int64 { return u.Cgroup }),
		CgroupFile: m64(func(u usage) int64 { return u.CgroupFile }),
		Binary:     m64(func(u usage) int64 { return u.Binary }),
		Heap:       m64(func(u usage) int64 { return u.Heap }),
		Goroutines: mi(func(u usage) int { return u.Goroutines }),
		Threads:    mi(func(u usage) int { return u.Threads }),
		FDs:        mi(func(u usage) int { return u.FDs }),
		NetNS:      mi(func(u usage) int { return u.NetNS }),
	}
}
