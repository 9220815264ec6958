package kubetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RepoRoot is the repository's root: the nearest directory above the
// working directory that holds go.mod of the module.
func RepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/skiffmesh/skiff\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no repository root (go.mod of github.com/skiffmesh/skiff) above the working directory")
		}
		dir = parent
	}
}

// ClusterVar is a setting of the local cluster's scripts
// (conformance/cluster/lib.sh), such as HELM_BIN_CACHE or K8S_BIN: the
// scripts stay the one place that says where things are.
func ClusterVar(t *testing.T, repo, name string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", `source conformance/cluster/lib.sh && printf %s "${`+name+`}"`)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lib.sh %s: %v", name, err)
	}
	if len(out) == 0 {
		t.Fatalf("lib.sh sets no %s", name)
	}
	return string(out)
}

// Helm runs the cluster's helm (built by conformance/cluster/build-k8s.sh)
// against the cluster's kubeconfig.
func (k *Kubectl) Helm(t *testing.T, repo string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(ClusterVar(t, repo, "HELM_BIN_CACHE"), "helm")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", k.Cfg}, args...)...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// NodeSocket is the containerd socket of a node of the local cluster
// (listed in the state directory's nodes file by up.sh).
func NodeSocket(node string) (string, error) {
	f, err := os.Open(filepath.Join(StateDir(), "nodes"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, sock, ok := strings.Cut(s.Text(), " "); ok && name == node {
			return sock, nil
		}
	}
	return "", fmt.Errorf("node %s is not in %s", node, f.Name())
}

// Signal sends signal (such as SIGKILL) to a container's process through
// its node's containerd, as a crash would end it: the kubelet sees the
// container exit and restarts it in the same pod.
func (k *Kubectl) Signal(t *testing.T, ns, pod, container, signal string) {
	t.Helper()
	node := k.Must("-n", ns, "get", "pod", pod, "-o", "jsonpath={.spec.nodeName}")
	id := k.Must("-n", ns, "get", "pod", pod, "-o",
		`jsonpath={.status.containerStatuses[?(@.name=="`+container+`")].containerID}`)
	id, ok := strings.CutPrefix(id, "containerd://")
	if !ok {
		t.Fatalf("pod %s/%s container %s: container id %q, want containerd://...", ns, pod, container, id)
	}
	sock, err := NodeSocket(node)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "tasks", "kill", "-s", signal, id).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill -s %s %s (pod %s/%s): %v\n%s", signal, id, ns, pod, err, out)
	}
}

// PodOn is the name of the pod of ns matching selector on node.
func (k *Kubectl) PodOn(t *testing.T, ns, selector, node string) string {
	t.Helper()
	for _, p := range k.Pods(ns, selector) {
		if p.Node == node {
			return p.Name
		}
	}
	t.Fatalf("no pod %s in %s on %s", selector, ns, node)
	return ""
}

// DeleteNamespaces removes namespaces without waiting: for t.Cleanup.
func (k *Kubectl) DeleteNamespaces(names ...string) {
	k.Run(append([]string{"delete", "namespace", "--ignore-not-found", "--wait=false"}, names...)...)
}

// Healthy waits until the cluster and Skiff are back in shape: the
// apiserver ready, every node Ready, and ztunnel, the node agent and
// istiod-lite rolled out. It reports what is not, and does not stop t.
func (k *Kubectl) Healthy(t *testing.T, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, check := range [][]string{
		{"get", "--raw", "/readyz"},
		{"wait", "--for=condition=Ready", "nodes", "--all", "--timeout=10s"},
		{"-n", "istio-system", "rollout", "status", "deploy/istiod", "--timeout=10s"},
		{"-n", "istio-system", "rollout", "status", "ds/ztunnel", "--timeout=10s"},
		{"-n", "istio-system", "rollout", "status", "ds/istio-cni-node", "--timeout=10s"},
	} {
		for {
			out, err := k.Run(check...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("cluster not healthy after %v: kubectl %s: %v\n%s", d, strings.Join(check, " "), err, out)
				return false
			}
			time.Sleep(time.Second)
		}
	}
	// A replaced istiod-lite is rolled out before its clients reconnect:
	// until they have, they carry on with the configuration they had.
	for {
		err := k.ztunnelsConnected()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cluster not healthy after %v: %v", d, err)
			return false
		}
		time.Sleep(time.Second)
	}
	return true
}

