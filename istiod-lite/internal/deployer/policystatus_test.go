package deployer

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
)

// ancestorWant is the expected Accepted condition of one ancestor entry.
type ancestorWant struct {
	kind, name, section string
	status              metav1.ConditionStatus
	reason              string
	message             string // a part of the message
}

func TestRateLimitStatus(t *testing.T) {
	const (
		route  = `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}`
		perSec = `"limit":{"requests":10,"unit":"Second"}`
	)
	rule := func(name string) string {
		return `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"` + name + `"}`
	}
	ok := func(kind, name, section string) ancestorWant {
		return ancestorWant{kind, name, section, metav1.ConditionTrue, "Accepted", "Enforced by the waypoint of the target"}
	}
	for _, tc := range []struct {
		name string
		spec string
		want []ancestorWant
	}{
		{"route", `{"targetRefs":[` + route + `],` + perSec + `}`, []ancestorWant{ok("HTTPRoute", "r", "")}},
		{"service", `{"targetRefs":[{"group":"","kind":"Service","name":"web"}],` + perSec + `}`, []ancestorWant{ok("Service", "web", "")}},
		{"a rule of the route", `{"targetRefs":[` + rule("checkout") + `],` + perSec + `}`, []ancestorWant{ok("HTTPRoute", "r", "checkout")}},
		{"two rules, one entry each", `{"targetRefs":[` + rule("checkout") + `,` + rule("browse") + `],` + perSec + `}`,
			[]ancestorWant{ok("HTTPRoute", "r", "checkout"), ok("HTTPRoute", "r", "browse")}},
		{"unknown rule name", `{"targetRefs":[` + rule("cart") + `],` + perSec + `}`,
			[]ancestorWant{{"HTTPRoute", "r", "cart", metav1.ConditionFalse, "TargetNotFound", `HTTPRoute shop/r has no rule named "cart"`}}},
		{"missing route", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"gone"}],` + perSec + `}`,
			[]ancestorWant{{"HTTPRoute", "gone", "", metav1.ConditionFalse, "TargetNotFound", "HTTPRoute shop/gone not found"}}},
		{"missing service", `{"targetRefs":[{"group":"","kind":"Service","name":"gone"}],` + perSec + `}`,
			[]ancestorWant{{"Service", "gone", "", metav1.ConditionFalse, "TargetNotFound", "Service shop/gone not found"}}},
		{"service with sectionName", `{"targetRefs":[{"group":"","kind":"Service","name":"web","sectionName":"http"}],` + perSec + `}`,
			[]ancestorWant{{"Service", "web", "http", metav1.ConditionFalse, "Invalid", `sectionName "http" is not supported on a Service target`}}},
		{"unsupported kind", `{"targetRefs":[{"group":"apps","kind":"Deployment","name":"web"}],` + perSec + `}`,
			[]ancestorWant{{"Deployment", "web", "", metav1.ConditionFalse, "Invalid", "target kind Deployment in group \"apps\" is not supported"}}},
		{"partly valid keeps its valid targets", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"gone"},` + rule("checkout") + `,` + rule("cart") + `,{"group":"","kind":"Service","name":"web"}],` + perSec + `}`,
			[]ancestorWant{
				{"HTTPRoute", "gone", "", metav1.ConditionFalse, "TargetNotFound", "not found"},
				ok("HTTPRoute", "r", "checkout"),
				{"HTTPRoute", "r", "cart", metav1.ConditionFalse, "TargetNotFound", "no rule named"},
				ok("Service", "web", ""),
			}},
		{"a repeated target has one entry", `{"targetRefs":[` + route + `,` + route + `],` + perSec + `}`, []ancestorWant{ok("HTTPRoute", "r", "")}},
		{"values admission refuses", `{"targetRefs":[` + route + `,{"group":"","kind":"Service","name":"gone"}],"limit":{"requests":0,"unit":"Second"}}`,
			[]ancestorWant{
				{"HTTPRoute", "r", "", metav1.ConditionFalse, "Invalid", "limit.requests: must be at least 1"},
				{"Service", "gone", "", metav1.ConditionFalse, "TargetNotFound", "not found"},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p", Generation: 4}}
			if err := json.Unmarshal([]byte(tc.spec), &p.Spec); err != nil {
				t.Fatal(err)
			}
			c := rateLimitClient(t, p)
			got := reconcileRateLimit(t, c)
			checkAncestors(t, got, tc.want)
		})
	}
}

// Entries of other controllers are kept; ours follow the targets, so an
// entry of a target removed from the policy goes.
func TestRateLimitStatusKeepsOtherControllers(t *testing.T) {
	other := gatewayv1.PolicyAncestorStatus{ControllerName: "example.net/other", AncestorRef: gatewayv1.ParentReference{Name: "r"},
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}}
	stale := gatewayv1.PolicyAncestorStatus{ControllerName: ControllerName, AncestorRef: gatewayv1.ParentReference{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "old"},
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}}}
	p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"},
		Status: gatewayv1.PolicyStatus{Ancestors: []gatewayv1.PolicyAncestorStatus{stale, other}}}
	if err := json.Unmarshal([]byte(`{"targetRefs":[{"group":"","kind":"Service","name":"web"}],"limit":{"requests":1,"unit":"Second"}}`), &p.Spec); err != nil {
		t.Fatal(err)
	}
	got := reconcileRateLimit(t, rateLimitClient(t, p))
	if len(got) != 2 || got[0].ControllerName != ControllerName || got[0].AncestorRef.Name != "web" || got[1].ControllerName != "example.net/other" {
		t.Fatalf("ancestors %+v", got)
	}
}

