package index

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// The shape of a mesh at issue 14's scale, per namespace (1,000 of them:
// 5,000 Services, 20,000 pods, 2,000 policies, 1,000 HTTPRoutes), every
// tenth namespace with a waypoint its Services use.
const (
	scaleServicesPerNS = 5
	scalePodsPerNS     = 20
	scaleWaypointEvery = 10
)

func scaleNS(i int) string { return fmt.Sprintf("ns-%04d", i) }

// apiObject gives obj what the apiserver would: a uid and a generation.
func apiObject(obj metav1.Object, generation int64) {
	obj.SetUID(types.UID("uid-" + obj.GetNamespace() + "-" + obj.GetName()))
	obj.SetGeneration(generation)
}

func scaleService(ns string, k int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%d", k)},
		Spec: corev1.ServiceSpec{
			Selector:   map[string]string{"app": fmt.Sprintf("app-%d", k)},
			ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", k, len(ns))},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

func scalePod(ns string, i, j int) *corev1.Pod {
	n := i*scalePodsPerNS + j
	p := redirected(pod(ns, fmt.Sprintf("pod-%02d", j), fmt.Sprintf("10.%d.%d.%d", 64+n/65536, (n/256)%256, n%256),
		map[string]string{"app": fmt.Sprintf("app-%d", j%scaleServicesPerNS)}, true))
	apiObject(p, 1)
	return p
}

func scalePolicies(ns string) []*securityv1.AuthorizationPolicy {
	allow := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-namespace"},
		Spec: securityv1.AuthorizationPolicySpec{Action: securityv1.ActionAllow, Rules: []securityv1.Rule{{
			From: []securityv1.RuleFrom{{Source: &securityv1.Source{Namespaces: []string{ns}}}},
		}}},
	}
	deny := &securityv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny-admin"},
		Spec: securityv1.AuthorizationPolicySpec{Action: securityv1.ActionDeny,
			Selector: &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": "app-0"}},
			Rules:    []securityv1.Rule{{To: []securityv1.RuleTo{{Operation: &securityv1.Operation{Ports: []string{"9999"}}}}}},
		},
	}
	apiObject(allow, 1)
	apiObject(deny, 1)
	return []*securityv1.AuthorizationPolicy{allow, deny}
}

func scaleRoute(ns string) *gatewayv1.HTTPRoute {
	backend := func(name string, weight int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
			BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(80))},
			Weight:                 ptr.To(weight),
		}}
	}
	r := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "svc-0"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "svc-0", Port: ptr.To(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{
				{
					Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/v2")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("svc-1", 1)},
				},
				{BackendRefs: []gatewayv1.HTTPBackendRef{backend("svc-0", 90), backend("svc-1", 10)}},
			},
		},
	}
	apiObject(r, 1)
	return r
}

func scaleWaypoint(ns string) *gatewayv1.Gateway {
	g := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "waypoint"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: WaypointClass},
		Status:     gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Value: "10.97.0.1"}}},
	}
	apiObject(g, 1)
	return g
}

// scaleIndex returns an index holding a mesh of namespaces namespaces of
// the shape above, flushed.
func scaleIndex(tb testing.TB, namespaces int) (*Index, *sink) {
	tb.Helper()
	s := &sink{}
	ix := New(Options{}, s)
	for i := range namespaces {
		name := scaleNS(i)
		labels := map[string]string{LabelDataplaneMode: DataplaneAmbient}
		if i%scaleWaypointEvery == 0 {
			labels[LabelUseWaypoint] = "waypoint"
			ix.SetGateway(name, "waypoint", scaleWaypoint(name))
		}
		ix.SetNamespace(name, ns(name, labels))
		for k := range scaleServicesPerNS {
			svc := scaleService(name, k)
			ix.SetService(name, svc.Name, svc)
		}
		for j := range scalePodsPerNS {
			p := scalePod(name, i, j)
			ix.SetPod(name, p.Name, p)
		}
		for _, p := range scalePolicies(name) {
			ix.SetAuthorizationPolicy(name, p.Name, p)
		}
		r := scaleRoute(name)
		ix.SetHTTPRoute(name, r.Name, r)
	}
	ix.Flush()
	s.got = nil
	return ix, s
}

