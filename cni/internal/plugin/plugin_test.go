package plugin

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
	"github.com/skiffmesh/skiff/cni/internal/testenv"
)

// recorder is an agent backend that records what the plugin asked.
type recorder struct {
	mu            sync.Mutex
	adds, checks  []agentapi.AddRequest
	dels          []agentapi.DelRequest
	err, readyErr error
}

func (r *recorder) Add(_ context.Context, req *agentapi.AddRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adds = append(r.adds, *req)
	return r.err
}

func (r *recorder) Check(_ context.Context, req *agentapi.CheckRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, *req)
	return r.err
}

func (r *recorder) Del(_ context.Context, req *agentapi.DelRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dels = append(r.dels, *req)
	return r.err
}

func (r *recorder) Ready() error { return r.readyErr }

func (r *recorder) reset(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adds, r.checks, r.dels, r.err = nil, nil, nil, err
}

func (r *recorder) counts() (adds, checks, dels int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.adds), len(r.checks), len(r.dels)
}

// socketDir returns a short directory for unix sockets (path length limit).
func socketDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "skt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func startAgent(t *testing.T, b agentapi.Backend) string {
	path := filepath.Join(socketDir(t), "agent.sock")
	ln, err := agentapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agentapi.Serve(ctx, ln, agentapi.Handler(b, slog.New(slog.DiscardHandler)))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func createPod(t *testing.T, cs kubernetes.Interface, ns, name string, labels map[string]string) *corev1.Pod {
	t.Helper()
	pod, err := cs.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web",
			Containers:         []corev1.Container{{Name: "c", Image: "app"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func createNamespace(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func conf(socket, kubeconfig, prevResult string) []byte {
	s := `{"cniVersion":"1.0.0","name":"net","type":"skiff-cni","agentSocket":"` + socket + `","kubeconfig":"` + kubeconfig + `"`
	if prevResult != "" {
		s += `,"prevResult":` + prevResult
	}
	return []byte(s + "}")
}

func cniCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestCommands(t *testing.T) {
	cluster := testenv.Start(t)
	cs := cluster.Client
	createNamespace(t, cs, "mesh", map[string]string{mesh.DataplaneModeLabel: mesh.ModeAmbient})
	createNamespace(t, cs, "plain", nil)
	meshPod := createPod(t, cs, "mesh", "web", nil)
	optOut := createPod(t, cs, "mesh", "opt-out", map[string]string{mesh.DataplaneModeLabel: mesh.ModeNone})
	labelled := createPod(t, cs, "plain", "labelled", map[string]string{mesh.DataplaneModeLabel: mesh.ModeAmbient})
	plainPod := createPod(t, cs, "plain", "plain", nil)

	rec := &recorder{}
	socket := startAgent(t, rec)
	missing := filepath.Join(socketDir(t), "none.sock")

	k8sArgs := func(p *corev1.Pod) string {
		return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.Namespace + ";K8S_POD_NAME=" + p.Name + ";K8S_POD_UID=" + string(p.UID)
	}
	run := func(cmd func(*Plugin) func(*skel.CmdArgs) error, stdin []byte, args string) (string, error) {
		var out, errOut bytes.Buffer
		p := New(&out, &errOut)
		err := cmd(p)(&skel.CmdArgs{ContainerID: "c1", Netns: "/var/run/netns/cni-1", IfName: "eth0", Args: args, StdinData: stdin})
		return out.String(), err
	}
	add := func(p *Plugin) func(*skel.CmdArgs) error { return p.Add }
	del := func(p *Plugin) func(*skel.CmdArgs) error { return p.Del }
	check := func(p *Plugin) func(*skel.CmdArgs) error { return p.Check }
	status := func(p *Plugin) func(*skel.CmdArgs) error { return p.Status }

	// prevResult with unusual spacing, to prove it passes through byte for byte.
	prevRaw := strings.Replace(prev, `"ips":`, `"ips" :  `, 1)

	t.Run("ADD enrols a pod of a labelled namespace", func(t *testing.T) {
		rec.reset(nil)
		out, err := run(add, conf(socket, cluster.Kubeconfig, prevRaw), k8sArgs(meshPod))
		if err != nil {
			t.Fatal(err)
		}
		if out != prevRaw {
			t.Fatalf("result changed:\n got %s\nwant %s", out, prevRaw)
		}
		if len(rec.adds) != 1 {
			t.Fatalf("agent got %d adds, want 1", len(rec.adds))
		}
		got := rec.adds[0]
		want := agentapi.Pod{Name: "web", Namespace: "mesh", UID: string(meshPod.UID), ServiceAccount: "web"}
		if got.Pod != want || got.Netns != "/var/run/netns/cni-1" || got.ContainerID != "c1" ||
			len(got.IPs) != 2 || got.IPs[0] != netip.MustParseAddr("10.1.2.3") {
			t.Fatalf("agent request %+v", got)
		}
	})
	t.Run("ADD enrols a labelled pod in an unlabelled namespace", func(t *testing.T) {
		rec.reset(nil)
		if _, err := run(add, conf(socket, cluster.Kubeconfig, prev), k8sArgs(labelled)); err != nil {
			t.Fatal(err)
		}
		if a, _, _ := rec.counts(); a != 1 {
			t.Fatalf("agent got %d adds, want 1", a)
		}
	})
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		args       string
		kubeconfig string
	}{
		{"ADD passes an opted-out pod through", optOut, "", cluster.Kubeconfig},
		{"ADD passes a pod outside the mesh through", plainPod, "", cluster.Kubeconfig},
		{"ADD passes a non-Kubernetes container through", nil, "IgnoreUnknown=1", "/nonexistent"},
		{"ADD skips excluded namespaces without asking the apiserver", nil, "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns", "/nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.reset(nil)
			args := tc.args
			if tc.pod != nil {
				args = k8sArgs(tc.pod)
			}
			out, err := run(add, conf(socket, tc.kubeconfig, prev), args)
			if err != nil {
				t.Fatal(err)
			}
			if out != prev {
				t.Fatalf("result changed: %s", out)
			}
			if a, _, _ := rec.counts(); a != 0 {
				t.Fatalf("agent asked to enrol")
			}
		})
	}

	failures := []struct {
		name     string
		stdin    []byte
		args     string
		agentErr error
		code     uint
		msg      string
	}{
		{"agent down", conf(missing, cluster.Kubeconfig, prev), k8sArgs(meshPod), nil, types.ErrTryAgainLater, "node agent is not running"},
		{"ztunnel down", conf(socket, cluster.Kubeconfig, prev), k8sArgs(meshPod),
			&agentapi.Error{Message: "ztunnel is not connected", Retryable: true}, types.ErrTryAgainLater, "ztunnel is not connected"},
		{"agent refuses", conf(socket, cluster.Kubeconfig, prev), k8sArgs(meshPod),
			errors.New("installing rules: boom"), types.ErrInternal, "boom"},
		{"no prevResult", conf(socket, cluster.Kubeconfig, ""), k8sArgs(meshPod), nil, types.ErrInvalidNetworkConfig, "chained"},
		{"malformed stdin", []byte(`{"cniVersion": "1.0.0", "type": `), k8sArgs(meshPod), nil, types.ErrInvalidNetworkConfig, "bad network configuration"},
		{"malformed args", conf(socket, cluster.Kubeconfig, prev), "K8S_POD_NAME", nil, types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
		{"pod not found", conf(socket, cluster.Kubeconfig, prev), "K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=ghost", nil, types.ErrTryAgainLater, "looking up pod"},
		{"stale sandbox", conf(socket, cluster.Kubeconfig, prev), "K8S_POD_NAMESPACE=mesh;K8S_POD_NAME=web;K8S_POD_UID=other", nil, types.ErrTryAgainLater, "UID"},
		{"no kubeconfig", conf(socket, "/nonexistent", prev), k8sArgs(meshPod), nil, types.ErrTryAgainLater, "kubeconfig"},
		{"bad prevResult", conf(socket, cluster.Kubeconfig, `{"ips":[{"address":"x"}]}`), k8sArgs(meshPod), nil, types.ErrDecodingFailure, "prevResult"},
	}
	for _, tc := range failures {
		t.Run("ADD fails: "+tc.name, func(t *testing.T) {
			rec.reset(tc.agentErr)
			out, err := run(add, tc.stdin, tc.args)
			if err == nil {
				t.Fatalf("ADD succeeded, printed %s", out)
			}
			if cniCode(err) != tc.code || !strings.Contains(err.Error()+detail(err), tc.msg) {
				t.Fatalf("error %v (code %d, details %q); want code %d mentioning %q", err, cniCode(err), detail(err), tc.code, tc.msg)
			}
			if out != "" {
				t.Fatalf("printed a result on failure: %s", out)
			}
		})
	}

	t.Run("DEL tells the agent", func(t *testing.T) {
		rec.reset(nil)
		if _, err := run(del, conf(socket, cluster.Kubeconfig, ""), k8sArgs(meshPod)); err != nil {
			t.Fatal(err)
		}
		if len(rec.dels) != 1 || rec.dels[0].Pod.Name != "web" || rec.dels[0].Pod.UID != string(meshPod.UID) {
			t.Fatalf("agent dels %+v", rec.dels)
		}
	})
	t.Run("DEL succeeds with the agent down", func(t *testing.T) {
		if _, err := run(del, conf(missing, cluster.Kubeconfig, ""), k8sArgs(meshPod)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("DEL reports agent errors", func(t *testing.T) {
		rec.reset(errors.New("boom"))
		if _, err := run(del, conf(socket, cluster.Kubeconfig, ""), k8sArgs(meshPod)); err == nil {
			t.Fatal("DEL hid the agent's error")
		}
	})
	t.Run("CHECK asks the agent about mesh pods only", func(t *testing.T) {
		rec.reset(nil)
		if _, err := run(check, conf(socket, cluster.Kubeconfig, prev), k8sArgs(meshPod)); err != nil {
			t.Fatal(err)
		}
		if _, err := run(check, conf(socket, cluster.Kubeconfig, prev), k8sArgs(plainPod)); err != nil {
			t.Fatal(err)
		}
		if _, c, _ := rec.counts(); c != 1 {
			t.Fatalf("agent got %d checks, want 1", c)
		}
		rec.reset(errors.New("rules missing"))
		if _, err := run(check, conf(socket, cluster.Kubeconfig, prev), k8sArgs(meshPod)); err == nil {
			t.Fatal("CHECK passed while the agent reports the pod broken")
		}
		if _, err := run(check, conf(socket, cluster.Kubeconfig, ""), k8sArgs(meshPod)); cniCode(err) != types.ErrInvalidNetworkConfig {
			t.Fatalf("CHECK without prevResult: %v", err)
		}
	})
	t.Run("STATUS follows agent readiness", func(t *testing.T) {
		rec.readyErr = nil
		if _, err := run(status, conf(socket, cluster.Kubeconfig, ""), ""); err != nil {
			t.Fatal(err)
		}
		rec.readyErr = &agentapi.Error{Message: "ztunnel not connected", Retryable: true}
		if _, err := run(status, conf(socket, cluster.Kubeconfig, ""), ""); cniCode(err) != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS with ztunnel down: %v", err)
		}
		if _, err := run(status, conf(missing, cluster.Kubeconfig, ""), ""); cniCode(err) != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS with agent down: %v", err)
		}
	})
}

func detail(err error) string {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Details
	}
	return ""
}
