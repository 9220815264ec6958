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
)

// Paths fixed by conformance/cluster/lib.sh.
func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var (
	stateDir = envOr("SKIFF_STATE", "/var/lib/skiff-cluster")
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
	kubectl *kube
	repo    string
}

// setUp brings the local cluster up (or reuses it), loads Skiff's images
// built from this checkout into every node and installs (or upgrades) Skiff
// from its Helm charts.
func setUp(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("SKIFF_E2E") != "1" {
		t.Skip("end-to-end test: set SKIFF_E2E=1 to bring up (or reuse) the local cluster and install Skiff on it (needs root)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("SKIFF_E2E=1 needs root: the local cluster uses network namespaces, mounts and cgroups")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, repo: repo,
		kubectl: &kube{t: t, bin: filepath.Join(stateDir, "bin", "kubectl"), cfg: filepath.Join(stateDir, "kubeconfig")}}

	c.step("cluster", "conformance/cluster/up.sh")
	c.step("images", "go", "run", "./conformance/cmd/skiff-images", "-only", strings.Join(skiffImages, ","))

	// Images keep their :dev tag across builds; a pod annotation that
	// changes with their content makes Helm roll the pods onto a new build.
	build := imagesDigest(t)
	for _, r := range releases {
		args := []string{"upgrade", "--install", r.name, filepath.Join(repo, "helm", r.chart),
			"--namespace", istioNS, "--create-namespace", "--wait", "--timeout", "5m",
			"--kubeconfig", c.kubectl.cfg}
		switch r.chart {
		case "istiod":
			args = append(args, "--set-string", "pilot.podAnnotations.skiff\\.dev/build="+build)
		case "cni", "ztunnel":
			args = append(args, "--set-string", "podAnnotations.skiff\\.dev/build="+build)
		}
		start := time.Now()
		if out, err := exec.Command(helmBin, args...).CombinedOutput(); err != nil {
			t.Logf("pods:\n%s", c.kubectl.must("-n", istioNS, "get", "pods", "-o", "wide"))
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

type pod struct{ name, ip, node string }

func (c *cluster) pods(ns, selector string) []pod {
	var out []pod
	for _, l := range strings.Split(c.kubectl.must("-n", ns, "get", "pods", "-l", selector, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}`), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			out = append(out, pod{f[0], f[1], f[2]})
		}
	}
	return out
}

// ztunnelMetrics reads /metrics of the ztunnel on node, through the
// apiserver's pod proxy.
func (c *cluster) ztunnelMetrics(t *testing.T, node string) string {
	t.Helper()
	name := c.kubectl.must("-n", istioNS, "get", "pods", "-l", "app=ztunnel",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	return c.kubectl.must("get", "--raw", "/api/v1/namespaces/"+istioNS+"/pods/"+name+":15020/proxy/metrics")
}

type kube struct {
	t        *testing.T
	bin, cfg string
}

func (k *kube) run(args ...string) (string, error) {
	cmd := exec.Command(k.bin, append([]string{"--kubeconfig", k.cfg}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (k *kube) must(args ...string) string {
	k.t.Helper()
	out, err := k.run(args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually retries a kubectl command until it succeeds and its output
// satisfies ok (when given): the mesh converges asynchronously, after
// informers, pushes and rule installs.
func (k *kube) eventually(t *testing.T, d time.Duration, ok func(string) bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := k.run(args...)
		if err == nil && (ok == nil || ok(out)) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl %s: did not converge in %v: %v\n%s", strings.Join(args, " "), d, err, out)
		}
		time.Sleep(time.Second)
	}
}

func (k *kube) apply(manifest string) {
	k.t.Helper()
	cmd := exec.Command(k.bin, "--kubeconfig", k.cfg, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		k.t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}
