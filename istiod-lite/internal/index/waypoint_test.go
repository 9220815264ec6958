package index

import (
	"bytes"
	"cmp"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
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
	// One rule every translation keeps, one with a JWT principal the
	// waypoint cannot check.
	const rules = `"rules":[
		{"from":[{"source":{"principals":["cluster.local/ns/a/sa/b"]}}],"to":[{"operation":{"methods":["GET"],"paths":["/api/*"]}}],"when":[{"key":"request.headers[X-Team]","values":["blue"]}]},
		{"from":[{"source":{"requestPrincipals":["*"]}}]}]`
	for _, tc := range []struct {
		action     string
		wantAction securityapi.Action
		wantAudit  bool
		// wantGroups: ALLOW drops the JWT rule; every other action keeps it
		// on its other conditions (broader).
		wantGroups int
	}{
		{"", securityapi.Action_ALLOW, false, 1},
		{"ALLOW", securityapi.Action_ALLOW, false, 1},
		{"DENY", securityapi.Action_DENY, false, 2},
		{"AUDIT", securityapi.Action_DENY, true, 2},
		{"CUSTOM", securityapi.Action_DENY, false, 2},
		{"SOMETHING_NEW", securityapi.Action_DENY, false, 2},
	} {
		t.Run(cmp.Or(tc.action, "default"), func(t *testing.T) {
			p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
			js := `{"targetRefs":[{"kind":"Service","name":"web"}],"action":"` + tc.action + `",` + rules + `}`
			if err := json.Unmarshal([]byte(js), &p.Spec); err != nil {
				t.Fatal(err)
			}
			l7 := translateL7(p)
			if l7.Action != tc.wantAction || l7.Audit != tc.wantAudit || len(l7.Groups) != tc.wantGroups {
				t.Fatalf("action %v audit %v groups %d, want %v %v %d", l7.Action, l7.Audit, len(l7.Groups), tc.wantAction, tc.wantAudit, tc.wantGroups)
			}
			g := l7.Groups[0]
			if len(g.Rules) != 3 || g.Rules[0].Matches[0].L4.Principals[0].GetExact() != "cluster.local/ns/a/sa/b" ||
				g.Rules[1].Matches[0].Methods[0].GetExact() != "GET" || g.Rules[1].Matches[0].Paths[0].GetPrefix() != "/api/" ||
				g.Rules[2].Matches[0].Headers[0].Name != "x-team" || g.Rules[2].Matches[0].Headers[0].Values[0].GetExact() != "blue" {
				t.Fatalf("group %v", g)
			}
			if tc.wantGroups == 2 && !proto.Equal(l7.Groups[1], &waypointapi.L7Group{Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{{L4: &securityapi.Match{}}}}}}) {
				t.Fatalf("the JWT rule should match every source, got %v", l7.Groups[1])
			}
		})
	}
}

