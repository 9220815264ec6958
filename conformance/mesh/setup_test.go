package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/conformance/internal/kubetest"
)

// Paths fixed by conformance/cluster/lib.sh.
func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var (
	cacheDir = envOr("SKIFF_CACHE", filepath.Join(os.Getenv("HOME"), ".cache", "skiff"))
	helmBin  = filepath.Join(cacheDir, "helm-"+envOr("HELM_VERSION", "v3.22.0"), "bin", "helm")
)

// skiffImages are the images the charts use, built from this checkout.
var skiffImages = []string{"skiff.local/istiod-lite:dev", "skiff.local/ztunnel:dev", "skiff.local/cni:dev"}

// The releases, in Istio's install order for ambient mode.
var releases = []struct{ name, chart string }{
	{"istio-base", "base"},
	{"istiod", "istiod"},
	{"istio-cni", "cni"},
	{"ztunnel", "ztunnel"},
}

const istioNS = "istio-system"

type cluster struct {
	t       *testing.T
	kubectl *kubetest.Kubectl
	repo    string
}

// setUp brings the local cluster up (or reuses it), loads Skiff's images
// built from this checkout into every node and installs (or upgrades) Skiff
// from its Helm charts.
func setUp(t *testing.T) *cluster {
	t.Helper()
	kubetest.RequireE2E(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, repo: repo, kubectl: kubetest.New(t)}

	c.step("cluster", "conformance/cluster/up.sh")
	c.step("images", "go", "run", "./conformance/cmd/skiff-images", "-only", strings.Join(skiffImages, ","))

	// Images keep their :dev tag across builds; a pod annotation that
	// changes with their content makes Helm roll the pods onto a new build.
	build := imagesDigest(t)
	for _, r := range releases {
		args := []string{"upgrade", "--install", r.name, filepath.Join(repo, "helm", r.chart),
			"--namespace", istioNS, "--create-namespace", "--wait", "--timeout", "5m",
			"--kubeconfig", c.kubectl.Cfg}
		switch r.chart {
		case "istiod":
			args = append(args, "--set-string", "pilot.podAnnotations.skiff\\.dev/build="+build)
		case "cni", "ztunnel":
			args = append(args, "--set-string", "podAnnotations.skiff\\.dev/build="+build)
		}
		start := time.Now()
		if out, err := exec.Command(helmBin, args...).CombinedOutput(); err != nil {
			t.Logf("pods:\n%s", c.kubectl.Must("-n", istioNS, "get", "pods", "-o", "wide"))
			t.Fatalf("helm upgrade --install %s: %v\n%s", r.name, err, out)
		}
		t.Logf("helm: %s installed (%.1fs)", r.name, time.Since(start).Seconds())
	}
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

// imagesDigest hashes the image archives skiff-images wrote.
func imagesDigest(t *testing.T) string {
	h := sha256.New()
	r := strings.NewReplacer("/", "_", ":", "_")
	for _, im := range skiffImages {
		f, err := os.Open(filepath.Join(cacheDir, "images", r.Replace(im)+".oci.tar"))
		if err != nil {
			t.Fatalf("image archive: %v", err)
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ztunnelMetrics reads /metrics of the ztunnel on node, through the
// apiserver's pod proxy.
func (c *cluster) ztunnelMetrics(t *testing.T, node string) string {
	t.Helper()
	name := c.kubectl.Must("-n", istioNS, "get", "pods", "-l", "app=ztunnel",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	return c.kubectl.Must("get", "--raw", "/api/v1/namespaces/"+istioNS+"/pods/"+name+":15020/proxy/metrics")
}
