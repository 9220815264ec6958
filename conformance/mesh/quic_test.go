package mesh

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

const quicNS = "skiff-e2e-quic"

// TestQUIC checks HBONE's transport as the chart installs it (its
// default, hboneTransport auto): pod traffic between the nodes goes over
// QUIC once the destination's ztunnel advertised it, a waypoint is
// reached over QUIC and serves its HTTPRoute, and with UDP 15008 dropped
// between the nodes every connection still succeeds, over TCP. The
// transport is read from the label ztunnel adds to Istio's connection
// metrics.
//
// A rule that blocks UDP between the nodes is what the last part adds;
// one that a killed run left behind is removed first, or QUIC would look
// broken on the cluster.
func TestQUIC(t *testing.T) {
	c := setUp(t)
	k := c.kubectl
	for _, node := range []string{"skiff-node1", "skiff-node2"} {
		if ns, err := os.Open("/run/netns/" + node); err == nil {
			if err := inpodtest.ClearDropUDP(ns); err != nil {
				t.Errorf("clearing a UDP drop rule left on %s: %v", node, err)
			}
			ns.Close()
		}
	}
	k.Run("delete", "namespace", quicNS, "--ignore-not-found", "--wait=true", "--timeout=120s")
	k.Apply(quicManifests())
	k.Must("-n", quicNS, "rollout", "status", "deploy/echo", "--timeout=180s")
	k.Must("-n", quicNS, "wait", "--for=condition=Ready", "pod/client", "--timeout=180s")
	const clientNode = "skiff-node1"
	remote := podOffNode(t, k.Pods(quicNS, "app=echo"), clientNode)
	src := "spiffe://" + td + "/ns/" + quicNS + "/sa/client"

	// get runs one request from the client, a connection of its own.
	get := func(url string) (string, error) {
		return k.Run("-n", quicNS, "exec", "client", "--", "echo-app", "get", "-timeout", "5s", url)
	}
	// opened finds the connections the client's ztunnel opened to the
	// identity dst over transport.
	opened := func(t *testing.T, dst, transport string) bool {
		t.Helper()
		m := c.ztunnelMetrics(t, clientNode)
		re := regexp.MustCompile(`istio_tcp_connections_opened_total\{[^}]*destination_principal="` + regexp.QuoteMeta(dst) +
			`"[^}]*reporter="source"[^}]*source_principal="` + regexp.QuoteMeta(src) + `"[^}]*transport="` + transport + `"`)
		return re.MatchString(m)
	}
	// untilQUIC makes requests to url, every one of which must succeed,
	// until the client's ztunnel reports a QUIC connection to dst. The
	// first request goes over TCP and brings the advertisement; a ztunnel
	// being replaced (an install that just upgraded Skiff) may make QUIC
	// fail for its first half minute, and TCP carry the requests.
	untilQUIC := func(t *testing.T, url, want, dst string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for i := 1; ; i++ {
			out, err := get(url)
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("request %d to %s: %v\n%s", i, url, err, out)
			}
			if i >= 5 && opened(t, dst, "quic") {
				t.Logf("QUIC reported after %d requests", i)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %d requests the client's ztunnel reports no QUIC connection to %s:\n%s", i, dst,
					grepLines(c.ztunnelMetrics(t, clientNode), "istio_tcp_connections_opened_total"))
			}
		}
	}

	t.Run("pod traffic across the nodes goes over QUIC", func(t *testing.T) {
		dst := "spiffe://" + td + "/ns/" + quicNS + "/sa/echo"
		untilQUIC(t, fmt.Sprintf("http://%s:8080/quic", remote.IP), "pod="+remote.Name+"\n", dst)
	})

	t.Run("a waypoint reached over QUIC serves an HTTPRoute", func(t *testing.T) {
		k.Apply(quicWaypointManifests())
		k.Must("-n", quicNS, "wait", "--for=condition=Programmed", "gateway/waypoint", "--timeout=180s")
		k.Must("-n", quicNS, "rollout", "status", "deploy/waypoint", "--timeout=180s")
		// The route's filter shows in the answer once the waypoint has it.
		k.Eventually(t, 90*time.Second, func(s string) bool { return strings.Contains(s, "header.X-Transport-Test=quic") },
			"-n", quicNS, "exec", "client", "--", "echo-app", "get", "-timeout", "5s", "http://routed/")
		wp := "spiffe://" + td + "/ns/" + quicNS + "/sa/waypoint"
		untilQUIC(t, "http://routed/", "header.X-Transport-Test=quic", wp)
	})

	t.Run("with UDP 15008 dropped between the nodes, TCP and no failed connection", func(t *testing.T) {
		for _, node := range []string{"skiff-node1", "skiff-node2"} {
			ns, err := os.Open("/run/netns/" + node)
			if err != nil {
				t.Skipf("node network namespace %s: %v", node, err)
			}
			defer ns.Close()
			inpodtest.DropUDP(t, ns, inpod.InboundHBONEPort)
		}
		// Destinations the client's ztunnel holds no QUIC connection to
		// (one open before the drop would be cut, not refused).
		k.Apply(kubetest.Echo(quicNS, 2, "echo-blocked"))
		k.Must("-n", quicNS, "rollout", "status", "deploy/echo", "--timeout=180s")
		fresh := newPodOffNode(t, k, clientNode, remote.Name)
		dst := "spiffe://" + td + "/ns/" + quicNS + "/sa/echo-blocked"
		url := fmt.Sprintf("http://%s:8080/blocked", fresh.IP)
		for i := range 8 {
			start := time.Now()
			out, err := get(url)
			if err != nil || !strings.Contains(out, "pod="+fresh.Name+"\n") {
				t.Errorf("request %d to %s failed: %v\n%s", i+1, fresh.Name, err, out)
			}
			// The second request is the first to try QUIC: it carries
			// the fallback delay (reported, never asserted).
			t.Logf("request %d took %v", i+1, time.Since(start).Round(time.Millisecond))
		}
		m := c.ztunnelMetrics(t, clientNode)
		if !opened(t, dst, "tcp") || opened(t, dst, "quic") {
			t.Errorf("connections to %s: want TCP only:\n%s", dst, grepLines(m, "echo-blocked"))
		}
		failed := regexp.MustCompile(`istio_tcp_connections_opened_total\{[^}]*destination_principal="` + regexp.QuoteMeta(dst) + `"[^}]*response_flags="CONNECT"`)
		if failed.MatchString(m) {
			t.Errorf("failed connections to %s reported:\n%s", dst, grepLines(m, "echo-blocked"))
		}
	})

	if !t.Failed() {
		k.Run("delete", "namespace", quicNS, "--wait=false")
	}
}

