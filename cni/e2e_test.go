// End-to-end tests of the CNI component: libcni runs the real chain
// bridge + host-local + skiff-cni (as installed by the node agent's
// installer) on real network namespaces, against a real node agent, a real
// kube-apiserver (envtest) and a ZDS endpoint standing in for ztunnel that
// opens ztunnel's listeners inside each pod it is handed.
package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/skiffmesh/skiff/cni/internal/app"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
	"github.com/skiffmesh/skiff/cni/internal/probesnat"
	"github.com/skiffmesh/skiff/cni/internal/testenv"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// CNIPluginsVersion names the cached reference plugins build.
const CNIPluginsVersion = "v1.9.1"

// arrive bounds waits for things that must happen; it only limits a broken
// run, nothing depends on it being short.
const arrive = 30 * time.Second

var pluginBinary string // skiff-cni built for this run

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	{
		dir, err := os.MkdirTemp("", "skiff-cni-e2e")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		pluginBinary = filepath.Join(dir, "skiff-cni")
		goBin, err := exec.LookPath("go")
		if err != nil {
			fmt.Fprintln(os.Stderr, "building skiff-cni needs the go command:", err)
			return 1
		}
		cmd := exec.Command(goBin, "build", "-o", pluginBinary, "./cmd/skiff-cni")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building skiff-cni: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

// referencePlugins returns the directory of the bridge and host-local
// plugins, or skips.
func referencePlugins(t testing.TB) string {
	dir := os.Getenv("SKIFF_CNI_PLUGINS")
	if dir == "" {
		cache, _ := os.UserCacheDir()
		dir = filepath.Join(cache, "skiff", "cni-plugins-"+CNIPluginsVersion, "bin")
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Skipf("skipping: CNI reference plugins not found in %s; set SKIFF_CNI_PLUGINS (make test builds them with conformance/cluster/build-k8s.sh)", dir)
		}
	}
	return dir
}

// ztunnel is the ztunnel side of ZDS for the tests: for every pod it is
// handed it opens ztunnel's listeners inside the pod's namespace.
type ztunnel struct {
	mu        sync.Mutex
	pods      map[string]*inpodtest.ZtunnelListeners
	adds      map[string]int
	snapshots int
	cancel    context.CancelFunc
	done      chan struct{}
}

func (z *ztunnel) AddWorkload(_ context.Context, w zds.Workload, netns *os.File) error {
	defer netns.Close()
	z.mu.Lock()
	defer z.mu.Unlock()
	// A repeated add (a replay) replaces the pod's listeners.
	if old := z.pods[w.UID]; old != nil {
		old.Close()
		delete(z.pods, w.UID)
	}
	l, err := inpodtest.ListenZtunnel(netns)
	if err != nil {
		return err
	}
	z.pods[w.UID] = l
	z.adds[w.UID]++
	return nil
}

func (z *ztunnel) KeepWorkload(context.Context, string) error { return nil }

func (z *ztunnel) DelWorkload(_ context.Context, uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if l := z.pods[uid]; l != nil {
		l.Close()
		delete(z.pods, uid)
	}
	return nil
}

func (z *ztunnel) SnapshotSent(context.Context) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.snapshots++
	return nil
}

func (z *ztunnel) listeners(uid string) *inpodtest.ZtunnelListeners {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.pods[uid]
}

func (z *ztunnel) addCount(uid string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.adds[uid]
}

func (z *ztunnel) snapshotCount() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.snapshots
}

func startZtunnel(path string) *ztunnel {
	ctx, cancel := context.WithCancel(context.Background())
	z := &ztunnel{pods: map[string]*inpodtest.ZtunnelListeners{}, adds: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(z.done)
		_ = zds.Run(ctx, path, z, nil)
		z.mu.Lock()
		defer z.mu.Unlock()
		for uid, l := range z.pods {
			l.Close()
			delete(z.pods, uid)
		}
	}()
	return z
}

func (z *ztunnel) stop() {
	z.cancel()
	<-z.done
}

