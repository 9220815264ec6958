package deployer

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// want is one expected condition of the route's only parent; an empty
// Status means the condition must be absent.
type want struct {
	typ     gatewayv1.RouteConditionType
	status  metav1.ConditionStatus
	reason  string
	message string
}

func TestRouteStatus(t *testing.T) {
	const parent = `"parentRefs":[{"kind":"Service","name":"web"}]`
	const v2 = `{"name":"web-v2","port":80}`
	accepted := want{gatewayv1.RouteConditionAccepted, metav1.ConditionTrue, "Accepted", ""}
	resolved := want{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionTrue, "ResolvedRefs", ""}
	noPartial := want{typ: gatewayv1.RouteConditionPartiallyInvalid}
	for _, tc := range []struct {
		name string
		kind routeKind
		spec string
		want []want
	}{
		{"supported", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x","value":"y"}]}}]}]}]}`,
			[]want{accepted, resolved, noPartial}},
		{"one rule of two unsupported", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[` + v2 + `]},{"name":"cors","filters":[{"type":"CORS","cors":{}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, resolved, {gatewayv1.RouteConditionPartiallyInvalid, metav1.ConditionTrue, "UnsupportedValue",
				`Dropped Rule 1 ("cors"): filters[0]: filter CORS is not supported; the waypoint answers its requests with HTTP 500.`}}},
		{"a regular expression RE2 cannot compile", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[` + v2 + `]},{"matches":[{"path":{"type":"RegularExpression","value":"/(?!admin).*"}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, resolved, {gatewayv1.RouteConditionPartiallyInvalid, metav1.ConditionTrue, "UnsupportedValue",
				"Dropped Rule 1: matches[0].path.value: invalid regular expression: error parsing regexp: invalid or unsupported Perl syntax: `(?!`; no match of the rule is valid, so the waypoint leaves it out."}}},
		{"two broken rules of three", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[` + v2 + `]},{"retry":{"attempts":500},"backendRefs":[` + v2 + `]},` +
				`{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-a","value":"1"}],"remove":["X-A"]}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, resolved, {gatewayv1.RouteConditionPartiallyInvalid, metav1.ConditionTrue, "UnsupportedValue",
				"Dropped Rule 1: retry.attempts: 500 attempts, at most 100; the waypoint answers its requests with HTTP 500. " +
					"Rule 2: filters[0].requestHeaderModifier.remove[0]: header X-A already has an action (set); the waypoint answers its requests with HTTP 500."}}},
		{"every rule refused", grpcRoutes,
			`{` + parent + `,"rules":[{"matches":[{"method":{"type":"RegularExpression","method":"Get("}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "UnsupportedValue", "No rule is supported: rule 0: matches[0].method.method: invalid regular expression"}, resolved, noPartial}},
		{"every rule unsupported", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web-v2"}}}]}]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "UnsupportedValue", "rule 0: backendRefs[0].filters[0]: filter RequestMirror is not supported on a backendRef"}, resolved, noPartial}},
		{"mirror to a missing Service", httpRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"gone","port":80}}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, {gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, "BackendNotFound", "gone not found"}, noPartial}},
		{"section name of a port", httpRoutes,
			`{"parentRefs":[{"kind":"Service","name":"web","sectionName":"http"}],"rules":[{"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, resolved}},
		{"section name of no port", httpRoutes,
			`{"parentRefs":[{"kind":"Service","name":"web","sectionName":"admin"}],"rules":[{"backendRefs":[` + v2 + `]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "NoMatchingParent", `no port named "admin"`}}},
		{"port and section name disagree", httpRoutes,
			`{"parentRefs":[{"kind":"Service","name":"web","sectionName":"http","port":9090}],"rules":[{"backendRefs":[` + v2 + `]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "NoMatchingParent", `named "http" and numbered 9090`}}},
		{"partially invalid, but the parent is not accepted", httpRoutes,
			`{"parentRefs":[{"kind":"Service","name":"gone"}],"rules":[{"backendRefs":[` + v2 + `]},{"filters":[{"type":"CORS","cors":{}}]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "NoMatchingParent", "gone not found"}, noPartial}},
		{"gRPC mirror", grpcRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web-v2","port":9090}}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, resolved, noPartial}},
		{"gRPC mirror in another namespace", grpcRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web-v2","namespace":"other","port":9090}}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{accepted, {gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, "RefNotPermitted", ""}}},
		{"gRPC ExtensionRef", grpcRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"ExtensionRef","extensionRef":{"group":"example.net","kind":"F","name":"f"}}],"backendRefs":[` + v2 + `]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "UnsupportedValue", "filter ExtensionRef is not supported"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := tc.kind.newObj()
			route.SetNamespace("shop")
			route.SetName("r")
			route.SetGeneration(3)
			var spec any
			switch r := route.(type) {
			case *gatewayv1.HTTPRoute:
				spec = &r.Spec
			case *gatewayv1.GRPCRoute:
				spec = &r.Spec
			}
			if err := json.Unmarshal([]byte(tc.spec), spec); err != nil {
				t.Fatal(err)
			}
			c := statusClient(t, route)
			rs := &routeStatus{c: c, kind: tc.kind}
			if _, err := rs.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "r"}}); err != nil {
				t.Fatal(err)
			}
			got := tc.kind.newObj()
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "r"}, got); err != nil {
				t.Fatal(err)
			}
			parents := tc.kind.status(got).Parents
			if len(parents) != 1 {
				t.Fatalf("parents %+v", parents)
			}
			for _, w := range tc.want {
				c := meta.FindStatusCondition(parents[0].Conditions, string(w.typ))
				if w.status == "" {
					if c != nil {
						t.Errorf("%s: %+v, want none", w.typ, c)
					}
					continue
				}
				if c == nil || c.Status != w.status || c.Reason != w.reason || !strings.Contains(c.Message, w.message) || c.ObservedGeneration != 3 {
					t.Errorf("%s: %+v, want %s %s %q", w.typ, c, w.status, w.reason, w.message)
				}
			}
		})
	}
}

// A route that becomes fully supported loses PartiallyInvalid.
func TestRouteStatusClearsPartiallyInvalid(t *testing.T) {
	route := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}}
	if err := json.Unmarshal([]byte(`{"parentRefs":[{"kind":"Service","name":"web"}],"rules":[{"backendRefs":[{"name":"web-v2","port":80}]},{"filters":[{"type":"CORS","cors":{}}]}]}`), &route.Spec); err != nil {
		t.Fatal(err)
	}
	c := statusClient(t, route)
	rs := &routeStatus{c: c, kind: httpRoutes}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "r"}}
	partial := func() *metav1.Condition {
		t.Helper()
		if _, err := rs.Reconcile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		var got gatewayv1.HTTPRoute
		if err := c.Get(context.Background(), req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(got.Status.Parents[0].Conditions, string(gatewayv1.RouteConditionPartiallyInvalid))
	}
	if partial() == nil {
		t.Fatal("PartiallyInvalid not set")
	}
	var cur gatewayv1.HTTPRoute
	if err := c.Get(context.Background(), req.NamespacedName, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Rules = cur.Spec.Rules[:1]
	if err := c.Update(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}
	if p := partial(); p != nil {
		t.Fatalf("PartiallyInvalid kept: %+v", p)
	}
}

// statusClient is a fake API server holding route, Services shop/web
// (ports http 80, grpc 9090) and shop/web-v2, and more.
func statusClient(t *testing.T, route client.Object, more ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := gatewayv1.Install(s); err != nil {
		t.Fatal(err)
	}
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}}}
	v2 := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-v2"}}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(append([]client.Object{route, web, v2}, more...)...).
		WithStatusSubresource(&gatewayv1.HTTPRoute{}, &gatewayv1.GRPCRoute{}).Build()
}

// TestConsumerRouteStatus checks the status of a consumer route (GEP-1294):
// a route in namespace "client" attached to Service shop/web is accepted,
// and its backendRefs resolve when they name that Service or a Service of
// its own namespace, and are RefNotPermitted when they name any other
// Service of another namespace (Skiff has no ReferenceGrant).
func TestConsumerRouteStatus(t *testing.T) {
	const parent = `"parentRefs":[{"group":"","kind":"Service","name":"web","namespace":"shop"}]`
	accepted := want{gatewayv1.RouteConditionAccepted, metav1.ConditionTrue, "Accepted", ""}
	resolved := want{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionTrue, "ResolvedRefs", ""}
	refused := want{gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, "RefNotPermitted", "Service shop/web-v2 is not permitted"}
	for _, tc := range []struct {
		name string
		kind routeKind
		spec string
		want []want
	}{
		{"the parent Service, as the conformance suite's MeshConsumerRoute", httpRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"X-Header-Set","value":"set"}]}}],"backendRefs":[{"name":"web","namespace":"shop","port":80}]}]}`,
			[]want{accepted, resolved}},
		{"a Service of its own namespace", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[{"name":"local","port":80}]}]}`,
			[]want{accepted, resolved}},
		{"another Service of the parent's namespace", httpRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[{"name":"web","namespace":"shop","port":80},{"name":"web-v2","namespace":"shop","port":80}]}]}`,
			[]want{accepted, refused}},
		{"a mirror to another Service of the parent's namespace", httpRoutes,
			`{` + parent + `,"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"web-v2","namespace":"shop","port":80}}}],"backendRefs":[{"name":"web","namespace":"shop","port":80}]}]}`,
			[]want{accepted, refused}},
		{"a Service of a third namespace", grpcRoutes,
			`{` + parent + `,"rules":[{"backendRefs":[{"name":"web","namespace":"other","port":9090}]}]}`,
			[]want{accepted, {gatewayv1.RouteConditionResolvedRefs, metav1.ConditionFalse, "RefNotPermitted", "Service other/web is not permitted"}}},
		{"a missing parent Service", httpRoutes,
			`{"parentRefs":[{"kind":"Service","name":"gone","namespace":"shop"}],"rules":[{"backendRefs":[{"name":"local","port":80}]}]}`,
			[]want{{gatewayv1.RouteConditionAccepted, metav1.ConditionFalse, "NoMatchingParent", "shop/gone not found"}, resolved}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := tc.kind.newObj()
			route.SetNamespace("client")
			route.SetName("r")
			route.SetGeneration(3)
			var spec any
			switch r := route.(type) {
			case *gatewayv1.HTTPRoute:
				spec = &r.Spec
			case *gatewayv1.GRPCRoute:
				spec = &r.Spec
			}
			if err := json.Unmarshal([]byte(tc.spec), spec); err != nil {
				t.Fatal(err)
			}
			c := statusClient(t, route, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "client", Name: "local"}})
			rs := &routeStatus{c: c, kind: tc.kind}
			key := types.NamespacedName{Namespace: "client", Name: "r"}
			if _, err := rs.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
				t.Fatal(err)
			}
			got := tc.kind.newObj()
			if err := c.Get(context.Background(), key, got); err != nil {
				t.Fatal(err)
			}
			parents := tc.kind.status(got).Parents
			if len(parents) != 1 {
				t.Fatalf("parents %+v", parents)
			}
			for _, w := range tc.want {
				c := meta.FindStatusCondition(parents[0].Conditions, string(w.typ))
				if c == nil || c.Status != w.status || c.Reason != w.reason || !strings.Contains(c.Message, w.message) || c.ObservedGeneration != 3 {
					t.Errorf("%s: %+v, want %s %s %q", w.typ, c, w.status, w.reason, w.message)
				}
			}
		})
	}
}