// dirty reports what the next flush would rebuild.
func (ix *Index) dirty() []string {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var out []string
	for k := range ix.dirtyPods {
		out = append(out, "pod "+k)
	}
	for k := range ix.dirtySvcs {
		out = append(out, "service "+k)
	}
	for k := range ix.dirtyAuthz {
		out = append(out, "policy "+k)
	}
	if ix.dirtyWaypoints {
		out = append(out, "waypoints")
	}
	slices.Sort(out)
	return out
}

// TestUnchangedInputsRebuildNothing: what the informers feed again, and
// status writes (istiod-lite's own among them), rebuild nothing, while a
// change of what the index reads rebuilds what it affects.
func TestUnchangedInputsRebuildNothing(t *testing.T) {
	const n = "ns-0000"
	for _, tc := range []struct {
		name  string
		apply func(ix *Index)
		want  []string
	}{
		{"pod fed again", func(ix *Index) { ix.SetPod(n, "pod-01", scalePod(n, 0, 1)) }, nil},
		{"pod status condition other than Ready", func(ix *Index) {
			p := scalePod(n, 0, 1)
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue})
			ix.SetPod(n, p.Name, p)
		}, nil},
		{"pod relabelled", func(ix *Index) {
			p := scalePod(n, 0, 1)
			p.Labels["version"] = "v2"
			ix.SetPod(n, p.Name, p)
		}, []string{"pod " + n + "/pod-01"}},
		{"service fed again", func(ix *Index) { ix.SetService(n, "svc-1", scaleService(n, 1)) }, nil},
		{"service port added", func(ix *Index) {
			svc := scaleService(n, 1)
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "grpc", Port: 9090})
			ix.SetService(n, svc.Name, svc)
		}, []string{"pod " + n + "/pod-01", "pod " + n + "/pod-06", "pod " + n + "/pod-11", "pod " + n + "/pod-16", "service " + n + "/svc-1", "waypoints"}},
		{"service without a waypoint changed", func(ix *Index) {
			const other = "ns-0001"
			svc := scaleService(other, 1)
			svc.Spec.Ports[0].Port = 81
			ix.SetService(other, svc.Name, svc)
		}, []string{"pod ns-0001/pod-01", "pod ns-0001/pod-06", "pod ns-0001/pod-11", "pod ns-0001/pod-16", "service ns-0001/svc-1"}},
		{"service added", func(ix *Index) {
			svc := scaleService("ns-0001", 1)
			svc.Name = "new"
			svc.Spec.Selector = map[string]string{"app": "none"}
			ix.SetService(svc.Namespace, svc.Name, svc)
		}, []string{"service ns-0001/new"}},
		{"service added in a waypoint's namespace", func(ix *Index) {
			svc := scaleService(n, 1)
			svc.Name = "new"
			svc.Spec.Selector = map[string]string{"app": "none"}
			ix.SetService(n, svc.Name, svc)
		}, []string{"service " + n + "/new", "waypoints"}},
		{"service a route mirrors to added", func(ix *Index) {
			r := scaleRoute("ns-0001")
			r.Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror,
				RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: gatewayv1.BackendObjectReference{Name: "new", Namespace: ptr.To(gatewayv1.Namespace("ns-0001"))}}}}
			r.Generation = 2
			ix.SetHTTPRoute(r.Namespace, r.Name, r)
			ix.Flush()
			svc := scaleService("ns-0001", 1)
			svc.Name = "new"
			svc.Spec.Selector = map[string]string{"app": "none"}
			ix.SetService(svc.Namespace, svc.Name, svc)
		}, []string{"service ns-0001/new", "waypoints"}},
		{"waypoint address changed", func(ix *Index) {
			g := scaleWaypoint(n)
			g.Status.Addresses[0].Value = "10.97.0.2"
			ix.SetGateway(n, g.Name, g)
		}, boundToWaypoint(n)},
		{"waypoint status without a new address", func(ix *Index) {
			g := scaleWaypoint(n)
			g.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: metav1.ConditionTrue}}
			ix.SetGateway(n, g.Name, g)
		}, nil},
		{"policy status", func(ix *Index) {
			p := scalePolicies(n)[0]
			p.Status.Conditions = []metav1.Condition{{Type: "ZtunnelAccepted", Status: metav1.ConditionTrue}}
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}, nil},
		{"policy spec (a new generation)", func(ix *Index) {
			p := scalePolicies(n)[0]
			p.Generation = 2
			p.Spec.Rules[0].From[0].Source.Namespaces = append(p.Spec.Rules[0].From[0].Source.Namespaces, "other")
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}, []string{"policy " + n + "/allow-namespace"}},
		{"policy recreated (a new uid)", func(ix *Index) {
			p := scalePolicies(n)[0]
			p.UID = "another"
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}, []string{"policy " + n + "/allow-namespace"}},
		{"policy on a waypoint", func(ix *Index) {
			p := scalePolicies(n)[0]
			p.Generation = 2
			p.Spec.TargetRefs = []securityv1.PolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "waypoint"}}
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}, []string{"policy " + n + "/allow-namespace", "waypoints"}},
		{"route status", func(ix *Index) {
			r := scaleRoute(n)
			r.Status.Parents = []gatewayv1.RouteParentStatus{{ControllerName: "skiff"}}
			ix.SetHTTPRoute(n, r.Name, r)
		}, nil},
		{"route spec (a new generation)", func(ix *Index) {
			r := scaleRoute(n)
			r.Generation = 2
			ix.SetHTTPRoute(n, r.Name, r)
		}, []string{"waypoints"}},
		{"route of a Service without a waypoint", func(ix *Index) {
			r := scaleRoute("ns-0001")
			r.Generation = 2
			r.Spec.Rules = r.Spec.Rules[:1]
			ix.SetHTTPRoute(r.Namespace, r.Name, r)
		}, nil},
		{"route moved to a Service with a waypoint", func(ix *Index) {
			r := scaleRoute("ns-0001")
			r.Generation = 2
			r.Spec.ParentRefs[0].Namespace = ptr.To(gatewayv1.Namespace(n))
			ix.SetHTTPRoute(r.Namespace, r.Name, r)
		}, []string{"waypoints"}},
		{"route moved away from a Service with a waypoint", func(ix *Index) {
			r := scaleRoute(n)
			r.Generation = 2
			r.Spec.ParentRefs[0].Namespace = ptr.To(gatewayv1.Namespace("ns-0001"))
			ix.SetHTTPRoute(r.Namespace, r.Name, r)
		}, []string{"waypoints"}},
		{"route deleted", func(ix *Index) { ix.SetHTTPRoute(n, "svc-0", nil) }, []string{"waypoints"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix, _ := scaleIndex(t, 2)
			tc.apply(ix)
			if got := ix.dirty(); !slices.Equal(got, tc.want) {
				t.Errorf("to rebuild: %q, want %q", got, tc.want)
			}
		})
	}
}