// env is one node: its network namespace (joined to the test's by a veth,
// over which the plugin reaches the apiserver), CNI directories, the
// apiserver, the node agent and ztunnel.
type env struct {
	t          testing.TB
	node       *inpodtest.NetNS
	podDir     string
	confDir    string
	binDir     string
	cacheDir   string
	primary    string
	primaryRaw []byte
	cluster    *testenv.Cluster
	admin      kubernetes.Interface
	agentCfg   app.Config
	agentStop  context.CancelFunc
	agentDone  chan error
	httpAddr   chan string
	metricsURL string
	zt         *ztunnel
	gateway    netip.Addr
}

const nodeName = "node-1"

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with the agent's configuration adjusted by adjust.
func newEnvWith(t testing.TB, adjust func(*app.Config)) *env {
	inpodtest.RequireRoot(t)
	plugins := referencePlugins(t)
	if testenv.Assets() == "" {
		t.Skip("skipping: kube-apiserver and etcd not found; set KUBEBUILDER_ASSETS (make test builds them)")
	}
	e := &env{t: t, gateway: netip.MustParseAddr("10.88.0.1")}
	root := t.TempDir()
	short, err := os.MkdirTemp("", "skc") // unix socket paths must be short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	e.podDir = filepath.Join(root, "netns")
	e.confDir = filepath.Join(root, "net.d")
	e.binDir = filepath.Join(root, "bin")
	e.cacheDir = filepath.Join(root, "cache")
	for _, d := range []string{e.confDir, e.binDir, e.podDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"bridge", "host-local"} {
		if err := os.Symlink(filepath.Join(plugins, p), filepath.Join(e.binDir, p)); err != nil {
			t.Fatal(err)
		}
	}

	// The node, and a veth from the test's namespace to it.
	e.node = inpodtest.NewNetNSIn(t, e.podDir, "node-")
	r := rand.IntN(250)
	hostIP := netip.AddrFrom4([4]byte{172, 29, byte(r), 1})
	inpodtest.Veth(t, inpodtest.Self(t), inpodtest.RandName("skh"), netip.PrefixFrom(hostIP, 30),
		e.node, "uplink", netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 29, byte(r), 2}), 30))
	e.cluster = testenv.StartOn(t, hostIP.String())
	e.admin = e.cluster.Client

	// The primary CNI's configuration, as a cluster's network add-on would
	// write it.
	e.primary = filepath.Join(e.confDir, "10-skt.conflist")
	e.primaryRaw = []byte(fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "skt",
  "plugins": [
    {"type": "bridge", "bridge": "skbr0", "isDefaultGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "dataDir": %q}}
  ]
}
`, filepath.Join(root, "ipam")))
	if err := os.WriteFile(e.primary, e.primaryRaw, 0o644); err != nil {
		t.Fatal(err)
	}

	// The agent runs as a service account with only the rights it needs.
	token, ca := e.serviceAccount()
	secrets := filepath.Join(root, "sa")
	if err := os.MkdirAll(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": ca} {
		if err := os.WriteFile(filepath.Join(secrets, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	agentKC := filepath.Join(root, "agent.kubeconfig")
	writeKubeconfig(t, agentKC, e.cluster.Config.Host, token, ca)

	e.agentCfg = app.Config{
		NodeName:          nodeName,
		Kubeconfig:        agentKC,
		Install:           true,
		CNIConfDir:        e.confDir,
		CNIBinDir:         e.binDir,
		HostCNIConfDir:    e.confDir,
		PluginBinary:      pluginBinary,
		PluginTimeout:     20 * time.Second,
		TokenFile:         filepath.Join(secrets, "token"),
		CAFile:            filepath.Join(secrets, "ca.crt"),
		APIServer:         e.cluster.Config.Host,
		AgentSocket:       filepath.Join(short, "agent.sock"),
		ZDSSocket:         filepath.Join(short, "zds.sock"),
		ExcludeNamespaces: []string{"kube-system"},
		SNATTable:         inpodtest.RandName("skt-"),
		NodeNetNS:         e.node.File,
		NetnsDirs:         []string{e.podDir},
		HTTPAddr:          "127.0.0.1:0",
		Log:               slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if adjust != nil {
		adjust(&e.agentCfg)
	}
	e.zt = startZtunnel(e.agentCfg.ZDSSocket)
	t.Cleanup(func() { e.zt.stop() })
	e.startAgent(t)
	t.Cleanup(func() { e.stopAgent(t) })
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func writeKubeconfig(t testing.TB, path, server, token string, ca []byte) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

// serviceAccount creates the agent's service account with its RBAC and
// returns a token for it and the cluster CA.
func (e *env) serviceAccount() (string, []byte) {
	t, ctx := e.t, context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "skiff-cni", Namespace: "kube-system"}}
	if _, err := e.admin.CoreV1().ServiceAccounts("kube-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff-cni"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := e.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "skiff-cni"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "skiff-cni"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "skiff-cni", Namespace: "kube-system"}},
	}
	if _, err := e.admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := e.admin.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "skiff-cni", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token, e.cluster.Config.CAData
}

func ptr[T any](v T) *T { return &v }

func (e *env) startAgent(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	e.agentStop = cancel
	e.agentDone = make(chan error, 1)
	e.httpAddr = make(chan string, 1)
	cfg := e.agentCfg
	cfg.Ready = func(a string) { e.httpAddr <- a }
	go func() { e.agentDone <- app.Run(ctx, cfg) }()
	select {
	case a := <-e.httpAddr:
		e.metricsURL = "http://" + a
	case err := <-e.agentDone:
		t.Fatalf("node agent exited: %v", err)
	}
	e.eventually(t, "the node agent to be ready", func() bool { return e.get("/readyz") == http.StatusOK })
}

func (e *env) stopAgent(t testing.TB) {
	if e.agentStop == nil {
		return
	}
	e.agentStop()
	if err := <-e.agentDone; err != nil {
		t.Errorf("node agent: %v", err)
	}
	e.agentStop = nil
}

func (e *env) get(path string) int {
	resp, err := http.Get(e.metricsURL + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (e *env) metrics(t testing.TB) string {
	resp, err := http.Get(e.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// eventually polls cond until it holds; the deadline only bounds a broken
// run.
func (e *env) eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(arrive)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *env) namespace(t testing.TB, name string, ambient bool) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ambient {
		ns.Labels = map[string]string{mesh.DataplaneModeLabel: mesh.ModeAmbient}
	}
	if _, err := e.admin.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) labelNamespace(t testing.TB, name string, ambient bool) {
	val := "null"
	if ambient {
		val = `"` + mesh.ModeAmbient + `"`
	}
	patch := []byte(`{"metadata":{"labels":{"` + mesh.DataplaneModeLabel + `":` + val + `}}}`)
	if _, err := e.admin.CoreV1().Namespaces().Patch(context.Background(), name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// pod is a pod object plus its sandbox (network namespace).
type pod struct {
	obj  *corev1.Pod
	ns   *inpodtest.NetNS
	id   string
	ip   netip.Addr
	list *libcni.NetworkConfigList
}

func (p *pod) uid() string { return string(p.obj.UID) }

func (e *env) createPod(t testing.TB, ns, name string) *pod {
	obj, err := e.admin.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:           nodeName,
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "app", Image: "app"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &pod{obj: obj, ns: inpodtest.NewNetNSIn(t, e.podDir, "pod-"), id: inpodtest.RandName("c")}
}

func (e *env) deletePod(t testing.TB, p *pod) {
	if err := e.admin.CoreV1().Pods(p.obj.Namespace).Delete(context.Background(), p.obj.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) conflist(t testing.TB) *libcni.NetworkConfigList {
	var path string
	e.eventually(t, "the installer to chain skiff-cni", func() bool {
		entries, _ := os.ReadDir(e.confDir)
		for _, en := range entries {
			if strings.HasSuffix(en.Name(), ".conflist") {
				b, _ := os.ReadFile(filepath.Join(e.confDir, en.Name()))
				if bytes.Contains(b, []byte(`"skiff-cni"`)) {
					path = filepath.Join(e.confDir, en.Name())
					return true
				}
			}
		}
		return false
	})
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func (p *pod) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.id,
		NetNS:       p.ns.Path,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.obj.Namespace},
			{"K8S_POD_NAME", p.obj.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.id},
			{"K8S_POD_UID", string(p.obj.UID)},
		},
	}
}

// cni runs f on a thread in the node's network namespace, where the
// runtime runs plugins.
func (e *env) cni(f func(ctx context.Context, c *libcni.CNIConfig) error) error {
	c := libcni.NewCNIConfigWithCacheDir([]string{e.binDir}, e.cacheDir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return inpod.Do(e.node.File, func() error { return f(ctx, c) })
}

// add runs CNI ADD for p as kubelet would, then records the pod's IP in
// its status as kubelet does.
func (e *env) add(t testing.TB, p *pod) error {
	p.list = e.conflist(t)
	var res cnitypes.Result
	err := e.cni(func(ctx context.Context, c *libcni.CNIConfig) error {
		var err error
		res, err = c.AddNetworkList(ctx, p.list, p.rt())
		return err
	})
	if err != nil {
		return err
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return err
	}
	if len(cur.IPs) != 1 {
		return fmt.Errorf("result has %d IPs: %v", len(cur.IPs), cur)
	}
	p.ip, _ = netip.AddrFromSlice(cur.IPs[0].Address.IP.To4())
	status := fmt.Sprintf(`{"status":{"phase":"Running","podIP":%q,"podIPs":[{"ip":%q}]}}`, p.ip, p.ip)
	p.obj, err = e.admin.CoreV1().Pods(p.obj.Namespace).Patch(context.Background(), p.obj.Name,
		"application/merge-patch+json", []byte(status), metav1.PatchOptions{}, "status")
	return err
}

func (e *env) del(p *pod) error {
	return e.cni(func(ctx context.Context, c *libcni.CNIConfig) error { return c.DelNetworkList(ctx, p.list, p.rt()) })
}

func (e *env) check(p *pod) error {
	return e.cni(func(ctx context.Context, c *libcni.CNIConfig) error { return c.CheckNetworkList(ctx, p.list, p.rt()) })
}

func (e *env) rules(t testing.TB, p *pod) inpod.State {
	st, err := (inpod.Rules{}).Inspect(p.ns.File)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *env) annotated(t testing.TB, p *pod) bool {
	obj, err := e.admin.CoreV1().Pods(p.obj.Namespace).Get(context.Background(), p.obj.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return obj.Annotations[mesh.RedirectionAnnotation] == mesh.RedirectionEnabled
}

func (e *env) snatMembers(t testing.TB) []netip.Addr {
	s, err := probesnat.New(probesnat.Config{Table: e.agentCfg.SNATTable, NetNS: e.node.File})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Members()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// dialFrom connects from ns to addr.
func dialFrom(t testing.TB, ns *inpodtest.NetNS, addr netip.AddrPort) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), arrive)
	defer cancel()
	c, err := inpodtest.Dial(ctx, ns.File, addr.String(), netip.AddrPort{}, inpodtest.SocketOpts{})
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// lands asserts that a connection just made arrives on ln.
func lands(t testing.TB, ln net.Listener, what string) net.Conn {
	t.Helper()
	if ln == nil {
		t.Fatalf("%s: no listener", what)
	}
	c, err := inpodtest.Accept(ln, arrive)
	if err != nil {
		t.Fatalf("%s: connection did not arrive: %v", what, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func cniErr(err error) *cnitypes.Error {
	var e *cnitypes.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func TestCNI(t *testing.T) {
	e := newEnv(t)
	e.namespace(t, "mesh", true)
	e.namespace(t, "plain", false)
	e.namespace(t, "other", false)

	// A listener on the node, as a destination outside the pods.
	nodeLn, err := inpodtest.Listen(e.node.File, "0.0.0.0:9999", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer nodeLn.Close()
	nodeDst := netip.AddrPortFrom(e.gateway, 9999)

	web := e.createPod(t, "mesh", "web")
	client := e.createPod(t, "plain", "client")
	// Each step builds on the previous ones.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("installer chains skiff-cni into the primary configuration", func(t *testing.T) {
		list := e.conflist(t)
		if n := len(list.Plugins); n != 2 || list.Plugins[1].Network.Type != "skiff-cni" {
			t.Fatalf("chain %v", list.Plugins)
		}
		if _, err := os.Stat(filepath.Join(e.binDir, "skiff-cni")); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(e.metrics(t), "istio_cni_install_ready 1") {
			t.Fatal("istio_cni_install_ready is not 1")
		}
	})

	step("ADD of a mesh pod installs rules and hands the pod to ztunnel", func(t *testing.T) {
		if err := e.add(t, web); err != nil {
			t.Fatal(err)
		}
		if st := e.rules(t, web); !st.Complete() {
			t.Fatalf("rules %v", st)
		}
		if e.zt.listeners(web.uid()) == nil {
			t.Fatal("ztunnel was not handed the pod before ADD returned")
		}
		if !e.annotated(t, web) {
			t.Fatal("pod not annotated")
		}
		if m := e.snatMembers(t); len(m) != 1 || m[0] != web.ip {
			t.Fatalf("probe SNAT set %v, want [%v]", m, web.ip)
		}
		if err := e.check(web); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		if m := e.metrics(t); !strings.Contains(m, "skiff_cni_pods_enrolled 1") || !strings.Contains(m, "ztunnel_connected 1") {
			t.Fatalf("metrics:\n%s", grep(m, "skiff_cni|ztunnel"))
		}
	})

	step("ADD of a pod outside the mesh leaves it alone", func(t *testing.T) {
		if err := e.add(t, client); err != nil {
			t.Fatal(err)
		}
		if st := e.rules(t, client); !st.Absent() {
			t.Fatalf("rules %v", st)
		}
		if e.zt.listeners(client.uid()) != nil {
			t.Fatal("ztunnel got a pod outside the mesh")
		}
	})

	step("outbound TCP from the mesh pod lands on ztunnel's 15001 in the pod", func(t *testing.T) {
		dialFrom(t, web.ns, nodeDst)
		got := lands(t, e.zt.listeners(web.uid()).Outbound, "outbound")
		if dst, err := inpodtest.OriginalDst(got); err != nil || dst != nodeDst {
			t.Fatalf("original destination %v (%v), want %v", dst, err, nodeDst)
		}
	})

	appLn, err := inpodtest.Listen(web.ns.File, "0.0.0.0:8080", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer appLn.Close()

	step("inbound TCP lands on 15006, HBONE on 15008", func(t *testing.T) {
		dialFrom(t, client.ns, netip.AddrPortFrom(web.ip, 8080))
		got := lands(t, e.zt.listeners(web.uid()).Inbound, "inbound")
		if la := got.LocalAddr().(*net.TCPAddr).AddrPort(); la.Addr().Unmap() != web.ip || la.Port() != 8080 {
			t.Fatalf("inbound local address %v", la)
		}
		dialFrom(t, client.ns, netip.AddrPortFrom(web.ip, inpod.InboundHBONEPort))
		lands(t, e.zt.listeners(web.uid()).HBONE, "HBONE")
	})

	step("a probe from the node reaches the app", func(t *testing.T) {
		dialFrom(t, e.node, netip.AddrPortFrom(web.ip, 8080))
		got := lands(t, appLn, "probe")
		if src := got.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); src.String() != inpod.ProbeSNATAddress {
			t.Fatalf("app saw the probe from %v, want %s", src, inpod.ProbeSNATAddress)
		}
	})

	step("a running pod is enrolled when its namespace is labelled, and removed when unlabelled", func(t *testing.T) {
		e.labelNamespace(t, "plain", true)
		e.eventually(t, "live enrolment", func() bool {
			return e.zt.listeners(client.uid()) != nil && e.rules(t, client).Complete() && e.annotated(t, client)
		})
		dialFrom(t, client.ns, nodeDst)
		lands(t, e.zt.listeners(client.uid()).Outbound, "outbound after live enrolment")

		e.labelNamespace(t, "plain", false)
		e.eventually(t, "live removal", func() bool {
			return e.zt.listeners(client.uid()) == nil && e.rules(t, client).Absent() && !e.annotated(t, client)
		})
		dialFrom(t, client.ns, nodeDst)
		lands(t, nodeLn, "direct outbound after removal")
		if m := e.snatMembers(t); len(m) != 1 || m[0] != web.ip {
			t.Fatalf("probe SNAT set %v, want only %v", m, web.ip)
		}
	})

	step("an agent restart rebuilds the state from the pods and the rules", func(t *testing.T) {
		stray := e.createPod(t, "other", "stray")
		if err := e.add(t, stray); err != nil {
			t.Fatal(err)
		}
		adds, snaps := e.zt.addCount(web.uid()), e.zt.snapshotCount()
		e.stopAgent(t)
		// While the agent is down, a rule disappears from the mesh pod, the
		// other namespace joins the mesh, and a pod outside the mesh has
		// rules (as if an agent had died while enrolling it).
		deleteRule(t, web.ns.File, inpod.ChainOutputNAT)
		e.labelNamespace(t, "plain", true)
		if err := (inpod.Rules{}).Install(stray.ns.File); err != nil {
			t.Fatal(err)
		}
		e.startAgent(t)
		if st := e.rules(t, stray); !st.Absent() {
			t.Fatalf("rules of a pod outside the mesh survived the restart: %v", st)
		}
		e.eventually(t, "ztunnel's snapshot from the new agent", func() bool {
			return e.zt.snapshotCount() > snaps && e.zt.addCount(web.uid()) > adds
		})
		if st := e.rules(t, web); !st.Complete() {
			t.Fatalf("mesh pod rules not repaired: %v", st)
		}
		e.eventually(t, "the pod of the newly labelled namespace", func() bool {
			return e.zt.listeners(client.uid()) != nil && e.rules(t, client).Complete()
		})
		dialFrom(t, web.ns, nodeDst)
		lands(t, e.zt.listeners(web.uid()).Outbound, "outbound after restart")
		dialFrom(t, e.node, netip.AddrPortFrom(web.ip, 8080))
		lands(t, appLn, "probe after restart")
		e.labelNamespace(t, "plain", false)
		e.eventually(t, "removal", func() bool { return e.rules(t, client).Absent() })
	})

	step("ADD fails cleanly while ztunnel is down", func(t *testing.T) {
		e.zt.stop()
		e.eventually(t, "the agent to see ztunnel gone", func() bool { return strings.Contains(e.metrics(t), "ztunnel_connected 0") })
		p := e.createPod(t, "mesh", "no-ztunnel")
		err := e.add(t, p)
		ce := cniErr(err)
		if ce == nil || ce.Code != cnitypes.ErrTryAgainLater || !strings.Contains(ce.Msg+ce.Details, "ztunnel is not connected") {
			t.Fatalf("ADD: %v; want a try-again error naming ztunnel", err)
		}
		if st := e.rules(t, p); !st.Absent() {
			t.Fatalf("failed ADD left rules: %v", st)
		}
		if err := e.del(p); err != nil { // the runtime cleans up
			t.Fatalf("DEL after failed ADD: %v", err)
		}
		if !strings.Contains(e.metrics(t), `skiff_cni_enrolment_failures_total{operation="add"}`) {
			t.Fatal("failure not counted")
		}
		e.zt = startZtunnel(e.agentCfg.ZDSSocket)
		e.eventually(t, "ztunnel back", func() bool { return e.zt.listeners(web.uid()) != nil })
		if err := e.add(t, p); err != nil {
			t.Fatalf("ADD once ztunnel is back: %v", err)
		}
		if err := e.del(p); err != nil {
			t.Fatal(err)
		}
		e.deletePod(t, p)
	})

	step("ADD fails with a clear error while the agent is down; DEL still works", func(t *testing.T) {
		e.stopAgent(t)
		p := e.createPod(t, "mesh", "no-agent")
		err := e.add(t, p)
		ce := cniErr(err)
		if ce == nil || ce.Code != cnitypes.ErrTryAgainLater || !strings.Contains(ce.Msg, "node agent is not running") {
			t.Fatalf("ADD: %v; want a try-again error naming the node agent", err)
		}
		if err := e.del(p); err != nil {
			t.Fatalf("DEL with the agent down: %v", err)
		}
		e.deletePod(t, p)
		snaps := e.zt.snapshotCount()
		e.startAgent(t)
		// ztunnel still holds the pods it had; until it has resynced with
		// the restarted agent, a DEL would not reach it.
		e.eventually(t, "ztunnel to resync with the restarted agent", func() bool { return e.zt.snapshotCount() > snaps })
	})

	step("DEL removes the pod from ztunnel and the probe SNAT", func(t *testing.T) {
		e.eventually(t, "ztunnel to have the pod", func() bool { return e.zt.listeners(web.uid()) != nil })
		if err := e.del(web); err != nil {
			t.Fatal(err)
		}
		if e.zt.listeners(web.uid()) != nil {
			t.Fatal("ztunnel still has the pod after DEL returned")
		}
		if m := e.snatMembers(t); len(m) != 0 {
			t.Fatalf("probe SNAT set %v after DEL", m)
		}
		if !strings.Contains(e.metrics(t), "skiff_cni_pods_enrolled 0") {
			t.Fatal("skiff_cni_pods_enrolled not 0")
		}
	})

	step("uninstall restores the primary configuration byte for byte", func(t *testing.T) {
		e.stopAgent(t)
		if err := app.Uninstall(e.agentCfg); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(e.primary)
		if err != nil || !bytes.Equal(got, e.primaryRaw) {
			t.Fatalf("primary configuration after uninstall (%v):\n%s", err, got)
		}
		if _, err := os.Stat(filepath.Join(e.binDir, "skiff-cni")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("plugin binary left behind")
		}
	})
}

// deleteRule removes the last rule of chain from the pod's table.
func deleteRule(t testing.TB, ns *os.File, chain string) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: inpod.TableName, Family: nftables.TableFamilyINet}
	rules, err := conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
	if err != nil || len(rules) == 0 {
		t.Fatalf("listing %s: %v", chain, err)
	}
	if err := conn.DelRule(rules[len(rules)-1]); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

func grep(s, pattern string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range strings.Split(pattern, "|") {
			if strings.Contains(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// The plugin binary answers malformed input with a CNI error result on
// stdout and exit status 1, never a crash.
func TestPluginBinaryMalformedInput(t *testing.T) {
	good := `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","agentSocket":"/nonexistent/agent.sock","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`
	netns := "/proc/self/ns/net" // any namespace file: checked only after ADD
	tests := []struct {
		name, command, args, stdin string
		code                       uint
	}{
		{"truncated JSON", "ADD", "", `{"cniVersion":"1.0.0","name":`, cnitypes.ErrDecodingFailure},
		{"not an object", "ADD", "", `[1,2,3]`, cnitypes.ErrDecodingFailure},
		{"binary garbage", "ADD", "", "\x00\xff\xfe{", cnitypes.ErrDecodingFailure},
		{"wrong type field", "ADD", "", `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni","excludeNamespaces":7}`, cnitypes.ErrInvalidNetworkConfig},
		{"unsupported version", "ADD", "", `{"cniVersion":"9.9.9","name":"n","type":"skiff-cni"}`, cnitypes.ErrIncompatibleCNIVersion},
		{"malformed args", "ADD", "K8S_POD_NAME", good, cnitypes.ErrInvalidEnvironmentVariables},
		{"bad pod name", "ADD", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=../../x", good, cnitypes.ErrInvalidEnvironmentVariables},
		{"no prevResult", "ADD", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", `{"cniVersion":"1.0.0","name":"n","type":"skiff-cni"}`, cnitypes.ErrInvalidNetworkConfig},
		{"agent down on STATUS", "STATUS", "", strings.Replace(good, `"1.0.0","name"`, `"1.1.0","name"`, 1), cnitypes.ErrPluginNotAvailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(pluginBinary)
			cmd.Env = []string{
				"CNI_COMMAND=" + tc.command, "CNI_CONTAINERID=c1", "CNI_NETNS=" + netns,
				"CNI_IFNAME=eth0", "CNI_PATH=/nonexistent", "CNI_ARGS=" + tc.args,
			}
			cmd.Stdin = strings.NewReader(tc.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v (stderr %s)", err, stderr.String())
			}
			if strings.Contains(stderr.String(), "panic") {
				t.Fatalf("plugin panicked: %s", stderr.String())
			}
			var res cnitypes.Error
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("stdout is not a CNI error result: %q", stdout.String())
			}
			if res.Code != tc.code || res.Msg == "" {
				t.Fatalf("error result %+v, want code %d", res, tc.code)
			}
		})
	}
}

