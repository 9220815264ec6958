package reliability

import (
	"strings"
	"testing"
	"time"
)

// controlPlaneOutage scales istiod-lite to zero for two minutes (45 s in
// the short profile) while pods on both nodes send requests to the echo
// Service. Meanwhile a pod is created (it must not get through without its
// identity, and must once istiod-lite is back) and a DENY policy is applied (it must take effect
// when istiod-lite is back). The root certificate must not change across
// the restart, and ztunnel must keep the workload certificates it had.
func controlPlaneOutage(t *testing.T) {
	e := newEnv(t, "outage")
	e.serviceAccounts("late", "denied")
	url := "http://" + e.echo(e.ns) + "/outage"
	e.toolbox("denied", e.nodes[1], "denied")
	if !eventually(90*time.Second, func() bool { return e.canReach("denied", url) }) {
		t.Fatal("the pod with service account denied cannot reach echo before the outage")
	}
	root := e.k.Must("-n", e.ns, "get", "configmap", "istio-ca-root-cert", "-o", `jsonpath={.data.root-cert\.pem}`)
	certsBefore := e.ztunnelSerials(e.nodes[1])

	outage := profile.pick(2*time.Minute, 45*time.Second)
	dur := outage + profile.pick(150*time.Second, 75*time.Second)
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	e.measuring(loads...)

	replicas := e.k.Must("-n", istioNS, "get", "deploy", "istiod", "-o", "jsonpath={.spec.replicas}")
	t.Cleanup(func() {
		e.k.Run("-n", istioNS, "scale", "deploy/istiod", "--replicas="+replicas)
		e.k.Run("-n", istioNS, "rollout", "status", "deploy/istiod", "--timeout=180s")
	})
	e.k.Must("-n", istioNS, "scale", "deploy/istiod", "--replicas=0")
	e.k.Eventually(t, 2*time.Minute, func(s string) bool { return s == "" },
		"-n", istioNS, "get", "pods", "-l", "app=istiod", "-o", "jsonpath={.items[*].metadata.name}")
	down := time.Now()
	t.Logf("istiod-lite is down")

	// A pod created now has no identity until istiod-lite returns.
	e.toolbox("late", e.nodes[1], "late")
	lateDuringOK := e.canReach("late", url)
	e.k.Apply(e.denyPolicy())
	deniedDuringOK := e.canReach("denied", url)
	time.Sleep(time.Until(down.Add(outage))) // the outage itself, not a wait for something

	e.k.Must("-n", istioNS, "scale", "deploy/istiod", "--replicas="+replicas)
	e.k.Must("-n", istioNS, "rollout", "status", "deploy/istiod", "--timeout=180s")
	t.Logf("istiod-lite is back after %.1fs", time.Since(down).Seconds())

	lateServed := eventually(90*time.Second, func() bool { return e.canReach("late", url) })
	policyApplied := eventually(90*time.Second, func() bool { return !e.canReach("denied", url) })
	rootAfter := e.k.Must("-n", e.ns, "get", "configmap", "istio-ca-root-cert", "-o", `jsonpath={.data.root-cert\.pem}`)
	certsAfter := e.ztunnelSerials(e.nodes[1])
	kept := 0
	for id, serial := range certsBefore {
		if certsAfter[id] == serial {
			kept++
		}
	}

	rs := e.results(dur+2*time.Minute, loads...)
	failed, total := sum(rs, loads...)
	e.figure("requests failed %d of %d across a %v outage of istiod-lite and its return (%s; %s); pod created during it: answered while down %v, after return %v; DENY applied during it: in force while down %v, after return %v; root unchanged %v; ztunnel kept %d of %d workload certificates",
		failed, total, outage, rs[loads[0]].Summary(), rs[loads[1]].Summary(), lateDuringOK, lateServed, !deniedDuringOK, policyApplied, root == rootAfter, kept, len(certsBefore))
	if failed != 0 {
		t.Errorf("%d of %d requests failed; %s", failed, total, e.explainFailures(rs, loads))
	}
	if lateDuringOK {
		t.Error("a pod created while istiod-lite was down got an answer before it had an identity")
	}
	if !lateServed {
		t.Error("the pod created during the outage got no answer after istiod-lite returned")
	}
	if !policyApplied {
		t.Error("the DENY policy applied during the outage did not take effect after istiod-lite returned")
	}
	if root == "" || root != rootAfter {
		t.Errorf("the root certificate changed across the restart (or is missing):\nbefore %q\nafter  %q", root, rootAfter)
	}
	if len(certsBefore) == 0 || kept != len(certsBefore) {
		t.Errorf("ztunnel on %s replaced workload certificates across the outage: before %v, after %v", e.nodes[1], certsBefore, certsAfter)
	}
}

// ztunnelSerials returns the serial number of each workload certificate
// of this scenario's namespace that the ztunnel on node holds.
func (e *env) ztunnelSerials(node string) map[string]string {
	e.t.Helper()
	return e.serialsIn(e.ztunnelDump(node))
}

func (e *env) serialsIn(d ztunnelDump) map[string]string {
	out := map[string]string{}
	for _, c := range d.Certificates {
		if c.Serial != "" && strings.Contains(c.Identity, "/ns/"+e.ns+"/") {
			out[c.Identity] = c.Serial
		}
	}
	return out
}
