package app_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/skiffmesh/skiff/istiod-lite/internal/app"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/apis/apistest"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// cluster is a real apiserver and etcd with Skiff's CRDs.
type cluster struct {
	env *envtest.Environment
	cfg *rest.Config
	c   client.Client
	cs  *kubernetes.Clientset
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	env, cfg, c := apistest.StartWithCRDs(t)
	return &cluster{env: env, cfg: cfg, c: c, cs: kubernetes.NewForConfigOrDie(cfg)}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runIstiod starts istiod-lite and waits until /readyz answers 200.
// runIstiod starts istiod-lite and waits until it is ready. stop shuts it
// down and returns Run's error (it may be called from another test than t).
func runIstiod(t *testing.T, cl *cluster, grpcAddr string, opts ...func(*app.Config)) (stop func() error, httpAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	httpAddr = freePort(t)
	done := make(chan error, 1)
	cfg := app.Config{
		Rest: cl.cfg, GRPCAddr: grpcAddr, HTTPAddr: httpAddr, DNSNames: []string{caclient.DefaultServerName},
		GatewayAPI: true, Policies: true, ShutdownGrace: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { done <- app.Run(ctx, cfg) }()
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("istiod-lite exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return func() error {
		cancel()
		if err := <-done; err != nil {
			return fmt.Errorf("istiod-lite: %w", err)
		}
		return nil
	}, httpAddr
}

func (cl *cluster) create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := cl.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

// pod creates a pod on node, then gives it an IP as the kubelet would, and
// marks it redirected to ztunnel as the node agent would.
func (cl *cluster) pod(t *testing.T, ns, name, sa, node, ip string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels,
			Annotations: map[string]string{index.AnnotationRedirection: index.RedirectionEnabled}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}
	cl.create(t, p)
	if ip != "" {
		p.Status.PodIP = ip
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		p.Status.Phase = corev1.PodRunning
		if err := cl.c.Status().Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// token returns a file holding a token for sa bound to pod.
func (cl *cluster) token(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	tr, err := cl.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(context.Background(), pod.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:      []string{"istio-ca"},
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (cl *cluster) roots(t *testing.T, ns string) *x509.CertPool {
	t.Helper()
	var cm corev1.ConfigMap
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "istio-ca-root-cert"}, &cm)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("root ConfigMap not published in %s: %v", ns, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	certs, err := identity.ParseCertificatesPEM([]byte(cm.Data["root-cert.pem"]))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool
}

func TestControlPlane(t *testing.T) {
	cl := startCluster(t)
	ctx := context.Background()
	for _, ns := range []string{"istio-system", "app"} {
		labels := map[string]string{}
		if ns == "app" {
			labels["istio.io/dataplane-mode"] = "ambient"
		}
		cl.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
	}
	for _, sa := range []struct{ ns, name string }{{"istio-system", "ztunnel"}, {"app", "near"}, {"app", "far"}} {
		cl.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.ns, Name: sa.name}})
	}
	for _, n := range []string{"node-a", "node-b"} {
		cl.create(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	ztunnel := cl.pod(t, "istio-system", "ztunnel-a", "ztunnel", "node-a", "", nil)
	near := cl.pod(t, "app", "near", "near", "node-a", "10.1.0.1", map[string]string{"app": "near"})
	cl.pod(t, "app", "far", "far", "node-b", "10.1.0.2", nil)

	grpcAddr := freePort(t)
	stop, httpAddr := runIstiod(t, cl, grpcAddr)
	stopped := false
	defer func() {
		if !stopped {
			if err := stop(); err != nil {
				t.Error(err)
			}
		}
	}()
	roots := cl.roots(t, "app")
	ztToken := cl.token(t, ztunnel)

	t.Run("root ConfigMap is kept", func(t *testing.T) {
		var cm corev1.ConfigMap
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "istio-ca-root-cert"}, &cm); err != nil {
			t.Fatal(err)
		}
		root := cm.Data["root-cert.pem"]
		cm.Data["root-cert.pem"] = "tampered"
		if err := cl.c.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
		check := func(what string) {
			eventually(t, what, func() error {
				var cm corev1.ConfigMap
				if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "istio-ca-root-cert"}, &cm); err != nil {
					return err
				}
				if cm.Data["root-cert.pem"] != root {
					return fmt.Errorf("root not restored")
				}
				return nil
			})
		}
		check("edited ConfigMap restored")
		if err := cl.c.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "istio-ca-root-cert"}}); err != nil {
			t.Fatal(err)
		}
		check("deleted ConfigMap recreated")
		// One without the label (as another control plane would leave it)
		// is invisible to the label-filtered cache, and still taken over.
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "istio-ca-root-cert"}, &cm); err != nil {
			t.Fatal(err)
		}
		cm.Labels = nil
		cm.Data["root-cert.pem"] = "old"
		if err := cl.c.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
		eventually(t, "unlabelled ConfigMap taken over", func() error {
			var cm corev1.ConfigMap
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "app", Name: "istio-ca-root-cert"}, &cm); err != nil {
				return err
			}
			if cm.Data["root-cert.pem"] != root || cm.Labels["istio.io/config"] != "true" {
				return fmt.Errorf("data %.10q labels %v", cm.Data["root-cert.pem"], cm.Labels)
			}
			return nil
		})
	})

	t.Run("CA", func(t *testing.T) {
		td := spiffeid.RequireTrustDomainFromString("cluster.local")
		id := func(ns, sa string) spiffeid.ID { i, _ := identity.WorkloadID(td, ns, sa); return i }
		for _, tc := range []struct {
			name      string
			tokenFile string
			id        spiffeid.ID
			want      codes.Code
		}{
			{"ztunnel for a pod on its node", ztToken, id("app", "near"), codes.OK},
			{"ztunnel for a pod on another node", ztToken, id("app", "far"), codes.PermissionDenied},
			{"ztunnel for an identity with no pod", ztToken, id("app", "ghost"), codes.PermissionDenied},
			{"ztunnel for itself", ztToken, id("istio-system", "ztunnel"), codes.OK},
			{"workload for itself", cl.token(t, near), id("app", "near"), codes.OK},
			{"workload for another identity", cl.token(t, near), id("app", "far"), codes.PermissionDenied},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, err := caclient.New(caclient.Options{Address: grpcAddr, Roots: roots, TokenFile: tc.tokenFile, Impersonate: true})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				key, _ := identity.GenerateKey()
				csr, _ := identity.NewCSR(key, tc.id)
				chain, err := c.CreateCertificate(ctx, tc.id, csr, time.Hour)
				if got := status.Code(errors.Unwrap(err)); err != nil && got != tc.want || err == nil && tc.want != codes.OK {
					t.Fatalf("CreateCertificate(%s): err = %v, want %v", tc.id, err, tc.want)
				}
				if err == nil && chain[0].URIs[0].String() != tc.id.String() {
					t.Fatalf("leaf for %s, want %s", chain[0].URIs[0], tc.id)
				}
			})
		}
		badToken := filepath.Join(t.TempDir(), "bad")
		_ = os.WriteFile(badToken, []byte("not-a-token"), 0o600)
		c, _ := caclient.New(caclient.Options{Address: grpcAddr, Roots: roots, TokenFile: badToken})
		defer c.Close()
		key, _ := identity.GenerateKey()
		csr, _ := identity.NewCSR(key, id("app", "near"))
		if _, err := c.CreateCertificate(ctx, id("app", "near"), csr, 0); status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
			t.Fatalf("bad token: err = %v, want Unauthenticated", err)
		}
	})

	// xDS: exact deltas for pod lifecycle events.
	deltas := make(chan xds.Delta, 100)
	xc, err := xds.NewClient(xds.ClientOptions{
		Address: grpcAddr, Roots: roots, TokenFile: ztToken, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Subscriptions: []xds.Subscription{{TypeURL: xds.AddressType, Apply: func(d xds.Delta) error { deltas <- d; return nil }}},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	clientDone := make(chan struct{})
	go func() { _ = xc.Run(cctx); close(clientDone) }()
	defer func() { ccancel(); <-clientDone }()

	next := func(t *testing.T) xds.Delta {
		t.Helper()
		select {
		case d := <-deltas:
			return d
		case <-time.After(30 * time.Second):
			t.Fatal("no xDS delta")
		}
		return xds.Delta{}
	}
	workload := func(t *testing.T, r xds.Resource) *workloadapi.Workload {
		t.Helper()
		var a workloadapi.Address
		if err := r.Body.UnmarshalTo(&a); err != nil {
			t.Fatal(err)
		}
		return a.GetWorkload()
	}
	uid := func(name string) string { return "Kubernetes//Pod/app/" + name }
	initial := next(t)
	// The two pods with IPs, and the apiserver's own Service.
	if got := names(initial.Updated); len(got) != 3 || got[0] != uid("far") || got[1] != uid("near") || got[2] != "default/kubernetes.default.svc.cluster.local" || len(initial.Removed) != 0 {
		t.Fatalf("initial state: updated %v, removed %v", got, initial.Removed)
	}
	var w *workloadapi.Workload
	for _, r := range initial.Updated {
		if r.Name == uid("far") {
			w = workload(t, r)
		}
	}
	if w.GetTunnelProtocol() != workloadapi.TunnelProtocol_HBONE || w.GetNode() != "node-b" || w.GetServiceAccount() != "far" || w.GetStatus() != workloadapi.WorkloadStatus_UNHEALTHY {
		t.Fatalf("workload far: %v", w)
	}

	expectOne := func(t *testing.T, name string, check func(*workloadapi.Workload) bool) {
		t.Helper()
		d := next(t)
		if len(d.Updated) != 1 || len(d.Removed) != 0 || d.Updated[0].Name != name {
			t.Fatalf("delta: updated %v removed %v; want exactly %s", names(d.Updated), d.Removed, name)
		}
		if w := workload(t, d.Updated[0]); !check(w) {
			t.Fatalf("workload %s: %v", name, w)
		}
	}
	var p *corev1.Pod
	t.Run("pod added", func(t *testing.T) {
		p = cl.pod(t, "app", "new", "near", "node-a", "10.1.0.3", nil)
		expectOne(t, uid("new"), func(w *workloadapi.Workload) bool {
			return len(w.GetAddresses()) == 1 && net.IP(w.GetAddresses()[0]).String() == "10.1.0.3" && w.GetTunnelProtocol() == workloadapi.TunnelProtocol_HBONE
		})
	})
	t.Run("pod labelled out of the mesh", func(t *testing.T) {
		// The node agent removes the redirect and its annotation.
		p.Labels = map[string]string{"istio.io/dataplane-mode": "none"}
		p.Annotations = nil
		if err := cl.c.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		expectOne(t, uid("new"), func(w *workloadapi.Workload) bool { return w.GetTunnelProtocol() == workloadapi.TunnelProtocol_NONE })
	})
	t.Run("pod ready", func(t *testing.T) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := cl.c.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		expectOne(t, uid("new"), func(w *workloadapi.Workload) bool { return w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY })
	})
	t.Run("pod deleted", func(t *testing.T) {
		if err := cl.c.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		d := next(t)
		if len(d.Updated) != 0 || len(d.Removed) != 1 || d.Removed[0] != uid("new") {
			t.Fatalf("delta: updated %v removed %v; want only %s removed", names(d.Updated), d.Removed, uid("new"))
		}
	})
	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, name := range []string{"pilot_xds_pushes", "\npilot_xds ", "pilot_proxy_convergence_time", "citadel_server_csr_count", "citadel_server_success_cert_issuance_count", `citadel_server_csr_denied_count{reason="impersonation_denied"}`} {
			if !strings.Contains(string(body), name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})
	t.Run("reconnect resumes without a full resend", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Error(err)
		}
		stopped = true
		// While istiod-lite is down, one pod appears.
		cl.pod(t, "app", "while-down", "far", "node-b", "10.1.0.4", nil)
		stop, _ = runIstiod(t, cl, grpcAddr)
		stopped = false
		// The restarted istiod-lite reuses the persisted root, so the
		// client's trust still holds, and sends only what changed.
		var got []string
		for len(got) == 0 {
			d := next(t)
			if len(d.Removed) != 0 {
				t.Fatalf("after reconnect: removed %v", d.Removed)
			}
			got = names(d.Updated)
		}
		if len(got) != 1 || got[0] != uid("while-down") {
			t.Fatalf("after reconnect: updated %v, want only %s", got, uid("while-down"))
		}
		// The client records a delta once its Apply (above) has returned.
		eventually(t, "client state after the resume", func() error {
			if n := len(xc.Versions(xds.AddressType)); n != 4 {
				return fmt.Errorf("client holds %d addresses, want 4", n)
			}
			return nil
		})
	})
	t.Run("drain", func(t *testing.T) {
		if err := stop(); err != nil {
			t.Error(err)
		}
		stopped = true
		drainStop, drainHTTP := runIstiod(t, cl, grpcAddr, func(c *app.Config) { c.DrainDelay = 10 * time.Second })
		done := make(chan error, 1)
		go func() { done <- drainStop() }() // SIGTERM
		eventually(t, "not ready once draining", func() error {
			resp, err := http.Get("http://" + drainHTTP + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return errors.New("/readyz answers 200")
			}
			return nil
		})
		// No other istiod-lite runs: a pod added now reaches the client only
		// if the draining one still serves and pushes.
		cl.pod(t, "app", "while-draining", "far", "node-b", "10.1.0.5", nil)
		for {
			d := next(t)
			if got := names(d.Updated); len(got) == 1 && got[0] == uid("while-draining") {
				break
			} else if len(got) != 0 || len(d.Removed) != 0 {
				t.Fatalf("while draining: updated %v, removed %v; want only %s", got, d.Removed, uid("while-draining"))
			}
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// names returns the resources' names, sorted.
func names(rs []xds.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}
