package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// churnRounds is how many times the echo Deployment is replaced.
const churnRounds = 3

// podChurn replaces the echo pods (rollout restart, churnRounds times)
// while pods of the mesh on both nodes send requests to the echo Service,
// and a pod outside the mesh does too. An ALLOW policy admits only the
// mesh clients' identity, so that a new pod answering the outside pod
// would be one that served before its rules and policy were in place; and
// a request sent to a deleted pod's address would fail. The figures:
// failed mesh requests, and answered outside requests (both 0).
func podChurn(t *testing.T) {
	e := newEnv(t, "churn")
	e.k.Apply(fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: %[1]s}
spec:
  selector:
    matchLabels: {app: echo}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["%[2]s/ns/%[1]s/sa/client"]
`, e.ns, td))
	ip := e.echo(e.ns)
	url := "http://" + ip + "/churn"

	dur := profile.pick(150*time.Second, 90*time.Second)
	loads := e.loadOnNodes("load", url, newConns(dur)...)
	// The outside client (no identity) is refused from the start.
	e.k.Apply(kubetest.LoadPod(e.out, "outside", e.nodes[1], "", url, "-mode", "new", "-rate", "10", "-conns", "1", "-timeout", "3s", "-duration", durationArg(dur)))
	e.measuring(loads...)
	e.k.WaitMeasuring(t, e.out, "outside", 3*time.Minute)

	seen := map[string]bool{}
	for _, p := range e.k.Pods(e.ns, "app=echo") {
		seen[p.Name] = true
	}
	start := time.Now()
	for range churnRounds {
		e.k.Must("-n", e.ns, "rollout", "restart", "deploy/echo")
		e.k.Must("-n", e.ns, "rollout", "status", "deploy/echo", "--timeout=180s")
	}
	churned := time.Since(start)
	var created []string
	for _, p := range e.k.Pods(e.ns, "app=echo") {
		if !seen[p.Name] {
			created = append(created, p.Name)
		}
	}
	t.Logf("echo replaced %d times in %.1fs; pods now %v", churnRounds, churned.Seconds(), created)

	end := time.Now()
	rs := e.results(dur+2*time.Minute, loads...)
	// Counted from the first replacement: before, the policy may still
	// have been on its way.
	outside := e.k.LoadResult(t, e.out, "outside", dur+2*time.Minute)
	outsideOK, outsideAll := outside.OKWithin(start.UnixMilli(), end.UnixMilli())
	failed, total := sum(rs, loads...)
	answeredBy := map[string]int{}
	for _, n := range loads {
		for p, c := range rs[n].Pods {
			answeredBy[p] += c
		}
	}
	e.figure("mesh requests failed %d of %d while echo was replaced %d times (%d pods answered: %v; %s; %s); requests from outside the mesh answered %d of %d",
		failed, total, churnRounds, len(answeredBy), answeredBy, rs[loads[0]].Summary(), rs[loads[1]].Summary(), outsideOK, outsideAll)
	if failed != 0 {
		t.Errorf("%d of %d mesh requests failed; %s", failed, total, e.explainFailures(rs, loads))
	}
	if outsideOK != 0 || outsideAll == 0 {
		// Which pod answered, and when, tells a pod that served before
		// its rules were in place from one that served after they went.
		t.Errorf("%d of %d requests from outside the mesh were answered despite the ALLOW policy (by %v; answered runs, in seconds after the first replacement: %s)",
			outsideOK, outsideAll, outside.Pods, outside.OKRuns(start.UnixMilli()))
	}
	for _, p := range created {
		if answeredBy[p] == 0 {
			t.Logf("pod %s answered no request (created late in the run)", p)
		}
	}
}