// Values that do not parse are left out of a match; the rule must then be
// dropped from an ALLOW policy, never widened to every source.
func TestTranslateL7BadValues(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		wantGroups int
	}{
		{"allow bad ipBlocks", `{"rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]}]}`, 0},
		{"allow bad notIpBlocks", `{"rules":[{"from":[{"source":{"notIpBlocks":["10.0.0.0/99"]}}]}]}`, 0},
		{"allow bad remoteIpBlocks", `{"rules":[{"from":[{"source":{"remoteIpBlocks":["x"]}}]}]}`, 0},
		{"allow bad port", `{"rules":[{"to":[{"operation":{"ports":["http"]}}]}]}`, 0},
		{"allow unknown condition", `{"rules":[{"when":[{"key":"request.auth.claims[iss]","values":["x"]}]}]}`, 0},
		{"allow good ipBlocks", `{"rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"],"remoteIpBlocks":["192.168.0.1"]}}]}]}`, 1},
		{"deny bad ipBlocks", `{"action":"DENY","rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]}]}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
			if err := json.Unmarshal([]byte(tc.spec), &p.Spec); err != nil {
				t.Fatal(err)
			}
			if l7 := translateL7(p); len(l7.Groups) != tc.wantGroups {
				t.Fatalf("groups %v, want %d", l7.Groups, tc.wantGroups)
			}
		})
	}
}

// A CUSTOM policy is logged when it changes, not on every rebuild.
func TestCustomPolicyLogged(t *testing.T) {
	var logs bytes.Buffer
	ix := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &sink{})
	ix.SetNamespace("shop", ns("shop", nil))
	ix.SetGateway("shop", "wp", &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointClass}})
	ix.SetAuthorizationPolicy("shop", "ext", &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ext"}, Spec: securityv1.AuthorizationPolicySpec{
		TargetRefs: []securityv1.PolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "wp"}},
		Action:     securityv1.ActionCustom, Provider: &securityv1.Provider{Name: "opa"}, Rules: []securityv1.Rule{{}},
	}})
	ix.Flush()
	if n := strings.Count(logs.String(), "CUSTOM"); n != 1 || !strings.Contains(logs.String(), "policy=shop/ext") || !strings.Contains(logs.String(), "provider=opa") {
		t.Fatalf("want one warning naming the policy and provider, got %q", logs.String())
	}
	ix.SetService("shop", "web", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{LabelUseWaypoint: "wp"}}})
	ix.Flush()
	if n := strings.Count(logs.String(), "CUSTOM"); n != 1 {
		t.Fatalf("an unrelated rebuild logged again: %q", logs.String())
	}
	ix.mu.Lock()
	wp := ix.buildWaypoint(ix.gateways["shop/wp"])
	ix.mu.Unlock()
	if len(wp.Policies) != 1 || wp.Policies[0].Action != securityapi.Action_DENY || len(wp.Policies[0].Groups) != 1 {
		t.Fatalf("policies %v", wp.Policies)
	}
}

// routeIndex is an index with waypoint shop/wp serving Service shop/web
// (ports http 80 and grpc 9090), and Services web-v2 and shadow to send to.
func routeIndex() *Index {
	ix := New(Options{}, &sink{})
	ix.SetNamespace("shop", ns("shop", nil))
	ix.SetGateway("shop", "wp", &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointClass}})
	ix.SetService("shop", "web", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{LabelUseWaypoint: "wp"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}}})
	for _, name := range []string{"web-v2", "shadow"} {
		ix.SetService("shop", name, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}})
	}
	return ix
}

// webService builds the waypoint and returns its Service shop/web.
func webService(t *testing.T, ix *Index) *waypointapi.Service {
	t.Helper()
	ix.mu.Lock()
	wp := ix.buildWaypoint(ix.gateways["shop/wp"])
	ix.mu.Unlock()
	if len(wp.Services) != 1 || wp.Services[0].Name != "web" {
		t.Fatalf("services %v", wp.Services)
	}
	if _, err := proto.Marshal(wp); err != nil {
		t.Fatal(err)
	}
	return wp.Services[0]
}

func httpRouteFrom(t testing.TB, spec string) *gatewayv1.HTTPRoute {
	t.Helper()
	r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		t.Fatal(err)
	}
	return r
}

func grpcRouteFrom(t testing.TB, spec string) *gatewayv1.GRPCRoute {
	t.Helper()
	r := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "g"}}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		t.Fatal(err)
	}
	return r
}

const (
	webParent = `"parentRefs":[{"kind":"Service","name":"web"}]`
	v2        = `{"name":"web-v2","port":80}`
	oneMatch  = `"matches":[{"path":{"type":"PathPrefix","value":"/x"}}]`
)

// failsClosed reports whether a translated rule answers 500: no filters,
// no backends.
func failsClosed(filters []*waypointapi.HTTPFilter, backends []*waypointapi.BackendRef) bool {
	return len(filters) == 0 && len(backends) == 0
}

func TestHTTPRouteRuleTranslation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rule  string
		check func(*waypointapi.HTTPRouteRule) bool
	}{
		{"backend request header modifier",
			`{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-b","value":"1"}],"add":[{"name":"x-a","value":"2"}],"remove":["x-r"]}}]}]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				m := r.Backends[0].Filters[0].GetRequestHeaderModifier()
				return len(r.Backends) == 1 && len(r.Backends[0].Filters) == 1 && len(r.Filters) == 0 &&
					m.Set[0].Name == "x-b" && m.Set[0].Value == "1" && m.Add[0].Name == "x-a" && m.Remove[0] == "x-r"
			}},
		{"backend response header modifier, only on its backend",
			`{"backendRefs":[{"name":"web-v2","port":80,"weight":3,"filters":[{"type":"ResponseHeaderModifier","responseHeaderModifier":{"set":[{"name":"x-from","value":"v2"}]}}]},{"name":"web","port":80}]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				return len(r.Backends) == 2 && r.Backends[0].Weight == 3 && r.Backends[0].Filters[0].GetResponseHeaderModifier().Set[0].Value == "v2" &&
					len(r.Backends[1].Filters) == 0
			}},
		{"rule mirror by percent", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":8080},"percent":25}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				m := r.Filters[0].GetRequestMirror()
				return m.Backend.Hostname == "shadow.shop.svc.cluster.local" && m.Backend.Port == 8080 && m.Numerator == 25 && m.Denominator == 100
			}},
		{"rule mirror by fraction", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":8080},"fraction":{"numerator":1,"denominator":3}}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				m := r.Filters[0].GetRequestMirror()
				return m.Numerator == 1 && m.Denominator == 3
			}},
		{"rule mirror, everything by default", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":8080}}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				m := r.Filters[0].GetRequestMirror()
				return m.Numerator == 100 && m.Denominator == 100
			}},
		{"mirror to a missing Service is dropped", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"nowhere","port":80}}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return len(r.Filters) == 0 && len(r.Backends) == 1 }},
		{"mirror to another namespace is dropped", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","namespace":"other","port":80}}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return len(r.Filters) == 0 && len(r.Backends) == 1 }},
		{"backend in another namespace is dropped", `{"backendRefs":[{"name":"web-v2","namespace":"other","port":80},{"name":"web-v2","namespace":"shop","port":80}]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				return len(r.Backends) == 1 && r.Backends[0].Namespace == "shop" && r.Backends[0].Hostname == "web-v2.shop.svc.cluster.local"
			}},
		{"backend of another kind is dropped", `{"backendRefs":[{"group":"multicluster.x-k8s.io","kind":"ServiceImport","name":"web-v2","port":80}]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return len(r.Backends) == 0 }},
		{"CORS fails closed", `{` + oneMatch + `,"filters":[{"type":"CORS","cors":{"allowOrigins":["https://a.example"]}},{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x","value":"y"}]}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				return failsClosed(r.Filters, r.Backends) && r.Matches[0].Path.Value == "/x"
			}},
		{"ExtensionRef fails closed", `{` + oneMatch + `,"filters":[{"type":"ExtensionRef","extensionRef":{"group":"example.net","kind":"Auth","name":"a"}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				return failsClosed(r.Filters, r.Backends) && len(r.Matches) == 1
			}},
		{"ExternalAuth fails closed", `{"filters":[{"type":"ExternalAuth","externalAuth":{"protocol":"HTTP","backendRef":{"name":"auth","port":80}}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"unknown filter type fails closed", `{"filters":[{"type":"Teleport"}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"filter without its configuration fails closed", `{"filters":[{"type":"RequestHeaderModifier"}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"filter type and configuration disagree: fails closed", `{"filters":[{"type":"URLRewrite","requestHeaderModifier":{"set":[{"name":"x","value":"y"}]}}],"backendRefs":[` + v2 + `]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"mirror on a backendRef fails closed", `{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":80}}}]},{"name":"web","port":80}]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"rewrite on a backendRef fails closed", `{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"URLRewrite","urlRewrite":{"hostname":"x.example"}}]}]}`,
			func(r *waypointapi.HTTPRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
		{"rule timeouts and retry", `{"backendRefs":[` + v2 + `],"timeouts":{"request":"2s","backendRequest":"500ms"},"retry":{"attempts":2,"codes":[502,503],"backoff":"100ms"}}`,
			func(r *waypointapi.HTTPRouteRule) bool {
				return r.RequestTimeoutMs == 2000 && r.BackendTimeoutMs == 500 && r.Retry.Attempts == 2 && len(r.Retry.Codes) == 2 && r.Retry.BackoffMs == 100
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := routeIndex()
			ix.SetHTTPRoute("shop", "r", httpRouteFrom(t, `{`+webParent+`,"rules":[`+tc.rule+`]}`))
			svc := webService(t, ix)
			if len(svc.HttpRoutes) != 1 || len(svc.HttpRoutes[0].Rules) != 1 {
				t.Fatalf("routes %v", svc.HttpRoutes)
			}
			if r := svc.HttpRoutes[0].Rules[0]; !tc.check(r) {
				t.Fatalf("rule %v", r)
			}
		})
	}
}

func TestGRPCRouteRuleTranslation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rule  string
		check func(*waypointapi.GRPCRouteRule) bool
	}{
		{"mirror by fraction", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":9090},"fraction":{"numerator":1,"denominator":4}}}],"backendRefs":[{"name":"web-v2","port":9090}]}`,
			func(r *waypointapi.GRPCRouteRule) bool {
				m := r.Filters[0].GetRequestMirror()
				return len(r.Filters) == 1 && m.Backend.Hostname == "shadow.shop.svc.cluster.local" && m.Backend.Port == 9090 && m.Numerator == 1 && m.Denominator == 4 &&
					len(r.Backends) == 1
			}},
		{"mirror by percent", `{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":9090},"percent":10}}],"backendRefs":[{"name":"web-v2","port":9090}]}`,
			func(r *waypointapi.GRPCRouteRule) bool {
				m := r.Filters[0].GetRequestMirror()
				return m.Numerator == 10 && m.Denominator == 100
			}},
		{"header modifiers", `{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"add":[{"name":"x-q","value":"1"}]}},{"type":"ResponseHeaderModifier","responseHeaderModifier":{"remove":["x-s"]}}],"backendRefs":[{"name":"web-v2","port":9090}]}`,
			func(r *waypointapi.GRPCRouteRule) bool {
				return len(r.Filters) == 2 && r.Filters[0].GetRequestHeaderModifier().Add[0].Name == "x-q" && r.Filters[1].GetResponseHeaderModifier().Remove[0] == "x-s"
			}},
		{"backend header modifier", `{"backendRefs":[{"name":"web-v2","port":9090,"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x-b","value":"v2"}]}}]}]}`,
			func(r *waypointapi.GRPCRouteRule) bool {
				return len(r.Backends) == 1 && r.Backends[0].Filters[0].GetRequestHeaderModifier().Set[0].Value == "v2"
			}},
		{"ExtensionRef fails closed", `{"matches":[{"method":{"service":"shop.Cart"}}],"filters":[{"type":"ExtensionRef","extensionRef":{"group":"example.net","kind":"F","name":"f"}}],"backendRefs":[{"name":"web-v2","port":9090}]}`,
			func(r *waypointapi.GRPCRouteRule) bool {
				return failsClosed(r.Filters, r.Backends) && r.Matches[0].Service == "shop.Cart"
			}},
		{"mirror on a backendRef fails closed", `{"backendRefs":[{"name":"web-v2","port":9090,"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":9090}}}]}]}`,
			func(r *waypointapi.GRPCRouteRule) bool { return failsClosed(r.Filters, r.Backends) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := routeIndex()
			ix.SetGRPCRoute("shop", "g", grpcRouteFrom(t, `{`+webParent+`,"rules":[`+tc.rule+`]}`))
			svc := webService(t, ix)
			if len(svc.GrpcRoutes) != 1 || len(svc.GrpcRoutes[0].Rules) != 1 {
				t.Fatalf("routes %v", svc.GrpcRoutes)
			}
			if r := svc.GrpcRoutes[0].Rules[0]; !tc.check(r) {
				t.Fatalf("rule %v", r)
			}
		})
	}
}

// A Service parentRef's sectionName is a port name (GEP-1426).
func TestRouteParentPort(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parent   string
		attached bool
		port     uint32
	}{
		{"whole service", `{"kind":"Service","name":"web"}`, true, 0},
		{"port", `{"kind":"Service","name":"web","port":80}`, true, 80},
		{"section name", `{"kind":"Service","name":"web","sectionName":"grpc"}`, true, 9090},
		{"both, same port", `{"kind":"Service","name":"web","sectionName":"http","port":80}`, true, 80},
		{"both, different ports", `{"kind":"Service","name":"web","sectionName":"http","port":9090}`, false, 0},
		{"unknown section name", `{"kind":"Service","name":"web","sectionName":"admin"}`, false, 0},
		{"unknown port", `{"kind":"Service","name":"web","port":81}`, false, 0},
		{"another service", `{"kind":"Service","name":"web-v2"}`, false, 0},
		{"a Gateway", `{"name":"web"}`, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := routeIndex()
			ix.SetHTTPRoute("shop", "r", httpRouteFrom(t, `{"parentRefs":[`+tc.parent+`],"rules":[{"backendRefs":[`+v2+`]}]}`))
			ix.SetGRPCRoute("shop", "g", grpcRouteFrom(t, `{"parentRefs":[`+tc.parent+`],"rules":[{"backendRefs":[`+v2+`]}]}`))
			svc := webService(t, ix)
			if !tc.attached {
				if len(svc.HttpRoutes)+len(svc.GrpcRoutes) != 0 {
					t.Fatalf("attached: %v %v", svc.HttpRoutes, svc.GrpcRoutes)
				}
				return
			}
			if len(svc.HttpRoutes) != 1 || svc.HttpRoutes[0].Port != tc.port || len(svc.GrpcRoutes) != 1 || svc.GrpcRoutes[0].Port != tc.port {
				t.Fatalf("routes %v %v, want port %d", svc.HttpRoutes, svc.GrpcRoutes, tc.port)
			}
		})
	}
}

func TestParentPort(t *testing.T) {
	ports := []corev1.ServicePort{{Name: "http", Port: 80}, {Name: "grpc", Port: 9090}}
	for _, tc := range []struct {
		section string
		port    int32
		want    uint32
		ok      bool
	}{
		{"", 0, 0, true},
		{"grpc", 0, 9090, true},
		{"", 80, 80, true},
		{"http", 80, 80, true},
		{"http", 9090, 0, false},
		{"nope", 0, 0, false},
		{"", 1, 0, false},
	} {
		ref := gatewayv1.ParentReference{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "web"}
		if tc.section != "" {
			ref.SectionName = ptr.To(gatewayv1.SectionName(tc.section))
		}
		if tc.port != 0 {
			ref.Port = ptr.To(gatewayv1.PortNumber(tc.port))
		}
		if got, ok := ParentPort(ref, ports); got != tc.want || ok != tc.ok {
			t.Errorf("sectionName %q port %d: got %d %v, want %d %v", tc.section, tc.port, got, ok, tc.want, tc.ok)
		}
	}
}

func TestUnsupportedRules(t *testing.T) {
	h := httpRouteFrom(t, `{"rules":[
		{"backendRefs":[`+v2+`]},
		{"name":"cors","filters":[{"type":"CORS","cors":{}}]},
		{"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestRedirect","requestRedirect":{"scheme":"https"}}]}]}]}`)
	got := UnsupportedHTTPRules(h)
	if len(got) != 2 || got[0].Index != 1 || got[0].Name != "cors" || !strings.Contains(got[0].Reason, "CORS") ||
		got[1].Index != 2 || !strings.Contains(got[1].Reason, "backendRefs[0]") || !strings.Contains(got[1].Reason, "RequestRedirect") {
		t.Fatalf("HTTPRoute: %+v", got)
	}
	g := grpcRouteFrom(t, `{"rules":[
		{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":80}}}]},
		{"filters":[{"type":"ExtensionRef","extensionRef":{"group":"x","kind":"y","name":"z"}}]}]}`)
	if got := UnsupportedGRPCRules(g); len(got) != 1 || got[0].Index != 1 || !strings.Contains(got[0].Reason, "ExtensionRef") {
		t.Fatalf("GRPCRoute: %+v", got)
	}
}

// FuzzRouteTranslation translates arbitrary route specs and checks what
// the waypoint may rely on: every rule is translated, in order, but those
// the status says are left out; a rule the status calls unsupported answers
// 500 (no filters, no backends) on the matches the waypoint can evaluate,
// which are all translated; backends and mirrors stay in the route's
// namespace; backends carry header modifiers only; the result encodes.
func FuzzRouteTranslation(f *testing.F) {
	f.Add(`{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":8080},"percent":25}}],"backendRefs":[{"name":"web-v2","port":80,"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x","value":"y"}]}}]}]}]}`)
	f.Add(`{"rules":[{"filters":[{"type":"CORS","cors":{}}],"backendRefs":[{"name":"web-v2","namespace":"other","port":80}]}]}`)
	f.Add(`{"parentRefs":[{"kind":"Service","name":"web","sectionName":"grpc"}],"rules":[{"backendRefs":[{"name":"x","port":1,"filters":[{"type":"URLRewrite","urlRewrite":{}}]}]}]}`)
	f.Add(`{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"("}},{"path":{"value":"/a"}}],"backendRefs":[{"name":"web-v2","port":80}]},` +
		`{"matches":[{"headers":[{"type":"RegularExpression","name":"x","value":"a{999}"}]}]},{"retry":{"attempts":1000},"timeouts":{"request":"1s","backendRequest":"2s"}}]}`)
	f.Add(`{"rules":[{"matches":[{"method":{"type":"RegularExpression","method":"(("}},{"method":{"service":"a/b"}}]},` +
		`{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"set":[{"name":"x","value":"1"}],"add":[{"name":"X","value":"2"}]}}]}]}`)
	f.Fuzz(func(t *testing.T, spec string) {
		var hs gatewayv1.HTTPRouteSpec
		var gs gatewayv1.GRPCRouteSpec
		if json.Unmarshal([]byte(spec), &hs) != nil || json.Unmarshal([]byte(spec), &gs) != nil {
			return
		}
		if len(hs.ParentRefs) == 0 {
			hs.ParentRefs = []gatewayv1.ParentReference{{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "web"}}
			gs.ParentRefs = hs.ParentRefs
		}
		ix := routeIndex()
		hr := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}, Spec: hs}
		gr := &gatewayv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "g"}, Spec: gs}
		ix.SetHTTPRoute("shop", "r", hr)
		ix.SetGRPCRoute("shop", "g", gr)
		svc := webService(t, ix)
		checkBackends := func(bs []*waypointapi.BackendRef) {
			for _, b := range bs {
				if b.Namespace != "shop" || b.Hostname != b.Name+".shop.svc.cluster.local" {
					t.Fatalf("backend %v leaves the route's namespace", b)
				}
				for _, f := range b.Filters {
					if f.GetRequestHeaderModifier() == nil && f.GetResponseHeaderModifier() == nil {
						t.Fatalf("backend filter %v is not a header modifier", f)
					}
				}
			}
		}
		checkFilters := func(fs []*waypointapi.HTTPFilter) {
			for _, f := range fs {
				if m := f.GetRequestMirror(); m != nil {
					if m.Backend.Namespace != "shop" || ix.services[keyOf("shop", m.Backend.Name)] == nil || m.Denominator == 0 {
						t.Fatalf("mirror %v", m)
					}
				}
			}
		}
		for _, r := range svc.HttpRoutes {
			checkRules(t, "HTTPRoute", len(hs.Rules), UnsupportedHTTPRules(hr), len(r.Rules), func(i, spec int) (int, int, []*waypointapi.HTTPFilter, []*waypointapi.BackendRef) {
				rr := r.Rules[i]
				checkBackends(rr.Backends)
				checkFilters(rr.Filters)
				return len(rr.Matches), len(hs.Rules[spec].Matches), rr.Filters, rr.Backends
			})
		}
		for _, r := range svc.GrpcRoutes {
			checkRules(t, "GRPCRoute", len(gs.Rules), UnsupportedGRPCRules(gr), len(r.Rules), func(i, spec int) (int, int, []*waypointapi.HTTPFilter, []*waypointapi.BackendRef) {
				rr := r.Rules[i]
				checkBackends(rr.Backends)
				checkFilters(rr.Filters)
				return len(rr.Matches), len(gs.Rules[spec].Matches), rr.Filters, rr.Backends
			})
		}
	})
}

// checkRules checks a route's translated rules against its spec's and the
// unsupported rules its status reports. rule returns, for translated rule
// i standing for spec rule spec, its matches, the spec's, its filters and
// backends.
func checkRules(t *testing.T, kind string, specRules int, unsupported []UnsupportedRule, translated int,
	rule func(i, spec int) (matches, specMatches int, fs []*waypointapi.HTTPFilter, bs []*waypointapi.BackendRef)) {
	t.Helper()
	bad := map[int]UnsupportedRule{}
	leftOut := 0
	for _, u := range unsupported {
		bad[u.Index] = u
		if u.LeftOut {
			leftOut++
		}
		if u.Reason == "" {
			t.Fatalf("%s rule %d unsupported without a reason", kind, u.Index)
		}
	}
	if translated != specRules-leftOut {
		t.Fatalf("%s: %d rules translated of %d, %d left out", kind, translated, specRules, leftOut)
	}
	i := 0
	for spec := range specRules {
		u, isBad := bad[spec]
		if u.LeftOut {
			continue
		}
		matches, specMatches, fs, bs := rule(i, spec)
		i++
		switch {
		case !isBad && matches != specMatches:
			t.Fatalf("%s rule %d: %d matches, want %d", kind, spec, matches, specMatches)
		case isBad && (matches > specMatches || specMatches > 0 && matches == 0):
			t.Fatalf("%s rule %d: %d matches of %d translated", kind, spec, matches, specMatches)
		case isBad && !failsClosed(fs, bs):
			t.Fatalf("unsupported %s rule %d translated with filters %v and backends %v", kind, spec, fs, bs)
		}
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
		TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "web"}}}, Limit: policyv1alpha1.Limit{Requests: 100, Unit: policyv1alpha1.Minute},
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