// BenchmarkChainADD measures CNI ADD of a new pod as the runtime sees it:
// the primary chain alone (bridge + host-local) and with skiff-cni chained
// (pod and namespace lookups, rules, probe SNAT, ztunnel's ack). Creating
// and tearing down the sandbox is not timed. It prints the overhead.
func BenchmarkChainADD(b *testing.B) {
	e := newEnvWith(b, func(c *app.Config) { c.Log = slog.New(slog.DiscardHandler) })
	e.namespace(b, "mesh", true)
	primary, err := libcni.ConfListFromBytes(e.primaryRaw)
	if err != nil {
		b.Fatal(err)
	}
	chains := []struct {
		name string
		list *libcni.NetworkConfigList
	}{{"bridge+host-local", primary}, {"bridge+host-local+skiff-cni", e.conflist(b)}}
	type stats struct{ mean, p50, p99 time.Duration }
	res := map[string]stats{}
	seq := 0
	for _, c := range chains {
		b.Run(c.name, func(b *testing.B) {
			var lat []time.Duration
			var total time.Duration
			for range b.N {
				b.StopTimer()
				seq++
				p := e.createPod(b, "mesh", fmt.Sprintf("bench-%d", seq))
				p.list = c.list
				b.StartTimer()
				start := time.Now()
				err := e.cni(func(ctx context.Context, cc *libcni.CNIConfig) error {
					_, err := cc.AddNetworkList(ctx, p.list, p.rt())
					return err
				})
				d := time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if err := e.del(p); err != nil {
					b.Fatal(err)
				}
				e.deletePod(b, p)
				p.ns.Delete()
				lat = append(lat, d)
				total += d
				b.StartTimer()
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			res[c.name] = stats{total / time.Duration(b.N), lat[len(lat)/2], lat[len(lat)*99/100]}
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
	base, ok := res[chains[0].name]
	if !ok {
		return
	}
	fmt.Println("\nCNI ADD of a new pod (ratio: to the primary chain alone)")
	fmt.Printf("%-30s %10s %10s %10s %8s\n", "chain", "mean ms", "p50 ms", "p99 ms", "ratio")
	for _, c := range chains {
		r, ok := res[c.name]
		if !ok {
			continue
		}
		fmt.Printf("%-30s %10.2f %10.2f %10.2f %8.2f\n", c.name, ms(r.mean), ms(r.p50), ms(r.p99), float64(r.mean)/float64(base.mean))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// The agent serves heap and CPU profiles only when asked (--profiling): its
// HTTP address is reachable from the cluster.
func TestProfilingOnlyWhenAsked(t *testing.T) {
	e := newEnv(t)
	if got := e.get("/debug/pprof/"); got != http.StatusNotFound {
		t.Errorf("/debug/pprof/ answered %d without --profiling, want 404", got)
	}
	e.stopAgent(t)
	e.agentCfg.Profiling = true
	e.startAgent(t)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1"} {
		if got := e.get(path); got != http.StatusOK {
			t.Errorf("%s answered %d with --profiling, want 200", path, got)
		}
	}
}
