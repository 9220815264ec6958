package v1alpha1_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/skiffmesh/skiff/pkg/apis/apistest"
	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
)

// TestAdmission installs the embedded CRD in a real apiserver and checks
// what its schema and CEL rules accept and refuse, with the messages users
// see, and the defaults it fills in.
func TestAdmission(t *testing.T) {
	c, ns := apiserver(t)
	t.Run("refusals", func(t *testing.T) { testRefusals(t, c, ns) })
	t.Run("defaults", func(t *testing.T) { testDefaults(t, c, ns) })
}

func testRefusals(t *testing.T, c client.Client, ns string) {
	const (
		route   = `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}`
		svc     = `{"group":"","kind":"Service","name":"s"}`
		perSec  = `"limit":{"requests":10,"unit":"Second"}`
		targets = `"targetRefs":[` + route + `]`
	)
	for _, tc := range []struct {
		name, spec string
		// wantErr is part of the refusal; "" means the policy is accepted.
		wantErr string
	}{
		{"route", `{` + targets + `,` + perSec + `}`, ""},
		{"service per header", `{"targetRefs":[` + svc + `],"limit":{"requests":1,"unit":"Minute"},"key":{"type":"Header","header":"x-user"}}`, ""},
		{"rule of a route", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"checkout"}],` + perSec + `}`, ""},
		{"route and one of its rules", `{"targetRefs":[` + route + `,{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"checkout"}],` + perSec + `}`, ""},
		{"two rules of a route", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"},{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"b"}],` + perSec + `}`, ""},
		{"overrides of both forms", `{` + targets + `,` + perSec + `,"overrides":[` +
			`{"limit":{"requests":100,"unit":"Second","burst":200},"principals":["cluster.local/ns/batch/sa/reporter","spiffe://example.org/ns/a/sa/b.c"]},` +
			`{"limit":{"requests":1,"unit":"Hour"},"serviceAccounts":[{"name":"crawler"},{"name":"indexer","namespace":"search"}]}]}`, ""},
		{"global, deny on failure", `{` + targets + `,` + perSec + `,"mode":"Global","failureMode":"Deny"}`, ""},
		{"global, allow on failure", `{` + targets + `,` + perSec + `,"mode":"Global","failureMode":"Allow"}`, ""},

		{"no targets", `{` + perSec + `}`, "targetRefs"},
		{"bad target kind", `{"targetRefs":[{"group":"apps","kind":"Deployment","name":"d"}],` + perSec + `}`, "targetRefs must be HTTPRoutes or Services"},
		{"GRPCRoute target", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"GRPCRoute","name":"g"}],` + perSec + `}`, "targetRefs must be HTTPRoutes or Services"},
		{"service with sectionName", `{"targetRefs":[{"group":"","kind":"Service","name":"s","sectionName":"http"}],` + perSec + `}`, "sectionName is not supported on a Service target"},
		{"same target twice", `{"targetRefs":[` + route + `,` + route + `],` + perSec + `}`, "targetRefs must be unique"},
		{"same rule twice", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"},{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"}],` + perSec + `}`, "targetRefs must be unique"},
		{"zero requests", `{` + targets + `,"limit":{"requests":0,"unit":"Second"}}`, "requests"},
		{"zero burst", `{` + targets + `,"limit":{"requests":1,"unit":"Second","burst":0}}`, "burst"},
		{"bad unit", `{` + targets + `,"limit":{"requests":1,"unit":"Fortnight"}}`, "unit"},
		{"header key without header", `{` + targets + `,` + perSec + `,"key":{"type":"Header"}}`, "header is required"},
		{"override without clients", `{` + targets + `,` + perSec + `,"overrides":[{"limit":{"requests":1,"unit":"Second"}}]}`, "an override must list at least one client"},
		{"override principal with a wildcard", `{` + targets + `,` + perSec + `,"overrides":[{"limit":{"requests":1,"unit":"Second"},"principals":["cluster.local/ns/batch/sa/*"]}]}`, "principals[0]"},
		{"override principal without a trust domain", `{` + targets + `,` + perSec + `,"overrides":[{"limit":{"requests":1,"unit":"Second"},"principals":["ns/batch/sa/reporter"]}]}`, "principals[0]"},
		{"override principal of another scheme", `{` + targets + `,` + perSec + `,"overrides":[{"limit":{"requests":1,"unit":"Second"},"principals":["https://cluster.local/ns/a/sa/b"]}]}`, "principals[0]"},
		{"override service account with a bad name", `{` + targets + `,` + perSec + `,"overrides":[{"limit":{"requests":1,"unit":"Second"},"serviceAccounts":[{"name":"Bad_Name"}]}]}`, "serviceAccounts[0].name"},
		{"override without a limit", `{` + targets + `,` + perSec + `,"overrides":[{"serviceAccounts":[{"name":"a"}]}]}`, "limit"},
		{"failureMode with the default mode", `{` + targets + `,` + perSec + `,"failureMode":"Deny"}`, "failureMode applies only to mode Global"},
		{"failureMode with Local", `{` + targets + `,` + perSec + `,"mode":"Local","failureMode":"Allow"}`, "failureMode applies only to mode Global"},
		{"bad mode", `{` + targets + `,` + perSec + `,"mode":"Cluster"}`, "mode"},
		{"bad failureMode", `{` + targets + `,` + perSec + `,"mode":"Global","failureMode":"Maybe"}`, "failureMode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{GenerateName: "rl-", Namespace: ns}}
			if err := json.Unmarshal([]byte(tc.spec), &p.Spec); err != nil {
				t.Fatalf("spec: %v", err)
			}
			err := c.Create(context.Background(), p)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("create: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("create: err = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func testDefaults(t *testing.T, c client.Client, ns string) {
	p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: ns}}
	if err := json.Unmarshal([]byte(`{"targetRefs":[{"group":"","kind":"Service","name":"s"}],"limit":{"requests":5,"unit":"Second"}}`), &p.Spec); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	var got policyv1alpha1.RateLimitPolicy
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(p), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Mode != policyv1alpha1.ModeLocal || got.Spec.FailureMode != "" {
		t.Fatalf("mode %q, failureMode %q; want Local and none", got.Spec.Mode, got.Spec.FailureMode)
	}
}

// apiserver starts kube-apiserver and etcd with the embedded CRDs and
// returns a client and a fresh namespace. It skips the test when
// KUBEBUILDER_ASSETS does not hold them (make test-unit builds them).
func apiserver(t *testing.T) (client.Client, string) {
	t.Helper()
	_, _, c := apistest.StartWithCRDs(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "rlp-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return c, ns.Name
}
