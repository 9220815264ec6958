package index

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// TestConsumerRouteTranslation checks that a consumer route (GEP-1294: in
// namespace "client", attached to Service shop/web) lands on the
// producer Service's entry of shop's waypoint, marked with its namespace,
// beside the producer's route, and keeps only the backends it may name
// without a ReferenceGrant: its own namespace's Services and the Service
// it is attached to.
func TestConsumerRouteTranslation(t *testing.T) {
	ix := New(Options{}, &sink{})
	ix.SetNamespace("shop", ns("shop", nil))
	ix.SetNamespace("client", ns("client", nil))
	ix.SetGateway("shop", "wp", &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointClass}})
	for _, svc := range []struct{ ns, name string }{{"shop", "web"}, {"shop", "admin"}, {"client", "local"}} {
		ix.SetService(svc.ns, svc.name, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: svc.ns, Name: svc.name, Labels: map[string]string{LabelUseWaypoint: "wp", LabelUseWaypointNS: "shop"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	}
	backend := func(ns, name string) gatewayv1.HTTPBackendRef {
		ref := gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To[gatewayv1.PortNumber](80)}
		if ns != "" {
			ref.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: ref}}
	}
	mirror := func(ns, name string) gatewayv1.HTTPRouteFilter {
		return gatewayv1.HTTPRouteFilter{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
			BackendRef: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Namespace: ptr.To(gatewayv1.Namespace(ns)), Port: ptr.To[gatewayv1.PortNumber](80)}}}
	}
	webParent := gatewayv1.ParentReference{Kind: ptr.To[gatewayv1.Kind]("Service"), Group: ptr.To[gatewayv1.Group](""), Name: "web", Namespace: ptr.To[gatewayv1.Namespace]("shop")}
	ix.SetHTTPRoute("client", "consumer", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "client", Name: "consumer"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{webParent}},
		Rules: []gatewayv1.HTTPRouteRule{{
			Filters: []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Header-Set", Value: "set"}}}},
				mirror("shop", "web"), mirror("shop", "admin"),
			},
			BackendRefs: []gatewayv1.HTTPBackendRef{backend("shop", "web"), backend("shop", "admin"), backend("", "local"), backend("elsewhere", "x")},
		}},
	}})
	ix.SetHTTPRoute("shop", "producer", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "producer"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "web"}}},
		Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{backend("", "admin"), backend("client", "local")}}},
	}})
	ix.mu.Lock()
	wp := ix.buildWaypoint(ix.gateways["shop/wp"])
	ix.mu.Unlock()

	routes := map[string]*waypointapi.HTTPRoute{}
	for _, s := range wp.Services {
		for _, r := range s.HttpRoutes {
			routes[s.Namespace+"/"+s.Name+" <- "+r.Namespace+"/"+r.Name] = r
		}
	}
	if len(routes) != 2 || routes["shop/web <- client/consumer"] == nil || routes["shop/web <- shop/producer"] == nil {
		t.Fatalf("routes %v: want the consumer and the producer route on shop/web only", slices.Sorted(maps.Keys(routes)))
	}
	consumer, producer := routes["shop/web <- client/consumer"], routes["shop/web <- shop/producer"]
	if consumer.ConsumerNamespace != "client" || producer.ConsumerNamespace != "" {
		t.Errorf("consumer_namespace %q and %q, want \"client\" and \"\"", consumer.ConsumerNamespace, producer.ConsumerNamespace)
	}
	hostnames := func(bs []*waypointapi.BackendRef) []string {
		var out []string
		for _, b := range bs {
			out = append(out, b.Namespace+"/"+b.Name+"="+b.Hostname)
		}
		return out
	}
	rule := consumer.Rules[0]
	// The parent Service and the route's own namespace's: kept; another
	// Service of the producer's namespace or of a third one: left out.
	if got, want := hostnames(rule.Backends), []string{"shop/web=web.shop.svc.cluster.local", "client/local=local.client.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("consumer backends %v, want %v", got, want)
	}
	var mirrors []*waypointapi.BackendRef
	for _, f := range rule.Filters {
		if m := f.GetRequestMirror(); m != nil {
			mirrors = append(mirrors, m.Backend)
		}
	}
	if got, want := hostnames(mirrors), []string{"shop/web=web.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("consumer mirrors %v, want %v", got, want)
	}
	if rule.Filters[0].GetResponseHeaderModifier().GetSet()[0].GetName() != "X-Header-Set" {
		t.Errorf("consumer filters %v", rule.Filters)
	}
	// A producer route still names only its own namespace's Services.
	if got, want := hostnames(producer.Rules[0].Backends), []string{"shop/admin=admin.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("producer backends %v, want %v", got, want)
	}
}

func TestBackendPermitted(t *testing.T) {
	svc := func(ns, name string) gatewayv1.ParentReference {
		p := gatewayv1.ParentReference{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			p.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		return p
	}
	ref := func(ns, name string) gatewayv1.BackendObjectReference {
		r := gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			r.Namespace = ptr.To(gatewayv1.Namespace(ns))
		}
		return r
	}
	tests := []struct {
		name    string
		routeNS string
		parent  gatewayv1.ParentReference
		ref     gatewayv1.BackendObjectReference
		want    bool
	}{
		{"producer route, own namespace", "shop", svc("", "web"), ref("", "admin"), true},
		{"producer route, own namespace named", "shop", svc("shop", "web"), ref("shop", "admin"), true},
		{"producer route, another namespace", "shop", svc("", "web"), ref("client", "local"), false},
		{"consumer route, the parent Service", "client", svc("shop", "web"), ref("shop", "web"), true},
		{"consumer route, its own namespace", "client", svc("shop", "web"), ref("", "local"), true},
		{"consumer route, another Service of the parent's namespace", "client", svc("shop", "web"), ref("shop", "admin"), false},
		{"consumer route, a third namespace", "client", svc("shop", "web"), ref("other", "web"), false},
		{"consumer route, same name in its own namespace", "client", svc("shop", "web"), ref("", "web"), true},
		{"not a Service parent", "client", gatewayv1.ParentReference{Name: "web", Namespace: ptr.To[gatewayv1.Namespace]("shop")}, ref("shop", "web"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BackendPermitted(tt.routeNS, tt.parent, tt.ref); got != tt.want {
				t.Errorf("BackendPermitted = %v, want %v", got, tt.want)
			}
		})
	}
}
