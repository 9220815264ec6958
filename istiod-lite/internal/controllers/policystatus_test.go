package controllers

import (
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

// recorder keeps the events raised, as "<type> <reason> <note>".
type recorder struct{ events []string }

func (r *recorder) Eventf(regarding, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	name := regarding.(client.Object).GetName()
	r.events = append(r.events, fmt.Sprintf("%s %s %s: ", eventtype, reason, name)+fmt.Sprintf(note, args...))
}

func TestPolicyStatus(t *testing.T) {
	const svc = `"targetRefs":[{"kind":"Service","name":"web"}]`
	for _, tc := range []struct {
		name, spec string
		cond       string
		status     metav1.ConditionStatus
		reason     string
		message    string
		// event is the reason of the Warning event raised, if any.
		event string
	}{
		{"ztunnel", `{"selector":{"matchLabels":{"app":"web"}},"rules":[{"from":[{"source":{"namespaces":["a"]}}]}]}`,
			ConditionZtunnelAccepted, metav1.ConditionTrue, "Accepted", "Enforced by ztunnel", ""},
		{"ztunnel, CUSTOM", `{"action":"CUSTOM","provider":{"name":"opa"},"rules":[{}]}`,
			ConditionZtunnelAccepted, metav1.ConditionFalse, "UnsupportedValue", "ztunnel does not support the CUSTOM action", ReasonCustomIgnored},
		{"waypoint", `{` + svc + `,"rules":[{"to":[{"operation":{"methods":["GET"]}}]}]}`,
			ConditionWaypointAccepted, metav1.ConditionTrue, "Accepted", "Enforced by the waypoint", ""},
		{"waypoint, AUDIT", `{` + svc + `,"action":"AUDIT","rules":[{}]}`,
			ConditionWaypointAccepted, metav1.ConditionTrue, "Accepted", "Enforced by the waypoint", ""},
		{"waypoint, CUSTOM", `{` + svc + `,"action":"CUSTOM","provider":{"name":"opa"},"rules":[{}]}`,
			ConditionWaypointAccepted, metav1.ConditionFalse, "UnsupportedValue", "CUSTOM policy is enforced as DENY", ReasonCustomEnforcedAsDeny},
		{"waypoint, header condition without values", `{` + svc + `,"rules":[{"when":[{"key":"request.headers[x-team]"}]}]}`,
			ConditionWaypointAccepted, metav1.ConditionFalse, "UnsupportedValue", "rules[0].when[0]: request.headers[x-team]: no values and no notValues", ""},
		{"waypoint, invalid path template", `{` + svc + `,"action":"DENY","rules":[{"to":[{"operation":{"paths":["/a/{*}b"]}}]}]}`,
			ConditionWaypointAccepted, metav1.ConditionFalse, "UnsupportedValue", `rules[0].to[0].operation.paths[0]: path template "/a/{*}b"`, ""},
		{"waypoint, no target", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"nosuch"}],"action":"CUSTOM"}`,
			ConditionWaypointAccepted, metav1.ConditionFalse, "TargetNotFound", "no waypoint Gateway", ReasonCustomEnforcedAsDeny},
		{"waypoint Gateway", `{"targetRef":{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"wp"},"rules":[{}]}`,
			ConditionWaypointAccepted, metav1.ConditionTrue, "Accepted", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p", Generation: 2}}
			if err := json.Unmarshal([]byte(tc.spec), &p.Spec); err != nil {
				t.Fatal(err)
			}
			c := statusClient(t, p)
			var rec recorder
			r := &authzStatus{c: c, events: &rec}
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "p"}}
			for range 2 { // the second pass changes nothing and raises nothing
				if _, err := r.Reconcile(context.Background(), req); err != nil {
					t.Fatal(err)
				}
			}
			var got securityv1.AuthorizationPolicy
			if err := c.Get(context.Background(), req.NamespacedName, &got); err != nil {
				t.Fatal(err)
			}
			cond := meta.FindStatusCondition(got.Status.Conditions, tc.cond)
			if cond == nil || cond.Status != tc.status || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.message) || cond.ObservedGeneration != 2 {
				t.Fatalf("conditions %+v, want %s %s %s %q", got.Status.Conditions, tc.cond, tc.status, tc.reason, tc.message)
			}
			if len(got.Status.Conditions) != 1 || got.Status.ObservedGeneration != 2 {
				t.Fatalf("status %+v", got.Status)
			}
			if tc.event == "" {
				if len(rec.events) != 0 {
					t.Fatalf("events %q, want none", rec.events)
				}
				return
			}
			if len(rec.events) != 1 || !strings.HasPrefix(rec.events[0], "Warning "+tc.event+" p: ") {
				t.Fatalf("events %q, want one Warning %s", rec.events, tc.event)
			}
			if strings.Contains(tc.spec, "opa") && !strings.Contains(rec.events[0], `provider "opa"`) {
				t.Errorf("event %q does not name the provider", rec.events[0])
			}
		})
	}
}

// Moving a policy from ztunnel to a waypoint swaps its condition.
func TestPolicyStatusMoves(t *testing.T) {
	p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p", Generation: 1}}
	c := statusClient(t, p)
	r := &authzStatus{c: c, events: &recorder{}}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "p"}}
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var cur securityv1.AuthorizationPolicy
	if err := c.Get(context.Background(), req.NamespacedName, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.TargetRefs = []securityv1.PolicyTargetReference{{Kind: "Service", Name: "web"}}
	cur.Generation = 2
	if err := c.Update(context.Background(), &cur); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(context.Background(), req.NamespacedName, &cur); err != nil {
		t.Fatal(err)
	}
	if meta.FindStatusCondition(cur.Status.Conditions, ConditionZtunnelAccepted) != nil ||
		!meta.IsStatusConditionTrue(cur.Status.Conditions, ConditionWaypointAccepted) {
		t.Fatalf("conditions %+v", cur.Status.Conditions)
	}
}

// statusClient is a fake API server holding p, Service shop/web and the
// waypoint Gateway shop/wp.
func statusClient(t *testing.T, p *securityv1.AuthorizationPolicy) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, gatewayv1.Install, securityv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	wp := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: index.WaypointClass}}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(p, web, wp).WithStatusSubresource(&securityv1.AuthorizationPolicy{}).Build()
}
