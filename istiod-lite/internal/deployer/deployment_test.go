package deployer

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The waypoint's Deployment carries the deployer's contract: its
// --waypoint argument, XDS_ADDRESS, and the trace endpoint only when one
// is configured.
func TestDeploymentEnvironment(t *testing.T) {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	for _, tc := range []struct {
		name string
		otlp string
	}{
		{"no tracing", ""},
		{"tracing", "otel-collector.observability:4317"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &deployer{o: Options{XDSAddress: "istiod.istio-system.svc:15012", Replicas: 1, OTLPEndpoint: tc.otlp}}
			var dep appsv1.Deployment
			d.deploymentSpec(gw, &dep, map[string]string{labelGateway: "wp"}, nil)
			c := dep.Spec.Template.Spec.Containers[0]
			if len(c.Args) != 1 || c.Args[0] != "--waypoint=shop/wp" {
				t.Errorf("args %q", c.Args)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if env["XDS_ADDRESS"] != "istiod.istio-system.svc:15012" {
				t.Errorf("XDS_ADDRESS %q", env["XDS_ADDRESS"])
			}
			got, set := env["OTLP_ENDPOINT"]
			if set != (tc.otlp != "") || got != tc.otlp {
				t.Errorf("OTLP_ENDPOINT %q (set %v), want %q", got, set, tc.otlp)
			}
		})
	}
}
