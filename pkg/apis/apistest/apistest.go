// Package apistest starts a real kube-apiserver and etcd (envtest) for
// tests, from the binaries in KUBEBUILDER_ASSETS that `make test` builds,
// optionally with Skiff's CRDs installed. It is used only from tests.
package apistest

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/skiffmesh/skiff/pkg/apis"
)

// Option configures the environment before it starts.
type Option func(*envtest.Environment)

// ServiceIPRange sets the apiserver's service-cluster-ip-range: envtest's
// default, a /24, has room for 254 Services.
func ServiceIPRange(cidr string) Option {
	return func(env *envtest.Environment) {
		env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", cidr)
	}
}

// Start starts kube-apiserver and etcd, stopped when the test ends. It
// skips the test when KUBEBUILDER_ASSETS does not hold them.
func Start(t testing.TB, opts ...Option) (*envtest.Environment, *rest.Config) {
	t.Helper()
	return start(t, &envtest.Environment{}, opts)
}

// StartWithCRDs is Start with Skiff's CRDs (pkg/apis) installed, and a
// client whose scheme knows client-go's types and Skiff's.
func StartWithCRDs(t testing.TB, opts ...Option) (*envtest.Environment, *rest.Config, client.Client) {
	t.Helper()
	crds, err := apis.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	env, cfg := start(t, &envtest.Environment{CRDInstallOptions: envtest.CRDInstallOptions{CRDs: crds}}, opts)
	return env, cfg, Client(t, cfg)
}

// Client returns a controller-runtime client for cfg that knows
// Kubernetes' built-in kinds and Skiff's.
func Client(t testing.TB, cfg *rest.Config) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apis.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t testing.TB, env *envtest.Environment, opts []Option) (*envtest.Environment, *rest.Config) {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: envtest needs kube-apiserver and etcd (make test builds them)")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		t.Skipf("no kube-apiserver in KUBEBUILDER_ASSETS: %v", err)
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}