// boundToWaypoint is what a change of ns's waypoint rebuilds: the pods and
// services bound to it (those of ns) and the waypoints.
func boundToWaypoint(ns string) []string {
	var out []string
	for j := range scalePodsPerNS {
		out = append(out, fmt.Sprintf("pod %s/pod-%02d", ns, j))
	}
	for k := range scaleServicesPerNS {
		out = append(out, fmt.Sprintf("service %s/svc-%d", ns, k))
	}
	return append(out, "waypoints")
}

// TestSelectorPolicyRebuildsOnlyItsWorkloads: moving a selector policy
// from one set of pods to another rebuilds, and pushes, those pods only,
// in its namespace and in the root namespace (where it selects in every
// namespace).
func TestSelectorPolicyRebuildsOnlyItsWorkloads(t *testing.T) {
	for _, tc := range []struct {
		name, policyNS string
		want           []string
	}{
		{"namespace", "ns-0001", []string{"Kubernetes//Pod/ns-0001/pod-00", "Kubernetes//Pod/ns-0001/pod-01", "Kubernetes//Pod/ns-0001/pod-05", "Kubernetes//Pod/ns-0001/pod-06"}},
		{"root namespace", "istio-system", []string{
			"Kubernetes//Pod/ns-0000/pod-00", "Kubernetes//Pod/ns-0000/pod-01", "Kubernetes//Pod/ns-0000/pod-05", "Kubernetes//Pod/ns-0000/pod-06",
			"Kubernetes//Pod/ns-0001/pod-00", "Kubernetes//Pod/ns-0001/pod-01", "Kubernetes//Pod/ns-0001/pod-05", "Kubernetes//Pod/ns-0001/pod-06",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix, s := scaleIndex(t, 2)
			// Fewer pods, so that each label is on two of them.
			for _, ns := range []string{"ns-0000", "ns-0001"} {
				for j := 10; j < scalePodsPerNS; j++ {
					ix.SetPod(ns, fmt.Sprintf("pod-%02d", j), nil)
				}
			}
			p := scalePolicies(tc.policyNS)[1]
			ix.SetAuthorizationPolicy(p.Namespace, p.Name, p)
			ix.Flush()
			s.got = nil

			moved := scalePolicies(tc.policyNS)[1]
			moved.Generation = 2
			moved.Spec.Selector.MatchLabels["app"] = "app-1"
			ix.SetAuthorizationPolicy(moved.Namespace, moved.Name, moved)
			var rebuilt []string
			for _, d := range ix.dirty() {
				if name, ok := strings.CutPrefix(d, "pod "); ok {
					rebuilt = append(rebuilt, ix.workloadUID(name))
				}
			}
			if !slices.Equal(rebuilt, tc.want) {
				t.Errorf("pods rebuilt: %q, want %q", rebuilt, tc.want)
			}
			ix.Flush()
			u := s.last(t)
			if len(u[xds.AuthorizationType]) != 0 {
				t.Errorf("the policy's own resource was pushed, though its selector is not part of it")
			}
			var pushed []string
			for _, up := range u[xds.AddressType] {
				for _, r := range up.Upserted {
					pushed = append(pushed, r.Name)
				}
				if len(up.Removed) > 0 {
					t.Errorf("removed %q", up.Removed)
				}
			}
			if !slices.Equal(pushed, tc.want) {
				t.Errorf("pushed %q, want %q", pushed, tc.want)
			}
		})
	}
}