// A rule renamed away turns its target's entry to TargetNotFound when
// the policy is reconciled again, and the route's change enqueues it.
func TestRateLimitStatusFollowsTheRoute(t *testing.T) {
	p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}}
	if err := json.Unmarshal([]byte(`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"checkout"}],"limit":{"requests":1,"unit":"Second"}}`), &p.Spec); err != nil {
		t.Fatal(err)
	}
	c := rateLimitClient(t, p)
	checkAncestors(t, reconcileRateLimit(t, c), []ancestorWant{{"HTTPRoute", "r", "checkout", metav1.ConditionTrue, "Accepted", ""}})
	ctx := context.Background()
	var r gatewayv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "r"}, &r); err != nil {
		t.Fatal(err)
	}
	r.Spec.Rules[0].Name = ptr.To[gatewayv1.SectionName]("pay")
	if err := c.Update(ctx, &r); err != nil {
		t.Fatal(err)
	}
	reqs := rateLimitPoliciesTargeting(c, "HTTPRoute")(ctx, &r)
	if len(reqs) != 1 || reqs[0].Name != "p" {
		t.Fatalf("route change enqueues %v, want shop/p", reqs)
	}
	checkAncestors(t, reconcileRateLimit(t, c), []ancestorWant{{"HTTPRoute", "r", "checkout", metav1.ConditionFalse, "TargetNotFound", `no rule named "checkout"`}})
}

// A reconcile that changes nothing writes nothing: Services and routes
// enqueue the policies that target them on every change.
func TestRateLimitStatusUnchangedIsNotWritten(t *testing.T) {
	p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}}
	if err := json.Unmarshal([]byte(`{"targetRefs":[{"group":"","kind":"Service","name":"web"},{"group":"","kind":"Service","name":"gone"}],"limit":{"requests":1,"unit":"Second"}}`), &p.Spec); err != nil {
		t.Fatal(err)
	}
	c := rateLimitClient(t, p)
	reconcileRateLimit(t, c)
	version := func() string {
		var got policyv1alpha1.RateLimitPolicy
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "p"}, &got); err != nil {
			t.Fatal(err)
		}
		return got.ResourceVersion
	}
	before := version()
	reconcileRateLimit(t, c)
	if after := version(); after != before {
		t.Fatalf("resourceVersion %s after a reconcile that changed nothing, was %s", after, before)
	}
}

func TestRateLimitPoliciesTargeting(t *testing.T) {
	policy := func(name, targets string) *policyv1alpha1.RateLimitPolicy {
		p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}
		if err := json.Unmarshal([]byte(`{"targetRefs":`+targets+`,"limit":{"requests":1,"unit":"Second"}}`), &p.Spec); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := rateLimitClient(t,
		policy("on-web", `[{"group":"","kind":"Service","name":"web"}]`),
		policy("on-route-web", `[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"web"}]`),
		policy("on-both", `[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"checkout"},{"group":"","kind":"Service","name":"web"}]`),
	)
	for _, tc := range []struct {
		kind gatewayv1.Kind
		obj  client.Object
		want []string
	}{
		{"Service", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}, []string{"on-both", "on-web"}},
		{"HTTPRoute", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}}, []string{"on-both"}},
		{"HTTPRoute", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "r"}}, nil},
		{"Service", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"}}, nil},
	} {
		var got []string
		for _, r := range rateLimitPoliciesTargeting(c, tc.kind)(context.Background(), tc.obj) {
			got = append(got, r.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s %s/%s enqueues %v, want %v", tc.kind, tc.obj.GetNamespace(), tc.obj.GetName(), got, tc.want)
		}
	}
}

// rateLimitClient is a fake API server holding objs, Service shop/web and
// HTTPRoute shop/r with rules "checkout", "browse" and one without a name.
func rateLimitClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, gatewayv1.Install, policyv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{
		{Name: ptr.To[gatewayv1.SectionName]("checkout")}, {Name: ptr.To[gatewayv1.SectionName]("browse")}, {},
	}}}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(append(objs, web, r)...).
		WithStatusSubresource(&policyv1alpha1.RateLimitPolicy{}).Build()
}

// reconcileRateLimit reconciles shop/p and returns its ancestor entries.
func reconcileRateLimit(t *testing.T, c client.Client) []gatewayv1.PolicyAncestorStatus {
	t.Helper()
	key := client.ObjectKey{Namespace: "shop", Name: "p"}
	if _, err := (&rateLimitStatus{c: c}).Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	var got policyv1alpha1.RateLimitPolicy
	if err := c.Get(context.Background(), key, &got); err != nil {
		t.Fatal(err)
	}
	return got.Status.Ancestors
}

func checkAncestors(t *testing.T, got []gatewayv1.PolicyAncestorStatus, want []ancestorWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d ancestors %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		a := got[i]
		ref := a.AncestorRef
		if a.ControllerName != ControllerName || ptr.Deref(ref.Kind, "") != gatewayv1.Kind(w.kind) || string(ref.Name) != w.name ||
			string(ptr.Deref(ref.SectionName, "")) != w.section || ptr.Deref(ref.Namespace, "") != "shop" {
			t.Errorf("ancestor %d: %s %+v, want %s %s section %q in shop", i, a.ControllerName, ref, w.kind, w.name, w.section)
		}
		c := meta.FindStatusCondition(a.Conditions, "Accepted")
		if c == nil || c.Status != w.status || c.Reason != w.reason || !strings.Contains(c.Message, w.message) {
			t.Errorf("ancestor %d (%s %s %q): Accepted %+v, want %s %s with %q", i, w.kind, w.name, w.section, c, w.status, w.reason, w.message)
		}
	}
}
