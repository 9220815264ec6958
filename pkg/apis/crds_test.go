package apis_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/pkg/apis"
	"github.com/skiffmesh/skiff/pkg/apis/apistest"
	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

func TestCRDsParse(t *testing.T) {
	crds, err := apis.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"authorizationpolicies.security.istio.io":   false,
		"ratelimitpolicies.policy.skiff.dev":        false,
		"gateways.gateway.networking.k8s.io":        false,
		"gatewayclasses.gateway.networking.k8s.io":  false,
		"httproutes.gateway.networking.k8s.io":      false,
		"grpcroutes.gateway.networking.k8s.io":      false,
		"referencegrants.gateway.networking.k8s.io": false,
	}
	for _, c := range crds {
		want[c.Name] = true
	}
	for name, found := range want {
		if !found {
			t.Errorf("CRD %s is not embedded", name)
		}
	}
}

// TestCRDsOnAPIServer installs the embedded CRDs in a real apiserver and
// checks that the schemas accept good objects and reject bad ones.
func TestCRDsOnAPIServer(t *testing.T) {
	_, _, c := apistest.StartWithCRDs(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "crd-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, ns) })

	route := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: "r"}}
	svc := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "s"}}
	for _, tc := range []struct {
		name    string
		spec    policyv1alpha1.RateLimitPolicySpec
		wantErr string
	}{
		{"route target", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{route}, Limit: policyv1alpha1.Limit{Requests: 10, Unit: policyv1alpha1.Second, Burst: ptr.To[uint32](20)}}, ""},
		{"service target per header", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{svc}, Limit: policyv1alpha1.Limit{Requests: 1, Unit: policyv1alpha1.Minute}, Key: &policyv1alpha1.RateLimitKey{Type: policyv1alpha1.KeyHeader, Header: "x-user"}}, ""},
		{"no targets", policyv1alpha1.RateLimitPolicySpec{Limit: policyv1alpha1.Limit{Requests: 1, Unit: policyv1alpha1.Second}}, "targetRefs"},
		{"bad target kind", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: "apps", Kind: "Deployment", Name: "d"}}}, Limit: policyv1alpha1.Limit{Requests: 1, Unit: policyv1alpha1.Second}}, "targetRefs must be HTTPRoutes or Services"},
		{"zero requests", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{svc}, Limit: policyv1alpha1.Limit{Requests: 0, Unit: policyv1alpha1.Second}}, "requests"},
		{"bad unit", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{svc}, Limit: policyv1alpha1.Limit{Requests: 1, Unit: "Fortnight"}}, "unit"},
		{"header key without header", policyv1alpha1.RateLimitPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{svc}, Limit: policyv1alpha1.Limit{Requests: 1, Unit: policyv1alpha1.Second}, Key: &policyv1alpha1.RateLimitKey{Type: policyv1alpha1.KeyHeader}}, "header is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{GenerateName: "rl-", Namespace: ns.Name}, Spec: tc.spec}
			err := c.Create(ctx, p)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("create: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("create: err = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}

	ap := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-sleep", Namespace: ns.Name},
		Spec: securityv1.AuthorizationPolicySpec{
			Selector: &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": "httpbin"}},
			Action:   securityv1.ActionDeny,
			Rules: []securityv1.Rule{{
				From: []securityv1.RuleFrom{{Source: &securityv1.Source{Principals: []string{"cluster.local/ns/default/sa/sleep"}}}},
				To:   []securityv1.RuleTo{{Operation: &securityv1.Operation{Ports: []string{"8080"}, Paths: []string{"/admin*"}}}},
			}},
		},
	}
	if err := c.Create(ctx, ap); err != nil {
		t.Fatalf("create AuthorizationPolicy: %v", err)
	}
	// Manifests written for Istio's v1beta1 are accepted, validated by the
	// same schema, and read back as v1.
	beta := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "beta", "namespace": ns.Name},
		"spec":     map[string]any{"action": "DENY", "rules": []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"namespaces": []any{"other"}}}}}}},
	}}
	if err := c.Create(ctx, beta); err != nil {
		t.Fatalf("create v1beta1 AuthorizationPolicy: %v", err)
	}
	var asV1 securityv1.AuthorizationPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "beta"}, &asV1); err != nil {
		t.Fatalf("read v1beta1 policy as v1: %v", err)
	}
	if asV1.Spec.Action != securityv1.ActionDeny || len(asV1.Spec.Rules) != 1 {
		t.Fatalf("v1beta1 policy read as v1: %+v", asV1.Spec)
	}
	beta.Object["spec"] = map[string]any{"action": "MAYBE"}
	if err := c.Update(ctx, beta); err == nil || !strings.Contains(err.Error(), "action") {
		t.Fatalf("v1beta1 update with a bad action: err = %v, want a validation error", err)
	}

	ap.Spec.Action = "MAYBE"
	if err := c.Update(ctx, ap); err == nil || !strings.Contains(err.Error(), "action") {
		t.Fatalf("update with a bad action: err = %v, want a validation error", err)
	}
}
