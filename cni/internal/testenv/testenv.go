// Package testenv starts a real kube-apiserver and etcd (envtest) for the
// CNI component's tests.
package testenv

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// K8sVersion names the cached Kubernetes build used when
// KUBEBUILDER_ASSETS is unset.
const K8sVersion = "v1.36.3"

// Assets returns the directory holding kube-apiserver and etcd, or "".
func Assets() string {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(cache, "skiff", "k8s-"+K8sVersion, "bin")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return ""
		}
	}
	return dir
}

// Cluster is a running envtest control plane.
type Cluster struct {
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for an admin user.
	Kubeconfig string
}

// Start starts an apiserver for the test (stopped at cleanup), or skips the
// test when the binaries are not built.
func Start(t testing.TB) *Cluster { return StartOn(t, "") }

// StartOn is Start with the apiserver bound to address (an address of this
// host; "" for loopback), for clients in other network namespaces.
func StartOn(t testing.TB, address string) *Cluster {
	t.Helper()
	dir := Assets()
	if dir == "" {
		t.Skip("skipping: kube-apiserver and etcd not found; set KUBEBUILDER_ASSETS (make test builds them with conformance/cluster/build-k8s.sh)")
	}
	env := &envtest.Environment{BinaryAssetsDirectory: dir}
	if address != "" {
		// envtest picks a loopback address unless given a port too.
		ln, err := net.Listen("tcp", net.JoinHostPort(address, "0"))
		if err != nil {
			t.Fatalf("finding a port on %s: %v", address, err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		env.ControlPlane.GetAPIServer().SecureServing.ListenAddr = envtest.ListenAddr{Address: address, Port: port}
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "skiff-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Client: cs, Kubeconfig: path}
}
