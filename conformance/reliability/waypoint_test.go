package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// waypointRoll runs a waypoint of 2 replicas (istiod chart value
// waypoint.replicas) for the scenario's namespace, and rolls its
// Deployment under steady HTTP load from both nodes: a change of the
// Gateway's parameters (its parametersRef ConfigMap) makes istiod-lite
// give the waypoint pods a new template, as an upgrade of istiod-lite
// does. No request may fail: the waypoint's drain and the default retry
// together must cover it.
func waypointRoll(t *testing.T) {
	e := newEnv(t, "waypoint")
	e.withHelmValues("istiod", "istiod", map[string]string{"waypoint.replicas": "2"})
	e.k.Must("label", "namespace", e.ns, "istio.io/use-waypoint=waypoint", "--overwrite")
	e.k.Apply(fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: waypoint-params, namespace: %[1]s}
data: {rateLimitTimeout: 20ms}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: %[1]s
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  infrastructure:
    parametersRef: {group: "", kind: ConfigMap, name: waypoint-params}
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
`, e.ns))
	e.k.Must("-n", e.ns, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=180s")
	e.k.Eventually(t, 3*time.Minute, func(s string) bool { return s == "2" },
		"-n", e.ns, "get", "deploy", "waypoint", "-o", "jsonpath={.status.readyReplicas}")
	url := "http://" + e.echo(e.ns) + "/waypoint"
	// Requests go through the waypoint before the load starts.
	e.toolbox("probe", e.nodes[0], "client")
	e.k.Eventually(t, 90*time.Second, func(s string) bool { return strings.Contains(s, "header.X-Request-Id=") },
		"-n", e.ns, "exec", "probe", "--", "echo-app", "get", "-timeout", "3s", url)

	dur := profile.pick(120*time.Second, 75*time.Second)
	loads := e.loadOnNodes("http", url, "-mode", "reuse", "-rate", "25", "-conns", "2", "-timeout", "5s", "-duration", durationArg(dur), "-warmup", "90s")
	e.measuring(loads...)

	before := e.k.Must("-n", e.ns, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "-o", "jsonpath={.items[*].metadata.name}")
	start := time.Now()
	e.k.Must("-n", e.ns, "patch", "configmap", "waypoint-params", "--type=merge", "-p", `{"data":{"rateLimitTimeout":"21ms"}}`)
	// The ConfigMap is read when the Gateway is reconciled: touch it.
	e.k.Must("-n", e.ns, "annotate", "gateway", "waypoint", fmt.Sprintf("skiff.dev/reliability-roll=%d", start.Unix()), "--overwrite")
	old := strings.Fields(before)
	e.k.Eventually(t, 4*time.Minute, func(s string) bool {
		f := strings.Fields(s)
		if len(f) != 2 {
			return false
		}
		for _, p := range old {
			if strings.Contains(s, p) {
				return false
			}
		}
		return true
	}, "-n", e.ns, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint", "-o", "jsonpath={.items[*].metadata.name}")
	e.k.Must("-n", e.ns, "rollout", "status", "deploy/waypoint", "--timeout=120s")
	rolled := time.Since(start)
	t.Logf("waypoint rolled in %.1fs (old pods %v gone)", rolled.Seconds(), old)

	rs := e.results(dur+2*time.Minute, loads...)
	failed, total := sum(rs, loads...)
	e.figure("requests failed %d of %d while the 2-replica waypoint rolled (%s; %s)", failed, total, rs[loads[0]].Summary(), rs[loads[1]].Summary())
	if failed != 0 {
		t.Errorf("%d of %d requests failed while the waypoint rolled; %s", failed, total, e.explainFailures(rs, loads))
	}
	for _, n := range loads {
		if rs[n].EndMS < start.Add(rolled).UnixMilli() {
			t.Errorf("load %s ended before the roll did: it does not cover it", n)
		}
	}
}
