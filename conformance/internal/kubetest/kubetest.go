// Package kubetest is what the end-to-end suites share to drive the local
// cluster: kubectl with the cluster's kubeconfig, and the test apps'
// manifests.
package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StateDir is the local cluster's state directory (conformance/cluster/lib.sh).
func StateDir() string {
	if s := os.Getenv("SKIFF_STATE"); s != "" {
		return s
	}
	return "/var/lib/skiff-cluster"
}

// RequireE2E skips the test unless SKIFF_E2E=1, and fails it when not root.
func RequireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("SKIFF_E2E") != "1" {
		t.Skip("end-to-end test: set SKIFF_E2E=1 to bring up (or reuse) the local cluster and run it (needs root)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("SKIFF_E2E=1 needs root: the local cluster uses network namespaces, mounts and cgroups")
	}
}

// Kubectl runs the cluster's kubectl against its admin kubeconfig.
type Kubectl struct {
	T        *testing.T
	Bin, Cfg string
}

// New returns the kubectl of the local cluster.
func New(t *testing.T) *Kubectl {
	return &Kubectl{T: t, Bin: filepath.Join(StateDir(), "bin", "kubectl"), Cfg: filepath.Join(StateDir(), "kubeconfig")}
}

// Run runs kubectl and returns its combined, trimmed output.
func (k *Kubectl) Run(args ...string) (string, error) {
	cmd := exec.Command(k.Bin, append([]string{"--kubeconfig", k.Cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Must runs kubectl and fails the test when it fails.
func (k *Kubectl) Must(args ...string) string {
	k.T.Helper()
	out, err := k.Run(args...)
	if err != nil {
		k.T.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Eventually retries kubectl until it succeeds and its output satisfies ok
// (when given), failing t after d: the cluster converges asynchronously
// (new pods, service rules, DNS records, mesh configuration pushes).
func (k *Kubectl) Eventually(t *testing.T, d time.Duration, ok func(string) bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := k.Run(args...)
		if err == nil && (ok == nil || ok(out)) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl %s: did not converge in %v: %v\n%s", strings.Join(args, " "), d, err, out)
		}
		time.Sleep(time.Second)
	}
}

// Apply applies a manifest.
func (k *Kubectl) Apply(manifest string) {
	k.T.Helper()
	cmd := exec.Command(k.Bin, "--kubeconfig", k.Cfg, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		k.T.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// Pod is a pod's name, IP and node.
type Pod struct{ Name, IP, Node string }

// Pods lists the pods of ns that match selector.
func (k *Kubectl) Pods(ns, selector string) []Pod {
	k.T.Helper()
	var out []Pod
	for _, l := range strings.Split(k.Must("-n", ns, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}`), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			out = append(out, Pod{f[0], f[1], f[2]})
		}
	}
	return out
}

// Echo returns the manifest of the echo test app (conformance/testapps/echo):
// a Deployment of replicas pods spread over the nodes, serving HTTP on 8080
// and gRPC on 9090 and reporting who answered, and its Service "echo"
// (http 80, grpc 9090). serviceAccount may be empty.
func Echo(ns string, replicas int, serviceAccount string) string {
	return echo(ns, replicas, serviceAccount, 0)
}

// EchoDraining is Echo whose pods serve on for shutdownDelay after
// SIGTERM (as a preStop sleep does), while their endpoints are withdrawn:
// for tests that replace pods under load and count every failure.
func EchoDraining(ns string, replicas int, serviceAccount string, shutdownDelay time.Duration) string {
	return echo(ns, replicas, serviceAccount, shutdownDelay)
}

func echo(ns string, replicas int, serviceAccount string, shutdownDelay time.Duration) string {
	args, grace := "", 2
	if shutdownDelay > 0 {
		args = fmt.Sprintf(", -shutdown-delay, %q", shutdownDelay.String())
		grace += int(shutdownDelay.Round(time.Second) / time.Second)
	}
	sa := ""
	if serviceAccount != "" {
		sa = "\n      serviceAccountName: " + serviceAccount
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
  namespace: %[1]s
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:%[3]s
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: echo}
      terminationGracePeriodSeconds: %[4]d
      containers:
      - name: echo
        image: skiff.local/echo:dev
        imagePullPolicy: IfNotPresent
        args: [serve, -listen, ":8080", -grpc, ":9090"%[5]s]
        ports: [{containerPort: 8080}, {containerPort: 9090}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: %[1]s
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: 9090, appProtocol: grpc}
`, ns, replicas, sa, grace, args)
}

// DenyEcho returns the manifest of an AuthorizationPolicy name in ns that
// refuses the echo app's pods to the SPIFFE ID principal (trust domain
// first, without "spiffe://", as Istio writes principals).
func DenyEcho(ns, name, principal string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: %s, namespace: %s}
spec:
  selector:
    matchLabels: {app: echo}
  action: DENY
  rules:
  - from:
    - source:
        principals: [%q]
`, name, ns, principal)
}

// Client returns the manifest of a toolbox pod (busybox and the echo app's
// client, echo-app) named client on node, idle until exec'd into.
func Client(ns, node, serviceAccount string) string {
	return Toolbox(ns, "client", node, serviceAccount)
}

// Toolbox returns the manifest of a toolbox pod named name on node, idle
// until exec'd into. serviceAccount may be empty.
func Toolbox(ns, name, node, serviceAccount string) string {
	return toolbox(ns, name, "nodeSelector: {kubernetes.io/hostname: "+node+"}", serviceAccount)
}

// BoundToolbox is Toolbox bound to node by name, past the scheduler (which
// does not place pods on a node that is not ready): the node itself must
// run or refuse it.
func BoundToolbox(ns, name, node, serviceAccount string) string {
	return toolbox(ns, name, "nodeName: "+node, serviceAccount)
}

func toolbox(ns, name, placement, serviceAccount string) string {
	sa := ""
	if serviceAccount != "" {
		sa = "\n  serviceAccountName: " + serviceAccount
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
spec:%s
  %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: toolbox
    image: skiff.local/toolbox:dev
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
`, name, ns, sa, placement)
}
