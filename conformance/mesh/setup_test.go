package mesh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

const istioNS = "istio-system"

type cluster struct {
	t       *testing.T
	kubectl *kubetest.Kubectl
	repo    string
}

// setUp brings the local cluster up (or reuses it), loads Skiff's images
// built from this checkout into every node and installs (or upgrades) Skiff
// from its Helm charts (conformance/cluster/install-skiff.sh).
func setUp(t *testing.T) *cluster {
	t.Helper()
	kubetest.RequireE2E(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, repo: repo, kubectl: kubetest.New(t)}

	c.step("cluster", "conformance/cluster/up.sh")
	c.step("Skiff", "conformance/cluster/install-skiff.sh")
	return c
}

// step runs a set-up command from the repository root, its output shown.
func (c *cluster) step(what string, name string, args ...string) {
	c.t.Helper()
	start := time.Now()
	cmd := exec.Command(name, args...)
	cmd.Dir = c.repo
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("%s: %s %s: %v", what, name, strings.Join(args, " "), err)
	}
	c.t.Logf("%s ready (%.1fs)", what, time.Since(start).Seconds())
}

// ztunnelMetrics reads /metrics of the ztunnel on node, through the
// apiserver's pod proxy.
func (c *cluster) ztunnelMetrics(t *testing.T, node string) string {
	t.Helper()
	name := c.kubectl.Must("-n", istioNS, "get", "pods", "-l", "app=ztunnel",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	return c.kubectl.Must("get", "--raw", "/api/v1/namespaces/"+istioNS+"/pods/"+name+":15020/proxy/metrics")
}
