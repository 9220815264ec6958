package mesh

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const waypointNS = "skiff-e2e-waypoint"

// TestWaypoint checks the L7 half as a user meets it: a waypoint deployed
// from a Gateway, a namespace bound to it with istio.io/use-waypoint, and
// an HTTPRoute whose weights and header filter take effect for a client in
// the mesh.
//
//	SKIFF_E2E=1 go test ./conformance/mesh -run TestWaypoint -v -timeout 30m
func TestWaypoint(t *testing.T) {
	c := setUp(t)
	k := c.kubectl
	k.Run("delete", "namespace", waypointNS, "--ignore-not-found", "--wait=true", "--timeout=120s")
	k.Apply(waypointManifests())
	k.Must("-n", waypointNS, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=180s")
	k.Must("-n", waypointNS, "rollout", "status", "deploy/waypoint", "--timeout=180s")
	for _, d := range []string{"echo-v1", "echo-v2"} {
		k.Must("-n", waypointNS, "rollout", "status", "deploy/"+d, "--timeout=180s")
	}
	k.Must("-n", waypointNS, "wait", "--for=condition=Ready", "pod/client", "--timeout=180s")

	get := func(t *testing.T, url string, n int) string {
		t.Helper()
		return k.Eventually(t, 90*time.Second, nil, "-n", waypointNS, "exec", "client", "--",
			"echo-app", "get", "-timeout", "5s", "-n", fmt.Sprint(n), url)
	}

	t.Run("requests to a bound service go through the waypoint", func(t *testing.T) {
		out := get(t, "http://echo/plain", 1)
		// The waypoint names the client in the forwarding headers and
		// gives the request an id.
		if !strings.Contains(out, "header.X-Request-Id=") || !strings.Contains(out, "header.Forwarded=for=") {
			t.Fatalf("the answer shows no sign of the waypoint:\n%s", out)
		}
		m := k.Eventually(t, 60*time.Second, func(s string) bool { return strings.Contains(s, `reporter="waypoint"`) },
			"get", "--raw", "/api/v1/namespaces/"+waypointNS+"/pods/"+waypointPod(t, k)+":15020/proxy/metrics")
		want := regexp.MustCompile(`istio_requests_total\{[^}]*destination_service="echo\.` + waypointNS + `\.svc\.cluster\.local"[^}]*reporter="waypoint"[^}]*response_code="200"`)
		if !want.MatchString(m) {
			t.Errorf("no istio_requests_total for echo reported by the waypoint:\n%s", grepLines(m, "istio_requests_total"))
		}
	})

	k.Apply(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-canary, namespace: ` + waypointNS + `}
spec:
  parentRefs:
  - {group: "", kind: Service, name: echo, port: 80}
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
    backendRefs:
    - {name: echo-v2, port: 80}
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Canary, value: e2e}]
    backendRefs:
    - {name: echo-v1, port: 80, weight: 75}
    - {name: echo-v2, port: 80, weight: 25}
`)
	k.Eventually(t, 60*time.Second, func(s string) bool { return strings.Contains(s, "True") },
		"-n", waypointNS, "get", "httproute", "echo-canary", "-o", `jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status}`)

	t.Run("the route's match sends /v2 to v2 only", func(t *testing.T) {
		k.Eventually(t, 60*time.Second, func(s string) bool { return strings.Count(s, "pod=echo-v2-") == 10 },
			"-n", waypointNS, "exec", "client", "--", "echo-app", "get", "-timeout", "5s", "-n", "10", "http://echo/v2/x")
	})

	t.Run("weights split and the header filter applies", func(t *testing.T) {
		// Wait for the route to take effect, then count.
		k.Eventually(t, 60*time.Second, func(s string) bool { return strings.Contains(s, "header.X-Canary=e2e") },
			"-n", waypointNS, "exec", "client", "--", "echo-app", "get", "-timeout", "5s", "http://echo/w")
		const n = 200
		out := get(t, "http://echo/w", n)
		v1, v2 := strings.Count(out, "pod=echo-v1-"), strings.Count(out, "pod=echo-v2-")
		if v1+v2 != n || strings.Count(out, "header.X-Canary=e2e") != n {
			t.Fatalf("%d answers from v1, %d from v2, %d with the header, want %d in all", v1, v2, strings.Count(out, "header.X-Canary=e2e"), n)
		}
		// 25% of 200: 50 expected, and outside [25, 80] has a probability
		// far below one in a million.
		if v2 < 25 || v2 > 80 {
			t.Errorf("v2 answered %d of %d requests, want about 25%%", v2, n)
		}
		t.Logf("weights 75/25: v1 %d, v2 %d of %d", v1, v2, n)
	})

	t.Run("a RateLimitPolicy on the route answers 429 with its fields", func(t *testing.T) {
		k.Apply(`apiVersion: policy.skiff.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: echo-limit, namespace: ` + waypointNS + `}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-canary}
  limit: {requests: 3, unit: Minute}
