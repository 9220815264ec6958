package index

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

func TestTranslateL7(t *testing.T) {
	p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
	if err := json.Unmarshal([]byte(`{"targetRefs":[{"kind":"Service","name":"web"}],"rules":[
		{"from":[{"source":{"principals":["cluster.local/ns/a/sa/b"]}}],"to":[{"operation":{"methods":["GET"],"paths":["/api/*"]}}],"when":[{"key":"request.headers[X-Team]","values":["blue"]}]},
		{"from":[{"source":{"requestPrincipals":["*"]}}]}]}`), &p.Spec); err != nil {
		t.Fatal(err)
	}
	l7 := translateL7(p)
	if l7.Action != securityapi.Action_ALLOW || len(l7.Groups) != 1 {
		t.Fatalf("want one group (the JWT rule dropped from ALLOW), got %v", l7)
	}
	g := l7.Groups[0]
	if len(g.Rules) != 3 || g.Rules[0].Matches[0].L4.Principals[0].GetExact() != "cluster.local/ns/a/sa/b" ||
		g.Rules[1].Matches[0].Methods[0].GetExact() != "GET" || g.Rules[1].Matches[0].Paths[0].GetPrefix() != "/api/" ||
		g.Rules[2].Matches[0].Headers[0].Name != "x-team" || g.Rules[2].Matches[0].Headers[0].Values[0].GetExact() != "blue" {
		t.Fatalf("group %v", g)
	}
	p.Spec.Action = securityv1.ActionDeny
	if l7 := translateL7(p); len(l7.Groups) != 2 {
		t.Fatalf("DENY keeps the JWT rule on its other conditions: %v", l7)
	}
	p.Spec.Action = securityv1.ActionAudit
	if translateL7(p) != nil {
		t.Fatal("AUDIT translated")
	}
}

func TestWaypointConfig(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("shop", ns("shop", nil))
	ix.SetGateway("shop", "wp", &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointClass}})
	ix.SetService("shop", "web", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{LabelUseWaypoint: "wp"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr.To("http")}}}})
	ix.SetService("shop", "other", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other"}})
	pathType := gatewayv1.PathMatchPathPrefix
	ix.SetHTTPRoute("shop", "r", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "web"}}},
		Rules: []gatewayv1.HTTPRouteRule{{
			Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &pathType, Value: ptr.To("/v2")}, Method: ptr.To(gatewayv1.HTTPMethodPost)}},
			Filters:     []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-v", Value: "2"}}}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v2", Port: ptr.To[gatewayv1.PortNumber](80)}}}},
			Timeouts:    &gatewayv1.HTTPRouteTimeouts{Request: ptr.To[gatewayv1.Duration]("1500ms")},
			Retry:       &gatewayv1.HTTPRouteRetry{Attempts: ptr.To(3), Codes: []gatewayv1.HTTPRouteRetryStatusCode{503}},
		}},
	}})
	ix.SetRateLimitPolicy("shop", "rl", &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "rl"}, Spec: policyv1alpha1.RateLimitPolicySpec{
		TargetRefs: []gatewayv1.LocalPolicyTargetReference{{Kind: "Service", Name: "web"}}, Limit: policyv1alpha1.Limit{Requests: 100, Unit: policyv1alpha1.Minute},
		Key: &policyv1alpha1.RateLimitKey{Type: policyv1alpha1.KeySourceIdentity}}})
	ix.mu.Lock()
	wp := ix.buildWaypoint(ix.gateways["shop/wp"])
	ix.mu.Unlock()
	if len(wp.Services) != 1 || wp.Services[0].Name != "web" || wp.Services[0].Ports[0].AppProtocol != "http" {
		t.Fatalf("services %v", wp.Services)
	}
	r := wp.Services[0].HttpRoutes[0].Rules[0]
	if m := r.Matches[0]; m.Path.Type != waypointapi.MatchType_PREFIX || m.Path.Value != "/v2" || m.Method != "POST" {
		t.Errorf("match %v", m)
	}
	if r.Filters[0].GetRequestHeaderModifier().GetSet()[0].GetName() != "x-v" || r.Backends[0].Hostname != "web-v2.shop.svc.cluster.local" || r.Backends[0].Weight != 1 {
		t.Errorf("rule %v", r)
	}
	if r.RequestTimeoutMs != 1500 || r.Retry.Attempts != 3 || r.Retry.Codes[0] != 503 {
		t.Errorf("timeouts/retry %v", r)
	}
	rl := wp.Services[0].RateLimits[0]
	if rl.Route != "" || rl.FillIntervalMs != 60000 || rl.Burst != 100 || rl.Key.Type != waypointapi.RateLimitKey_SOURCE_IDENTITY {
		t.Errorf("rate limit %v", rl)
	}
}

func TestSelectorlessServiceViaEndpointSlice(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("app", ns("app", map[string]string{LabelDataplaneMode: DataplaneAmbient}))
	ix.SetPod("app", "p", pod("app", "p", "10.0.0.1", nil, true))
	ix.SetService("app", "manual", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "manual"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	ix.Flush()
	s.got = nil
	ix.SetEndpointSlice("app", "manual-1", &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "manual-1", Labels: map[string]string{discoveryv1.LabelServiceName: "manual"}},
		Ports:      []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](9090)}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p"}}},
	})
	ix.Flush()
	u := s.last(t)["type.googleapis.com/istio.workload.Address"][0]
	if len(u.Upserted) != 1 {
		t.Fatalf("upserted %d", len(u.Upserted))
	}
	w := decodeWorkload(t, u.Upserted[0])
	if p := w.Services["app/manual.app.svc.cluster.local"].GetPorts(); len(p) != 1 || p[0].ServicePort != 80 || p[0].TargetPort != 9090 {
		t.Fatalf("services %v", w.Services)
	}
	ix.SetEndpointSlice("app", "manual-1", nil)
	ix.Flush()
	w = decodeWorkload(t, s.last(t)["type.googleapis.com/istio.workload.Address"][0].Upserted[0])
	if len(w.Services) != 0 {
		t.Fatalf("services after the slice is gone: %v", w.Services)
	}
}

func TestSliceOfSelectorServiceChangesNothing(t *testing.T) {
	ix := New(Options{}, &sink{})
	ix.SetNamespace("app", ns("app", nil))
	ix.SetPod("app", "p", pod("app", "p", "10.0.0.1", map[string]string{"app": "web"}, true))
	ix.SetService("app", "web", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}})
	ix.Flush()
	ix.SetEndpointSlice("app", "web-1", &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p"}}},
	})
	ix.mu.Lock()
	dirty := len(ix.dirtyPods)
	ix.mu.Unlock()
	if dirty != 0 || ix.Flush() != 0 {
		t.Fatalf("a selector service's slice dirtied %d pods", dirty)
	}
}