// TestWaypointsGetWhatAttachesToThem: each waypoint's configuration holds
// its own Services with the routes and policies attached to them, and its
// own policies, however many other waypoints, services, routes and policies
// there are; building them all at once gives what building each alone does.
func TestWaypointsGetWhatAttachesToThem(t *testing.T) {
	ix, _ := scaleIndex(t, 30)
	// A policy on each waypoint, one on a Service, one on both.
	for _, p := range []*securityv1.AuthorizationPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-0010", Name: "on-waypoint"}, Spec: securityv1.AuthorizationPolicySpec{
			TargetRefs: []securityv1.PolicyTargetReference{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "waypoint"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-0020", Name: "on-service"}, Spec: securityv1.AuthorizationPolicySpec{
			TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "svc-3"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-0020", Name: "on-both"}, Spec: securityv1.AuthorizationPolicySpec{
			TargetRef:  &securityv1.PolicyTargetReference{Kind: "Service", Name: "svc-3"},
			TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "svc-3"}, {Group: gatewayv1.GroupName, Kind: "Gateway", Name: "waypoint"}}}},
	} {
		ix.SetAuthorizationPolicy(p.Namespace, p.Name, p)
	}
	in := ix.waypointInputs()
	for _, ns := range []string{"ns-0000", "ns-0010", "ns-0020"} {
		g := ix.gateways[ns+"/waypoint"]
		wp := ix.buildWaypointFrom(g, in)
		if alone := ix.buildWaypoint(g); !proto.Equal(wp, alone) {
			t.Errorf("%s: built with the others:\n%v\nbuilt alone:\n%v", ns, wp, alone)
		}
		var services []string
		for _, s := range wp.Services {
			services = append(services, s.Namespace+"/"+s.Name)
			if s.Namespace != ns {
				t.Errorf("%s: holds %s/%s of another namespace", ns, s.Namespace, s.Name)
			}
			wantRoutes := 0
			if s.Name == "svc-0" {
				wantRoutes = 1
			}
			if len(s.HttpRoutes) != wantRoutes {
				t.Errorf("%s: %s has %d routes, want %d", ns, s.Name, len(s.HttpRoutes), wantRoutes)
			}
			if got, want := policyNames(s.Policies), servicePolicies(ns, s.Name); !slices.Equal(got, want) {
				t.Errorf("%s: %s has policies %q, want %q", ns, s.Name, got, want)
			}
		}
		if len(services) != scaleServicesPerNS {
			t.Errorf("%s: services %q, want the namespace's %d", ns, services, scaleServicesPerNS)
		}
		want := map[string][]string{"ns-0010": {"on-waypoint"}, "ns-0020": {"on-both"}}[ns]
		if got := policyNames(wp.Policies); !slices.Equal(got, want) {
			t.Errorf("%s: waypoint policies %q, want %q", ns, got, want)
		}
	}
}