`)
		k.Eventually(t, 60*time.Second, func(s string) bool { return strings.Contains(s, "True") },
			"-n", waypointNS, "get", "ratelimitpolicy", "echo-limit", "-o", `jsonpath={.status.ancestors[0].conditions[?(@.type=="Accepted")].status}`)
		// Three a minute: a burst of six meets the limit within a few
		// tries, once the waypoint has the policy.
		const policy = `"` + waypointNS + `/echo-limit"`
		var allowed, limited string
		k.Eventually(t, 90*time.Second, func(out string) bool {
			for _, a := range strings.Split(out, "status=")[1:] {
				switch {
				case strings.HasPrefix(a, "200\n") && strings.Contains(a, "response.Ratelimit="+policy):
					allowed = a
				case strings.HasPrefix(a, "429\n"):
					limited = a
				}
			}
			return limited != ""
		}, "-n", waypointNS, "exec", "client", "--", "echo-app", "get", "-include", "-timeout", "5s", "-n", "6", "http://echo/limited")
		for _, want := range []string{"response.Retry-After=", "response.Ratelimit-Policy=" + policy + ";q=3;w=60", "response.Ratelimit=" + policy + ";r=0;t="} {
			if !strings.Contains(limited, want) {
				t.Errorf("the 429 answer lacks %s:\n%s", want, limited)
			}
		}
		if allowed == "" {
			t.Error("no allowed answer carried the RateLimit field")
		}
		m := k.Must("get", "--raw", "/api/v1/namespaces/"+waypointNS+"/pods/"+waypointPod(t, k)+":15020/proxy/metrics")
		for _, re := range []string{
			`istio_requests_total\{[^}]*destination_service="echo\.` + waypointNS + `[^}]*response_code="429"`,
			`skiff_rate_limited_requests_total\{[^}]*policy="` + waypointNS + `/echo-limit"`,
		} {
			if !regexp.MustCompile(re).MatchString(m) {
				t.Errorf("no series matches %s:\n%s", re, grepLines(m, "429")+grepLines(m, "skiff_rate_limited"))
			}
		}
	})

	if !t.Failed() {
		k.Run("delete", "namespace", waypointNS, "--wait=false")
	}
}

func waypointPod(t *testing.T, k *kubetest.Kubectl) string {
	t.Helper()
	return k.Must("-n", waypointNS, "get", "pods", "-l", "gateway.networking.k8s.io/gateway-name=waypoint",
		"-o", "jsonpath={.items[0].metadata.name}")
}

func waypointManifests() string {
	echo := func(version string) string {
		return `apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-` + version + `, namespace: ` + waypointNS + `}
spec:
  replicas: 1
  selector:
    matchLabels: {app: echo, version: ` + version + `}
  template:
    metadata:
      labels: {app: echo, version: ` + version + `}
    spec:
      serviceAccountName: echo
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: skiff.local/echo:dev
        imagePullPolicy: IfNotPresent
        args: [serve, -listen, ":8080"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
---
apiVersion: v1
kind: Service
metadata: {name: echo-` + version + `, namespace: ` + waypointNS + `}
spec:
  selector: {app: echo, version: ` + version + `}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
`
	}
	return `apiVersion: v1
kind: Namespace
metadata:
  name: ` + waypointNS + `
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: ` + waypointNS + `
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ` + waypointNS + `}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ` + waypointNS + `}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ` + waypointNS + `}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
` + echo("v1") + echo("v2") + kubetest.Client(waypointNS, "skiff-node1", "client")
}