// ztunnelsConnected reports whether istiod-lite counts at least as many
// xDS clients (its pilot_xds gauge, over its pods not being deleted) as
// there are ztunnels. Waypoints are clients too, so one ztunnel missing
// can hide behind one of them; the ztunnels cut off after a restart of
// istiod-lite (all of them at once) cannot.
func (k *Kubectl) ztunnelsConnected() error {
	// Running pods that are not being deleted: a replaced istiod-lite
	// serves on while it drains, and its clients must have left it.
	names := func(selector string) ([]string, error) {
		out, err := k.Run("-n", "istio-system", "get", "pods", "-l", selector, "--field-selector", "status.phase=Running",
			"-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}`)
		var live []string
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 1 {
				live = append(live, f[0])
			}
		}
		return live, err
	}
	ztunnels, err := names("app=ztunnel")
	if err != nil {
		return fmt.Errorf("listing ztunnels: %w", err)
	}
	istiods, err := names("app=istiod")
	if err != nil {
		return fmt.Errorf("listing istiod-lite: %w", err)
	}
	clients := 0
	for _, p := range istiods {
		out, err := k.Run("get", "--raw", "/api/v1/namespaces/istio-system/pods/"+p+":15014/proxy/metrics")
		if err != nil {
			return fmt.Errorf("metrics of %s: %w", p, err)
		}
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "pilot_xds "); ok {
				n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				clients += int(n)
			}
		}
	}
	if clients < len(ztunnels) {
		return fmt.Errorf("istiod-lite has %d xDS clients, fewer than the %d ztunnels: not every ztunnel is connected to the control plane", clients, len(ztunnels))
	}
	return nil
}

// PortForward forwards a local port to port of a pod (which reaches the
// pod's loopback, where admin endpoints listen) until t ends, and returns
// the local address.
func (k *Kubectl) PortForward(t *testing.T, ns, pod string, port int) string {
	t.Helper()
	cmd := exec.Command(k.Bin, "--kubeconfig", k.Cfg, "-n", ns, "port-forward", "--address", "127.0.0.1", "pod/"+pod, fmt.Sprintf(":%d", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubectl port-forward: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// "Forwarding from 127.0.0.1:NNNNN -> PORT"
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if f := strings.Fields(s.Text()); len(f) >= 3 && f[0] == "Forwarding" && f[1] == "from" {
				addr <- f[2]
				break
			}
		}
		close(addr)
		for s.Scan() {
		}
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("kubectl port-forward %s/%s %d: exited without forwarding", ns, pod, port)
		}
		return a
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward %s/%s %d: no forwarding after 30s", ns, pod, port)
		return ""
	}
}

// Main is a suite's TestMain. With SKIFF_E2E=1, as root, it first brings
// the local cluster up (or reuses it), loads this checkout's test images
// (a comma-separated list for skiff-images -only) and Skiff's images into
// its nodes, and installs Skiff from its charts, once for all the suite's
// tests; SKIFF_REUSE_INSTALL=1 skips that and uses the cluster and Skiff
// as they are. Progress goes to stderr, prefixed with suite. The suite's
// package is two directories below the repository's root.
func Main(m *testing.M, suite, images string) {
	if os.Getenv("SKIFF_E2E") == "1" && os.Geteuid() == 0 && os.Getenv("SKIFF_REUSE_INSTALL") != "1" {
		if err := setUp(suite, images); err != nil {
			fmt.Fprintf(os.Stderr, "%s: set-up: %v\n", suite, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func setUp(suite, images string) error {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	for _, step := range [][]string{
		{"conformance/cluster/up.sh"},
		{"go", "run", "./conformance/cmd/skiff-images", "-only", images},
		{"conformance/cluster/install-skiff.sh"},
	} {
		start := time.Now()
		cmd := exec.Command(step[0], step[1:]...)
		cmd.Dir = repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %w", step, err)
		}
		fmt.Fprintf(os.Stderr, "%s: %s done (%.1fs)\n", suite, step[len(step)-1], time.Since(start).Seconds())
	}
	return nil
}