func servicePolicies(ns, svc string) []string {
	if ns == "ns-0020" && svc == "svc-3" {
		return []string{"on-both", "on-service"}
	}
	return nil
}

func policyNames(ps []*waypointapi.L7Authorization) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.GetName())
	}
	return out
}

// BenchmarkFlushAtScale measures one change and the flush that publishes
// it, in a mesh of issue 14's size (1,000 namespaces).
func BenchmarkFlushAtScale(b *testing.B) {
	ix, _ := scaleIndex(b, 1000)
	const n = "ns-0500" // with a waypoint
	i := 0
	for _, bc := range []struct {
		name   string
		change func()
	}{
		{"pod relabelled", func() {
			p := scalePod(n, 500, 3)
			p.Labels["version"] = fmt.Sprint(i)
			ix.SetPod(n, p.Name, p)
		}},
		{"Service port changed", func() {
			svc := scaleService(n, 2)
			svc.Spec.Ports[0].Port = int32(1000 + i%2)
			ix.SetService(n, svc.Name, svc)
		}},
		{"AuthorizationPolicy rules changed", func() {
			p := scalePolicies(n)[0]
			p.Generation = int64(2 + i)
			p.Spec.Rules[0].From[0].Source.Namespaces = []string{fmt.Sprint(i)}
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}},
		{"HTTPRoute rule changed", func() {
			r := scaleRoute(n)
			r.Generation = int64(2 + i)
			r.Spec.Rules[0].Matches[0].Path.Value = ptr.To(fmt.Sprintf("/v%d", i))
			ix.SetHTTPRoute(n, r.Name, r)
		}},
		{"policy status written", func() {
			p := scalePolicies(n)[0]
			p.Status.Conditions = []metav1.Condition{{Type: "ZtunnelAccepted", Reason: fmt.Sprint(i)}}
			ix.SetAuthorizationPolicy(n, p.Name, p)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				i++
				bc.change()
				ix.Flush()
			}
		})
	}
}
