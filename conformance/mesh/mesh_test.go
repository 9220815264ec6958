// Package mesh holds the end-to-end test of Skiff as a user runs it: the
// local cluster (conformance/cluster), Skiff's images loaded into its nodes,
// Skiff installed from its Helm charts, a namespace enrolled with
// istio.io/dataplane-mode=ambient, and real traffic between its pods.
package mesh

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const (
	meshNS    = "skiff-e2e"
	outsideNS = "skiff-e2e-outside"
	td        = "cluster.local"
)

// TestMesh installs Skiff on the local cluster (bringing the cluster up, or
// reusing it) and checks what a user of the mesh sees. It leaves the
// cluster and Skiff installed; the test's namespaces are removed when it
// passed.
//
//	SKIFF_E2E=1 go test ./conformance/mesh -run TestMesh -v -timeout 30m
func TestMesh(t *testing.T) {
	c := setUp(t)

	c.kubectl.Run("delete", "namespace", meshNS, outsideNS, "--ignore-not-found", "--wait=true", "--timeout=120s")
	c.kubectl.Apply(manifests())
	c.kubectl.Must("-n", meshNS, "rollout", "status", "deploy/echo", "--timeout=180s")
	for _, p := range []string{meshNS + "/client", outsideNS + "/client"} {
		ns, name, _ := strings.Cut(p, "/")
		c.kubectl.Must("-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=180s")
	}
	clientIP := c.kubectl.Must("-n", meshNS, "get", "pod", "client", "-o", "jsonpath={.status.podIP}")
	outsideIP := c.kubectl.Must("-n", outsideNS, "get", "pod", "client", "-o", "jsonpath={.status.podIP}")
	echoPods := c.kubectl.Pods(meshNS, "app=echo")
	if len(echoPods) != 2 || echoPods[0].Node == echoPods[1].Node {
		t.Fatalf("want 2 echo pods on different nodes, got %v", echoPods)
	}

	t.Run("enrolled pods are annotated", func(t *testing.T) {
		for _, p := range append(echoPods, kubetest.Pod{Name: "client"}) {
			got := c.kubectl.Eventually(t, 60*time.Second, func(out string) bool { return out == "enabled" },
				"-n", meshNS, "get", "pod", p.Name, "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
			if got != "enabled" {
				t.Errorf("pod %s: ambient.istio.io/redirection=%q, want enabled", p.Name, got)
			}
		}
		got, _ := c.kubectl.Run("-n", outsideNS, "get", "pod", "client", "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
		if got != "" {
			t.Errorf("pod outside the mesh annotated %q", got)
		}
	})

	t.Run("mesh to mesh over mutual TLS, across nodes, source address kept", func(t *testing.T) {
		nodes := map[string]bool{}
		for _, p := range echoPods {
			out := c.kubectl.Eventually(t, 60*time.Second, nil, "-n", meshNS, "exec", "client", "--",
				"echo-app", "get", fmt.Sprintf("http://%s:8080/direct", p.IP))
			if !strings.Contains(out, "pod="+p.Name+"\n") {
				t.Errorf("GET pod %s: unexpected answer:\n%s", p.Name, out)
			}
			// The application sees the client pod's own address, as it
			// does without the mesh.
			if !strings.Contains(out, "remote="+clientIP+":") {
				t.Errorf("GET pod %s: the app saw a source other than the client %s:\n%s", p.Name, clientIP, out)
			}
			nodes[p.Node] = true
		}
		// Both ztunnels reported the connection as mutual TLS between the
		// two SPIFFE identities.
		src := "spiffe://" + td + "/ns/" + meshNS + "/sa/client"
		dst := "spiffe://" + td + "/ns/" + meshNS + "/sa/echo"
		for node := range nodes {
			m := c.ztunnelMetrics(t, node)
			want := regexp.MustCompile(`istio_tcp_connections_opened_total\{[^}]*connection_security_policy="mutual_tls"[^}]*destination_principal="` +
				regexp.QuoteMeta(dst) + `"[^}]*reporter="destination"[^}]*source_principal="` + regexp.QuoteMeta(src) + `"`)
			if !want.MatchString(m) {
				t.Errorf("ztunnel on %s: no mutual_tls connection from %s to %s reported:\n%s", node, src, dst, grepLines(m, "istio_tcp_connections_opened_total"))
			}
		}
	})

	t.Run("mesh to Service by name", func(t *testing.T) {
		seen := map[string]bool{}
		deadline := time.Now().Add(60 * time.Second)
		for len(seen) < 2 && time.Now().Before(deadline) {
			out, err := c.kubectl.Run("-n", meshNS, "exec", "client", "--", "echo-app", "get", "-timeout", "3s", "http://echo/svc")
			if m := regexp.MustCompile(`pod=(\S+)`).FindStringSubmatch(out); err == nil && m != nil {
				seen[m[1]] = true
			}
		}
		if len(seen) < 2 {
			t.Errorf("http://echo/ answered by %v, want both replicas", seen)
		}
	})

	t.Run("outside the mesh to mesh (plaintext inbound)", func(t *testing.T) {
		out := c.kubectl.Eventually(t, 60*time.Second, nil, "-n", outsideNS, "exec", "client", "--",
			"echo-app", "get", fmt.Sprintf("http://echo.%s/", meshNS))
		if !strings.Contains(out, "remote="+outsideIP+":") {
			t.Errorf("the app saw a source other than the outside client %s:\n%s", outsideIP, out)
		}
	})

	t.Run("DENY policy refuses, deleting it restores", func(t *testing.T) {
		c.kubectl.Apply(kubetest.DenyEcho(meshNS, "deny-client", td+"/ns/"+meshNS+"/sa/client"))
		target := fmt.Sprintf("http://%s:8080/deny", echoPods[0].IP)
		c.kubectl.Eventually(t, 60*time.Second, nil, "-n", meshNS, "exec", "client", "--",
			"sh", "-c", "! echo-app get -timeout 3s "+target)
		// Callers the policy does not name still get through.
		c.kubectl.Eventually(t, 30*time.Second, nil, "-n", outsideNS, "exec", "client", "--",
			"echo-app", "get", "-timeout", "3s", target)

		c.kubectl.Must("-n", meshNS, "delete", "authorizationpolicy", "deny-client")
		c.kubectl.Eventually(t, 60*time.Second, nil, "-n", meshNS, "exec", "client", "--",
			"echo-app", "get", "-timeout", "3s", target)
	})

	t.Run("removing the namespace label takes pods out of the mesh", func(t *testing.T) {
		c.kubectl.Must("label", "namespace", meshNS, "istio.io/dataplane-mode-")
		for _, p := range echoPods {
			c.kubectl.Eventually(t, 60*time.Second, func(out string) bool { return out == "" },
				"-n", meshNS, "get", "pod", p.Name, "-o", `jsonpath={.metadata.annotations.ambient\.istio\.io/redirection}`)
		}
		out := c.kubectl.Eventually(t, 60*time.Second, nil, "-n", meshNS, "exec", "client", "--",
			"echo-app", "get", fmt.Sprintf("http://%s:8080/unlabelled", echoPods[1].IP))
		if !strings.Contains(out, "remote="+clientIP+":") {
			t.Errorf("after un-enrolment: unexpected answer:\n%s", out)
		}
		c.kubectl.Must("label", "namespace", meshNS, "istio.io/dataplane-mode=ambient")
	})

	if !t.Failed() {
		c.kubectl.Run("delete", "namespace", meshNS, outsideNS, "--wait=false")
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func manifests() string {
	return `apiVersion: v1
kind: Namespace
metadata:
  name: ` + meshNS + `
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Namespace
metadata:
  name: ` + outsideNS + `
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ` + meshNS + `}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ` + meshNS + `}
---
` + kubetest.Echo(meshNS, 2, "echo") + `---
` + kubetest.Client(meshNS, "skiff-node1", "client") + `---
` + kubetest.Client(outsideNS, "skiff-node1", "")
}
