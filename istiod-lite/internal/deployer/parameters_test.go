package deployer

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// A waypoint Gateway's parametersRef ConfigMap sets the waypoint's
// rate-limit service, overriding istiod-lite's default; a missing
// ConfigMap, another kind or an unknown key leaves the Gateway not
// accepted with InvalidParameters and says why.
func TestGatewayParameters(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ref     *gatewayv1.LocalParametersReference
		data    map[string]string
		env     map[string]string // wanted, "" meaning unset
		refused string            // message fragment of InvalidParameters
	}{
		{name: "none", env: map[string]string{"RATE_LIMIT_SERVICE": "ratelimit.skiff-system:8081", "RATE_LIMIT_DOMAIN": ""}},
		{name: "overrides the default", ref: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "wp-params"},
			data: map[string]string{"rateLimitService": "rls.shop:8081", "rateLimitDomain": "shop", "rateLimitTimeout": "50ms"},
			env:  map[string]string{"RATE_LIMIT_SERVICE": "rls.shop:8081", "RATE_LIMIT_DOMAIN": "shop", "RATE_LIMIT_TIMEOUT": "50ms"}},
		{name: "missing ConfigMap", ref: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "gone"}, refused: "ConfigMap shop/gone not found"},
		{name: "another kind", ref: &gatewayv1.LocalParametersReference{Group: "example.com", Kind: "Params", Name: "wp-params"}, refused: "takes a ConfigMap"},
		{name: "unknown key", ref: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "wp-params"},
			data: map[string]string{"rateLimitServce": "rls:8081"}, refused: `unknown key "rateLimitServce"`},
		{name: "bad address", ref: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "wp-params"},
			data: map[string]string{"rateLimitService": "rls.shop"}, refused: "rateLimitService: \"rls.shop\": want host:port"},
		{name: "bad timeout", ref: &gatewayv1.LocalParametersReference{Kind: "ConfigMap", Name: "wp-params"},
			data: map[string]string{"rateLimitTimeout": "-1s"}, refused: "rateLimitTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runtime.NewScheme()
			for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, gatewayv1.Install} {
				if err := add(s); err != nil {
					t.Fatal(err)
				}
			}
			gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp", UID: "u1"}, Spec: gatewayv1.GatewaySpec{
				GatewayClassName: ClassName,
				Listeners:        []gatewayv1.Listener{{Name: "mesh", Port: HBONEPort, Protocol: "HBONE"}},
			}}
			if tc.ref != nil {
				gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{ParametersRef: tc.ref}
			}
			objs := []client.Object{gw}
			if tc.data != nil {
				objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp-params"}, Data: tc.data})
			}
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(&gatewayv1.Gateway{}).Build()
			d := &deployer{c: c, params: c, o: Options{Replicas: 1, RateLimitService: "ratelimit.skiff-system:8081"}, events: events.NewFakeRecorder(10)}
			if _, err := d.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(gw)}); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if err := c.Get(t.Context(), client.ObjectKeyFromObject(gw), gw); err != nil {
				t.Fatal(err)
			}
			acc := meta.FindStatusCondition(gw.Status.Conditions, string(gatewayv1.GatewayConditionAccepted))
			var dep appsv1.Deployment
			depErr := c.Get(t.Context(), client.ObjectKey{Namespace: "shop", Name: "wp"}, &dep)
			if tc.refused != "" {
				if acc == nil || acc.Status != metav1.ConditionFalse || acc.Reason != string(gatewayv1.GatewayReasonInvalidParameters) || !strings.Contains(acc.Message, tc.refused) {
					t.Errorf("Accepted %+v, want False InvalidParameters with %q", acc, tc.refused)
				}
				if depErr == nil {
					t.Error("a Deployment was created from invalid parameters")
				}
				return
			}
			if acc == nil || acc.Status != metav1.ConditionTrue {
				t.Errorf("Accepted %+v, want True", acc)
			}
			if depErr != nil {
				t.Fatal(depErr)
			}
			env := map[string]string{}
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				env[e.Name] = e.Value
			}
			for k, want := range tc.env {
				if got, set := env[k]; got != want || set != (want != "") {
					t.Errorf("%s = %q (set %v), want %q", k, got, set, want)
				}
			}
		})
	}
}
