package app_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
	"github.com/skiffmesh/skiff/pkg/xds/xdstest"
)

// eventually polls cond until it holds or a generous deadline passes; the
// deadline is a failure bound, not an expectation about timing.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startGC runs kube-controller-manager's garbage collector against the
// cluster, so owned objects are deleted with their owner as in a cluster.
func startGC(t *testing.T, cl *cluster) {
	t.Helper()
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no kube-controller-manager beside kube-apiserver: %v", err)
	}
	user, err := cl.env.AddUser(envtest.User{Name: "gc", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--kubeconfig="+kcPath, "--controllers=garbagecollector", "--leader-elect=false",
		"--use-service-account-credentials=false", fmt.Sprintf("--secure-port=%d", port), "--bind-address=127.0.0.1", "--cert-dir="+dir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func TestWaypointDeployer(t *testing.T) {
	cl := startCluster(t)
	startGC(t, cl)
	ctx := context.Background()
	cl.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}})
	cl.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}})
	cl.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel"}})
	cl.create(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	ztunnel := cl.pod(t, "istio-system", "ztunnel-a", "ztunnel", "node-a", "", nil)

	grpcAddr := freePort(t)
	stop, _ := runIstiod(t, cl, grpcAddr)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	roots := cl.roots(t, "shop")

	t.Run("GatewayClass", func(t *testing.T) {
		eventually(t, "GatewayClass istio-waypoint accepted", func() error {
			var gc gatewayv1.GatewayClass
			if err := cl.c.Get(ctx, client.ObjectKey{Name: "istio-waypoint"}, &gc); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") {
				return fmt.Errorf("conditions %v", gc.Status.Conditions)
			}
			return nil
		})
		var gc gatewayv1.GatewayClass
		_ = cl.c.Get(ctx, client.ObjectKey{Name: "istio-waypoint"}, &gc)
		oldUID := gc.UID
		if err := cl.c.Delete(ctx, &gc); err != nil {
			t.Fatal(err)
		}
		eventually(t, "GatewayClass recreated after deletion", func() error {
			var gc gatewayv1.GatewayClass
			if err := cl.c.Get(ctx, client.ObjectKey{Name: "istio-waypoint"}, &gc); err != nil {
				return err
			}
			if gc.UID == oldUID || !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") {
				return fmt.Errorf("not recreated and accepted yet")
			}
			return nil
		})
	})

	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp", Labels: map[string]string{"istio.io/waypoint-for": "service"}},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "istio-waypoint", Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
	}
	cl.create(t, gw)
	var wpIP string
	t.Run("deploys and reports status", func(t *testing.T) {
		for _, obj := range []client.Object{&corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}} {
			eventually(t, fmt.Sprintf("%T owned by the Gateway", obj), func() error {
				if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "wp"}, obj); err != nil {
					return err
				}
				ref := metav1.GetControllerOf(obj)
				if ref == nil || ref.Kind != "Gateway" || ref.Name != "wp" {
					return fmt.Errorf("controller reference %v", ref)
				}
				return nil
			})
		}
		var svc corev1.Service
		_ = cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "wp"}, &svc)
		// HBONE on TCP 15008, and over QUIC on UDP 15008 (the default
		// transport, auto).
		if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 15008 || svc.Spec.Ports[1].Port != 15008 ||
			svc.Spec.Ports[0].Protocol == svc.Spec.Ports[1].Protocol {
			t.Fatalf("waypoint service ports %v, want HBONE on TCP and UDP 15008", svc.Spec.Ports)
		}
		wpIP = svc.Spec.ClusterIP
		eventually(t, "Gateway Accepted and Programmed with the Service address", func() error {
			var g gatewayv1.Gateway
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "wp"}, &g); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(g.Status.Conditions, "Accepted") || !meta.IsStatusConditionTrue(g.Status.Conditions, "Programmed") {
				return fmt.Errorf("conditions %v", g.Status.Conditions)
			}
			if len(g.Status.Addresses) != 1 || g.Status.Addresses[0].Value != wpIP {
				return fmt.Errorf("addresses %v, want %s", g.Status.Addresses, wpIP)
			}
			return nil
		})
	})

	t.Run("events", func(t *testing.T) {
		eventually(t, "a Deployed event on the Gateway", func() error {
			var evs eventsv1.EventList
			if err := cl.c.List(ctx, &evs, client.InNamespace("shop")); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Regarding.Kind == "Gateway" && e.Regarding.Name == "wp" && e.Reason == "Deployed" && e.Type == corev1.EventTypeNormal {
					return nil
				}
			}
			return fmt.Errorf("%d events, none Deployed for wp", len(evs.Items))
		})
	})

	t.Run("bad listener is not accepted", func(t *testing.T) {
		bad := &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bad"},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: "istio-waypoint", Listeners: []gatewayv1.Listener{{Name: "http", Port: 80, Protocol: "HTTP"}}},
		}
		cl.create(t, bad)
		eventually(t, "Gateway with an HTTP listener refused", func() error {
			var g gatewayv1.Gateway
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "bad"}, &g); err != nil {
				return err
			}
			c := meta.FindStatusCondition(g.Status.Conditions, "Accepted")
			if c == nil || c.Status != metav1.ConditionFalse {
				return fmt.Errorf("conditions %v", g.Status.Conditions)
			}
			return nil
		})
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "bad"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
			t.Fatalf("deployment for a refused Gateway: err = %v, want NotFound", err)
		}
	})

	// A service bound to the waypoint, with an HTTPRoute.
	for _, name := range []string{"reviews", "reviews-v1"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}},
		}
		if name == "reviews" {
			svc.Labels = map[string]string{"istio.io/use-waypoint": "wp"}
		}
		cl.create(t, svc)
	}
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr.To[gatewayv1.Group](""), Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "reviews", Port: ptr.To[gatewayv1.PortNumber](9080)}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "reviews-v1", Port: ptr.To[gatewayv1.PortNumber](9080)}, Weight: ptr.To[int32](90)}},
				{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "reviews-v2", Port: ptr.To[gatewayv1.PortNumber](9080)}, Weight: ptr.To[int32](10)}},
			}}},
		},
	}
	cl.create(t, route)
	t.Run("route parent status", func(t *testing.T) {
		eventually(t, "HTTPRoute parent Accepted, ResolvedRefs false for the missing backend", func() error {
			var r gatewayv1.HTTPRoute
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "reviews"}, &r); err != nil {
				return err
			}
			if len(r.Status.Parents) != 1 {
				return fmt.Errorf("parents %v", r.Status.Parents)
			}
			conds := r.Status.Parents[0].Conditions
			rr := meta.FindStatusCondition(conds, "ResolvedRefs")
			if !meta.IsStatusConditionTrue(conds, "Accepted") || rr == nil || rr.Status != metav1.ConditionFalse || rr.Reason != "BackendNotFound" {
				return fmt.Errorf("conditions %v", conds)
			}
			return nil
		})
	})

	t.Run("creating the missing backend resolves the route", func(t *testing.T) {
		cl.create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews-v2"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 9080}}}})
		eventually(t, "ResolvedRefs true", func() error {
			var r gatewayv1.HTTPRoute
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "reviews"}, &r); err != nil {
				return err
			}
			if len(r.Status.Parents) != 1 || !meta.IsStatusConditionTrue(r.Status.Parents[0].Conditions, "ResolvedRefs") {
				return fmt.Errorf("parents %v", r.Status.Parents)
			}
			return nil
		})
	})

	t.Run("GRPCRoute parent status", func(t *testing.T) {
		cl.create(t, &gatewayv1.GRPCRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "grpc"},
			Spec:       gatewayv1.GRPCRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr.To[gatewayv1.Group](""), Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "nosuch"}}}},
		})
		eventually(t, "GRPCRoute to a missing Service not accepted", func() error {
			var r gatewayv1.GRPCRoute
			if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "grpc"}, &r); err != nil {
				return err
			}
			if len(r.Status.Parents) != 1 {
				return fmt.Errorf("parents %v", r.Status.Parents)
			}
			c := meta.FindStatusCondition(r.Status.Parents[0].Conditions, "Accepted")
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NoMatchingParent" {
				return fmt.Errorf("conditions %v", r.Status.Parents[0].Conditions)
			}
			return nil
		})
	})

	t.Run("RateLimitPolicy status", func(t *testing.T) {
		for _, p := range []*policyv1alpha1.RateLimitPolicy{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "per-user"}, Spec: policyv1alpha1.RateLimitPolicySpec{
				TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: "reviews"}}},
				Limit:      policyv1alpha1.Limit{Requests: 10, Unit: policyv1alpha1.Second, Burst: ptr.To[uint32](20)},
				Key:        &policyv1alpha1.RateLimitKey{Type: policyv1alpha1.KeyHeader, Header: "X-User"}}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "dangling"}, Spec: policyv1alpha1.RateLimitPolicySpec{
				TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "nosuch"}}},
				Limit:      policyv1alpha1.Limit{Requests: 1, Unit: policyv1alpha1.Minute}}},
		} {
			cl.create(t, p)
		}
		for name, want := range map[string]string{"per-user": "Accepted", "dangling": "TargetNotFound"} {
			eventually(t, "RateLimitPolicy "+name, func() error {
				var p policyv1alpha1.RateLimitPolicy
				if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &p); err != nil {
					return err
				}
				if len(p.Status.Ancestors) != 1 {
					return fmt.Errorf("ancestors %v", p.Status.Ancestors)
				}
				c := meta.FindStatusCondition(p.Status.Ancestors[0].Conditions, "Accepted")
				if c == nil || c.Reason != want {
					return fmt.Errorf("conditions %v", p.Status.Ancestors[0].Conditions)
				}
				return nil
			})
		}
	})

	t.Run("AuthorizationPolicy status", func(t *testing.T) {
		sel := &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}}
		http := []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Methods: []string{"GET"}}}}}}
		for _, tc := range []struct {
			name, cond, status, reason string
			spec                       securityv1.AuthorizationPolicySpec
		}{
			{"l4", "ZtunnelAccepted", "True", "Accepted", securityv1.AuthorizationPolicySpec{Selector: sel, Rules: []securityv1.Rule{{From: []securityv1.RuleFrom{{Source: &securityv1.Source{Namespaces: []string{"shop"}}}}}}}},
			{"http-at-ztunnel", "ZtunnelAccepted", "False", "UnsupportedValue", securityv1.AuthorizationPolicySpec{Selector: sel, Rules: http}},
			{"at-waypoint", "WaypointAccepted", "True", "Accepted", securityv1.AuthorizationPolicySpec{TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "reviews"}}, Rules: http}},
			{"no-target", "WaypointAccepted", "False", "TargetNotFound", securityv1.AuthorizationPolicySpec{TargetRefs: []securityv1.PolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "nosuch"}}}},
		} {
			cl.create(t, &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: tc.name}, Spec: tc.spec})
			eventually(t, "status of "+tc.name, func() error {
				var p securityv1.AuthorizationPolicy
				if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: tc.name}, &p); err != nil {
					return err
				}
				c := meta.FindStatusCondition(p.Status.Conditions, tc.cond)
				if c == nil || string(c.Status) != tc.status || c.Reason != tc.reason {
					return fmt.Errorf("conditions %v", p.Status.Conditions)
				}
				return nil
			})
		}
	})

	t.Run("ztunnel sees the service's waypoint", func(t *testing.T) {
		var addrs xdstest.Bodies
		startClient(t, grpcAddr, roots, cl.token(t, ztunnel), xds.Subscription{TypeURL: xds.AddressType, Apply: addrs.Apply})
		eventually(t, "service reviews bound to the waypoint", func() error {
			body, ok := addrs.Get("shop/reviews.shop.svc.cluster.local")
			if !ok {
				return fmt.Errorf("no service")
			}
			var a workloadapi.Address
			if err := body.UnmarshalTo(&a); err != nil {
				return err
			}
			wp := a.GetService().GetWaypoint()
			if wp == nil || net.IP(wp.GetAddress().GetAddress()).String() != wpIP || wp.GetHboneMtlsPort() != 15008 {
				return fmt.Errorf("waypoint %v, want %s:15008", wp, wpIP)
			}
			return nil
		})
	})

	t.Run("waypoint gets its own configuration only", func(t *testing.T) {
		wpPod := cl.pod(t, "shop", "wp-0", "wp", "node-a", "10.2.0.9", nil)
		var wps xdstest.Bodies
		startClient(t, grpcAddr, roots, cl.token(t, wpPod), xds.Subscription{TypeURL: xds.WaypointType, Names: []string{"shop/wp", "shop/other"}, Apply: wps.Apply})
		eventually(t, "waypoint config with the route", func() error {
			if _, ok := wps.Get("shop/other"); ok {
				return fmt.Errorf("got another waypoint's configuration")
			}
			body, ok := wps.Get("shop/wp")
			if !ok {
				return fmt.Errorf("no configuration")
			}
			var w waypointapi.Waypoint
			if err := body.UnmarshalTo(&w); err != nil {
				return err
			}
			if len(w.Services) != 1 || w.Services[0].Hostname != "reviews.shop.svc.cluster.local" || len(w.Services[0].HttpRoutes) != 1 {
				return fmt.Errorf("config %v", &w)
			}
			b := w.Services[0].HttpRoutes[0].Rules[0].Backends
			if len(b) != 2 || b[0].Weight != 90 || b[1].Weight != 10 {
				return fmt.Errorf("backends %v", b)
			}
			rl := w.Services[0].RateLimits
			if len(rl) != 1 || rl[0].Route != "shop/reviews" || rl[0].Requests != 10 || rl[0].Burst != 20 || rl[0].FillIntervalMs != 1000 ||
				rl[0].Key.GetType() != waypointapi.RateLimitKey_HEADER || rl[0].Key.GetHeader() != "x-user" {
				return fmt.Errorf("rate limits %v", rl)
			}
			if ps := w.Services[0].Policies; len(ps) != 1 || ps[0].Name != "at-waypoint" || ps[0].Groups[0].Rules[0].Matches[0].Methods[0].GetExact() != "GET" {
				return fmt.Errorf("policies %v", ps)
			}
			return nil
		})
		ztClient := startClient(t, grpcAddr, roots, cl.token(t, ztunnel), xds.Subscription{TypeURL: xds.WaypointType, Names: []string{"shop/wp"}})
		<-ztClient.Ready()
		if len(ztClient.Versions(xds.WaypointType)) != 0 {
			t.Fatal("ztunnel's account received a waypoint configuration")
		}
	})

	t.Run("deleting the Gateway deletes what it owned", func(t *testing.T) {
		if err := cl.c.Delete(ctx, gw); err != nil {
			t.Fatal(err)
		}
		for _, obj := range []client.Object{&corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}} {
			eventually(t, fmt.Sprintf("%T deleted", obj), func() error {
				err := cl.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "wp"}, obj)
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("still there (err %v)", err)
			})
		}
	})
}

func startClient(t *testing.T, addr string, roots *x509.CertPool, token string, sub xds.Subscription) *xds.Client {
	t.Helper()
	if sub.Apply == nil {
		sub.Apply = func(xds.Delta) error { return nil }
	}
	opts := xds.ClientOptions{
		Address: addr, TokenFile: token, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Subscriptions: []xds.Subscription{sub}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	opts.Roots = roots
	xc, err := xds.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = xc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return xc
}
