package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// cniAgentRestart takes the CNI node agent off the second node (a node
// selector on its DaemonSet, which also restarts the first node's agent),
// creates a pod there while it is away, and brings it back (which
// restarts both again). Throughout, pods on both nodes send requests to
// the echo Service, and a pod whose service account a DENY policy names
// sends them too: if any pod left the mesh, its requests would get
// through in plaintext. The pod created meanwhile runs with the same
// service account: once the agent is back it must be enrolled (annotated,
// and refused by the policy, which only the mesh can do).
func cniAgentRestart(t *testing.T) {
	e := newEnv(t, "cni")
	e.serviceAccounts("denied")
	e.k.Apply(e.denyPolicy())
	url := "http://" + e.echo(e.ns) + "/cni"
	outside := "http://" + e.echo(e.out) + "/outside"
	dur := profile.pick(150*time.Second, 90*time.Second)
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	// The denied pod's load is refused from the start: no warm-up.
	e.load("denied", e.nodes[1], "denied", url, "-mode", "new", "-rate", "10", "-conns", "1", "-timeout", "3s", "-duration", durationArg(dur+60*time.Second))
	e.measuring(append(loads, "denied")...)

	node := e.nodes[1]
	const ds = "ds/istio-cni-node"
	orig := e.k.Must("-n", istioNS, "get", ds, "-o", "jsonpath={.spec.template.spec.nodeSelector}")
	restore := `[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]`
	if orig != "" {
		restore = `[{"op":"replace","path":"/spec/template/spec/nodeSelector","value":` + orig + `}]`
	}
	restored := false
	start := time.Now()
	put := func() {
		if !restored {
			e.k.Run("-n", istioNS, "patch", ds, "--type=json", "-p", restore)
			restored = true
		}
		e.k.Run("-n", istioNS, "rollout", "status", ds, "--timeout=180s")
	}
	t.Cleanup(put)
	e.k.Must("-n", istioNS, "patch", ds, "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":%q}}}}}`, e.nodes[0]))
	e.k.Must("-n", istioNS, "rollout", "status", ds, "--timeout=180s")
	e.k.Eventually(t, 2*time.Minute, func(s string) bool { return s == "" },
		"-n", istioNS, "get", "pods", "-l", "app=istio-cni-node", "--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[*].metadata.name}")
	t.Logf("node agent away from %s", node)

	e.k.Apply(kubetest.Toolbox(e.ns, "late", node, "denied"))
	// It cannot start without the agent (the plugin answers "try again").
	time.Sleep(10 * time.Second) // time for it to try, not a wait for something
	phaseAway := e.k.Must("-n", e.ns, "get", "pod", "late", "-o", "jsonpath={.status.phase}")

	put()
	t.Logf("node agent back on %s", node)
	e.k.Must("-n", e.ns, "wait", "--for=condition=Ready", "pod/late", "--timeout=180s")
	annotated := eventually(60*time.Second, func() bool {
		out, _ := e.k.Run("-n", e.ns, "get", "pod", "late", "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
		return out == "enabled"
	})
	// Refused by the DENY policy: its requests went through the mesh.
	refused := eventually(60*time.Second, func() bool { return !e.canReach("late", url) })
	// And it is refused by the policy, not cut off: others still answer it.
	reachesOutside := eventually(60*time.Second, func() bool {
		_, err := e.k.Run("-n", e.ns, "exec", "late", "--", "echo-app", "get", "-timeout", "3s", outside)
		return err == nil
	})
	lost := 0
	for _, p := range append(e.k.Pods(e.ns, "app=echo"), e.k.Pods(e.ns, "app=load")...) {
		out, _ := e.k.Run("-n", e.ns, "get", "pod", p.Name, "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
		if out != "enabled" {
			lost++
			t.Errorf("pod %s lost its enrolment (annotation %q)", p.Name, out)
		}
	}

	rs := e.results(dur+3*time.Minute, append(loads, "denied")...)
	failed, total := sum(rs, loads...)
	// Counted from the first restart: before, the policy may still have
	// been on its way.
	deniedOK, deniedAll := rs["denied"].OKWithin(start.UnixMilli(), time.Now().UnixMilli())
	e.figure("requests failed %d of %d while the node agents restarted (%s; %s); requests the policy denies answered %d of %d; pods that lost their enrolment %d; pod created while the agent was away: %s then, enrolled after %v, refused by policy %v",
		failed, total, rs[loads[0]].Summary(), rs[loads[1]].Summary(), deniedOK, deniedAll, lost, phaseAway, annotated, refused && reachesOutside)
	if failed != 0 {
		t.Errorf("%d of %d requests failed; %s", failed, total, e.explainFailures(rs, loads))
	}
	if deniedOK != 0 || deniedAll == 0 {
		t.Errorf("%d of %d requests of a denied client were answered: a pod left the mesh", deniedOK, deniedAll)
	}
	if phaseAway == "Running" {
		t.Errorf("a pod started on %s while its node agent was away", node)
	}
	if !annotated || !refused || !reachesOutside {
		t.Errorf("the pod created while the agent was away: annotated %v, refused by the policy %v, reaches a listener outside the mesh %v; want all", annotated, refused, reachesOutside)
	}
}