// podOffNode returns a pod not on node.
func podOffNode(t *testing.T, pods []kubetest.Pod, node string) kubetest.Pod {
	t.Helper()
	p, ok := findOffNode(pods, node, "")
	if !ok {
		t.Fatalf("no pod off %s among %v", node, pods)
	}
	return p
}

// findOffNode returns a pod not on node and not named except.
func findOffNode(pods []kubetest.Pod, node, except string) (kubetest.Pod, bool) {
	for _, p := range pods {
		if p.Node != node && p.Name != except {
			return p, true
		}
	}
	return kubetest.Pod{}, false
}

// newPodOffNode returns a ready echo pod of the current rollout that runs
// off node and is not old. The spread constraint counts the old pods while
// they terminate, so a rollout can leave both new pods on node; then one
// of them is deleted, and its replacement can only go to the other node.
func newPodOffNode(t *testing.T, k *kubetest.Kubectl, node, old string) kubetest.Pod {
	t.Helper()
	pods := k.Pods(quicNS, "app=echo")
	if p, ok := findOffNode(pods, node, old); ok {
		return p
	}
	for _, p := range pods {
		if p.Node == node {
			k.Must("-n", quicNS, "delete", "pod", p.Name, "--wait=false")
			break
		}
	}
	var name string
	k.Eventually(t, 3*time.Minute, func(out string) bool {
		for _, l := range strings.Split(out, "\n") {
			// name, then the deletion timestamp of a pod that terminates
			if f := strings.Fields(l); len(f) == 1 && f[0] != old {
				name = f[0]
				return true
			}
		}
		return false
	}, "-n", quicNS, "get", "pods", "-l", "app=echo", "--field-selector", "spec.nodeName!="+node,
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`)
	k.Must("-n", quicNS, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=180s")
	for _, p := range k.Pods(quicNS, "app=echo") {
		if p.Name == name && p.Node != node {
			return p
		}
	}
	t.Fatalf("echo pod %s is gone or runs on %s", name, node)
	return kubetest.Pod{}
}

func quicManifests() string {
	return `apiVersion: v1
kind: Namespace
metadata:
  name: ` + quicNS + `
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ` + quicNS + `}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo-blocked, namespace: ` + quicNS + `}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ` + quicNS + `}
---
` + kubetest.Echo(quicNS, 2, "echo") + `---
` + kubetest.Client(quicNS, "skiff-node1", "client")
}

// quicWaypointManifests: a waypoint for the Service routed (the echo
// pods), and an HTTPRoute on it that sets a header.
func quicWaypointManifests() string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: ` + quicNS + `
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Service
metadata:
  name: routed
  namespace: ` + quicNS + `
  labels: {istio.io/use-waypoint: waypoint}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: routed, namespace: ` + quicNS + `}
spec:
  parentRefs:
  - {group: "", kind: Service, name: routed, port: 80}
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Transport-Test, value: quic}]
    backendRefs:
    - {name: routed, port: 80}
`
}
