package index

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

type sink struct{ got [][]Update }

func (s *sink) Push(u []Update) { s.got = append(s.got, u) }

func (s *sink) last(t *testing.T) map[string][]Update {
	t.Helper()
	if len(s.got) == 0 {
		return nil
	}
	out := map[string][]Update{}
	for _, u := range s.got[len(s.got)-1] {
		out[u.TypeURL] = append(out[u.TypeURL], u)
	}
	s.got = nil
	return out
}

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pod(nsName, name, ip string, labels map[string]string, ready bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsName, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	return p
}

// redirected marks p as the node agent does once its traffic goes to
// ztunnel.
func redirected(p *corev1.Pod) *corev1.Pod {
	p.Annotations = map[string]string{AnnotationRedirection: RedirectionEnabled}
	return p
}

func decodeWorkload(t *testing.T, r Resource) *workloadapi.Workload {
	t.Helper()
	var a workloadapi.Address
	if err := proto.Unmarshal(r.Bytes, &a); err != nil {
		t.Fatal(err)
	}
	return a.GetWorkload()
}

func TestWorkloads(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("app", ns("app", map[string]string{LabelDataplaneMode: DataplaneAmbient}))
	ix.SetNamespace("plain", ns("plain", nil))
	ix.SetService("app", "web", &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("web")}, {Port: 81, TargetPort: intstr.FromString("missing")}, {Port: 90}}},
	})
	for _, p := range []*corev1.Pod{
		redirected(pod("app", "in", "10.0.0.1", map[string]string{"app": "web"}, true)),
		pod("app", "out", "10.0.0.2", map[string]string{LabelDataplaneMode: DataplaneNone}, false),
		redirected(pod("plain", "optin", "10.0.0.3", map[string]string{LabelDataplaneMode: DataplaneAmbient}, false)),
		pod("plain", "noip", "", nil, false),
	} {
		ix.SetPod(p.Namespace, p.Name, p)
	}
	if n := ix.Flush(); n != 4 { // 3 workloads + 1 service
		t.Fatalf("first flush: %d changes, want 4", n)
	}
	u := s.last(t)[xds.AddressType][0]
	got := map[string]*workloadapi.Workload{}
	for _, r := range u.Upserted {
		if w := decodeWorkload(t, r); w != nil {
			got[w.Name] = w
		}
	}
	for _, tc := range []struct {
		name    string
		tunnel  workloadapi.TunnelProtocol
		healthy bool
	}{{"in", workloadapi.TunnelProtocol_HBONE, true}, {"out", workloadapi.TunnelProtocol_NONE, false}, {"optin", workloadapi.TunnelProtocol_HBONE, false}} {
		w := got[tc.name]
		if w == nil {
			t.Fatalf("no workload %s", tc.name)
		}
		if w.TunnelProtocol != tc.tunnel || (w.Status == workloadapi.WorkloadStatus_HEALTHY) != tc.healthy {
			t.Errorf("%s: tunnel %v status %v", tc.name, w.TunnelProtocol, w.Status)
		}
	}
	ports := got["in"].Services["app/web.app.svc.cluster.local"].GetPorts()
	if len(ports) != 2 || ports[0].TargetPort != 8080 || ports[1].ServicePort != 90 || ports[1].TargetPort != 90 {
		t.Errorf("in: service ports %v, want 80→8080 (named) and 90→90, not the unresolvable 81", ports)
	}
	if got["in"].Uid != "Kubernetes//Pod/app/in" || got["in"].TrustDomain != "cluster.local" {
		t.Errorf("in: uid %q trust domain %q", got["in"].Uid, got["in"].TrustDomain)
	}

	// Nothing changed: nothing is pushed.
	ix.SetPod("app", "in", redirected(pod("app", "in", "10.0.0.1", map[string]string{"app": "web"}, true)))
	if n := ix.Flush(); n != 0 {
		t.Fatalf("unchanged pod: %d changes", n)
	}
	// Namespace leaves the mesh: its pods stay reached over HBONE while
	// their traffic still goes to ztunnel, until the node agent takes the
	// annotation off.
	ix.SetNamespace("app", ns("app", nil))
	if n := ix.Flush(); n != 0 {
		t.Fatalf("namespace unenrolled, pod still redirected: %d changes", n)
	}
	ix.SetPod("app", "in", pod("app", "in", "10.0.0.1", map[string]string{"app": "web"}, true))
	ix.Flush()
	u = s.last(t)[xds.AddressType][0]
	if len(u.Upserted) != 1 || u.Upserted[0].Name != "Kubernetes//Pod/app/in" || decodeWorkload(t, u.Upserted[0]).TunnelProtocol != workloadapi.TunnelProtocol_NONE {
		t.Fatalf("annotation removed: %+v", u)
	}
	ix.SetPod("app", "in", nil)
	ix.Flush()
	u = s.last(t)[xds.AddressType][0]
	if len(u.Removed) != 1 || u.Removed[0] != "Kubernetes//Pod/app/in" || len(u.Upserted) != 0 {
		t.Fatalf("pod deleted: %+v", u)
	}
}

func TestWaypointBinding(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("app", ns("app", map[string]string{LabelDataplaneMode: DataplaneAmbient, LabelUseWaypoint: "wp"}))
	ix.SetService("app", "svc", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "svc"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.1"}}})
	ix.SetPod("app", "p", pod("app", "p", "10.0.0.1", nil, true))
	for _, tc := range []struct {
		waypointFor           string
		wantSvc, wantWorkload bool
	}{{"service", true, false}, {"workload", false, true}, {"all", true, true}, {"none", false, false}} {
		ix.SetGateway("app", "wp", &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "wp", Labels: map[string]string{LabelWaypointFor: tc.waypointFor}},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: WaypointClass},
			Status:     gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: "10.96.0.99"}}},
		})
		ix.Flush()
		ix.mu.Lock()
		svc := ix.buildService(ix.services["app/svc"])
		w := ix.buildWorkload(ix.pods["app/p"])
		ix.mu.Unlock()
		if (svc.Waypoint != nil) != tc.wantSvc || (w.Waypoint != nil) != tc.wantWorkload {
			t.Errorf("waypoint-for %s: service waypoint %v, workload waypoint %v", tc.waypointFor, svc.Waypoint, w.Waypoint)
		}
	}
}

func TestTranslateL4(t *testing.T) {
	policy := func(js string) *securityv1.AuthorizationPolicy {
		p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
		if err := json.Unmarshal([]byte(js), &p.Spec); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		spec   string
		nilOut bool
		check  func(*securityapi.Authorization) bool
	}{
		{"allow principals and ports", `{"selector":{"matchLabels":{"app":"x"}},"rules":[{"from":[{"source":{"principals":["cluster.local/ns/a/sa/b"]}}],"to":[{"operation":{"ports":["8080"]}}]}]}`, false,
			func(a *securityapi.Authorization) bool {
				g := a.Groups
				return a.Scope == securityapi.Scope_WORKLOAD_SELECTOR && len(g) == 1 && len(g[0].Rules) == 2 &&
					g[0].Rules[0].Matches[0].Principals[0].GetExact() == "cluster.local/ns/a/sa/b" && g[0].Rules[1].Matches[0].DestinationPorts[0] == 8080
			}},
		{"allow with L7 drops the rule", `{"rules":[{"to":[{"operation":{"paths":["/admin"]}}]}]}`, false,
			func(a *securityapi.Authorization) bool {
				return a.Scope == securityapi.Scope_NAMESPACE && len(a.Groups) == 0
			}},
		{"deny with L7 keeps the L4 part", `{"action":"DENY","rules":[{"to":[{"operation":{"paths":["/admin"],"ports":["80"]}}]}]}`, false,
			func(a *securityapi.Authorization) bool {
				return a.Action == securityapi.Action_DENY && len(a.Groups) == 1 && a.Groups[0].Rules[0].Matches[0].DestinationPorts[0] == 80
			}},
		{"bad ip in allow drops the rule", `{"rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]}]}`, false,
			func(a *securityapi.Authorization) bool { return len(a.Groups) == 0 }},
		{"cidr and wildcard strings", `{"rules":[{"from":[{"source":{"ipBlocks":["10.1.2.3/8"],"namespaces":["*"],"notPrincipals":["*/sa/x"]}}]}]}`, false,
			func(a *securityapi.Authorization) bool {
				m := a.Groups[0].Rules[0].Matches[0]
				return len(m.SourceIps) == 1 && m.SourceIps[0].Length == 8 && m.SourceIps[0].Address[0] == 10 && m.SourceIps[0].Address[1] == 0 &&
					m.Namespaces[0].GetPresence() != nil && m.NotPrincipals[0].GetSuffix() == "/sa/x"
			}},
		{"when conditions", `{"rules":[{"when":[{"key":"source.ip","values":["1.2.3.4"]},{"key":"request.headers[x]","values":["y"]}]}],"action":"DENY"}`, false,
			func(a *securityapi.Authorization) bool {
				r := a.Groups[0].Rules
				return len(r) == 2 && len(r[0].Matches[0].SourceIps) == 1 && proto.Equal(r[1].Matches[0], &securityapi.Match{})
			}},
		{"waypoint policies are not for ztunnel", `{"targetRefs":[{"kind":"Service","name":"s"}],"rules":[{}]}`, true, nil},
		{"custom is not enforced here", `{"action":"CUSTOM","provider":{"name":"x"}}`, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := translateL4(policy(tc.spec), "istio-system")
			if tc.nilOut {
				if a != nil {
					t.Fatalf("got %v, want none", a)
				}
				return
			}
			if a == nil || !tc.check(a) {
				t.Fatalf("got %v", a)
			}
		})
	}
}

// FuzzTranslate feeds arbitrary policy specs through both translators.
func FuzzTranslate(f *testing.F) {
	f.Add(`{"rules":[{"from":[{"source":{"ipBlocks":["10.0.0.0/8"],"principals":["*"]}}],"to":[{"operation":{"ports":["80"],"paths":["/x*"]}}],"when":[{"key":"request.headers[a]","values":["b"]}]}]}`)
	f.Add(`{"action":"DENY","targetRefs":[{"kind":"Gateway","group":"gateway.networking.k8s.io","name":"wp"}],"rules":[{}]}`)
	f.Fuzz(func(t *testing.T, js string) {
		p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "n"}}
		if json.Unmarshal([]byte(js), &p.Spec) != nil {
			return
		}
		if a := translateL4(p, "istio-system"); a != nil {
			if _, err := proto.Marshal(a); err != nil {
				t.Fatal(err)
			}
		}
		if l7 := translateL7(p); l7 != nil {
			if _, err := proto.Marshal(l7); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestWorkloadPolicies(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("app", ns("app", map[string]string{LabelDataplaneMode: DataplaneAmbient}))
	ix.SetPod("app", "p", pod("app", "p", "10.0.0.1", map[string]string{"app": "web"}, true))
	sel := &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": "web"}}
	for _, p := range []*securityv1.AuthorizationPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "local"}, Spec: securityv1.AuthorizationPolicySpec{Selector: sel}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "mesh"}, Spec: securityv1.AuthorizationPolicySpec{Selector: sel}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "elsewhere"}, Spec: securityv1.AuthorizationPolicySpec{Selector: sel}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "nsWide"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "waypoint"}, Spec: securityv1.AuthorizationPolicySpec{Selector: sel, TargetRefs: []securityv1.PolicyTargetReference{{Kind: "Service", Name: "s"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "nomatch"}, Spec: securityv1.AuthorizationPolicySpec{Selector: &securityv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}}},
	} {
		ix.SetAuthorizationPolicy(p.Namespace, p.Name, p)
	}
	ix.Flush()
	ix.mu.Lock()
	w := ix.buildWorkload(ix.pods["app/p"])
	ix.mu.Unlock()
	if got := w.AuthorizationPolicies; len(got) != 2 || got[0] != "app/local" || got[1] != "istio-system/mesh" {
		t.Fatalf("policies %v, want app/local and istio-system/mesh", got)
	}
	// Removing a selector policy updates the workload.
	s.got = nil
	ix.SetAuthorizationPolicy("app", "local", nil)
	ix.Flush()
	u := s.last(t)
	if ws := u[xds.AddressType]; len(ws) != 1 || len(ws[0].Upserted) != 1 {
		t.Fatalf("address updates %v", ws)
	}
	if as := u[xds.AuthorizationType]; len(as) != 1 || len(as[0].Removed) != 1 || as[0].Removed[0] != "app/local" {
		t.Fatalf("authorization updates %v", as)
	}
}

// Host-network pods share their node's address: they are not workloads of
// their own, only service endpoints (marked HOST_NETWORK, never HBONE).
func TestHostNetworkPods(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("kube-system", ns("kube-system", map[string]string{LabelDataplaneMode: DataplaneAmbient}))
	for _, name := range []string{"kube-proxy-x", "skiff-cni-y", "dns-z"} {
		p := pod("kube-system", name, "192.168.1.10", map[string]string{"app": name}, true)
		p.Spec.HostNetwork = true
		ix.SetPod(p.Namespace, p.Name, p)
	}
	ix.Flush()
	if u := s.last(t)[xds.AddressType]; len(u) != 0 {
		t.Fatalf("host-network pods published without a service: %v", u[0].Upserted)
	}
	if !ix.HasServiceAccountOnNode("n1", "kube-system", "default") {
		t.Fatal("host-network pods no longer count for the CA's node check")
	}

	// Selected by a service: published as its endpoint.
	dns := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "dns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "dns-z"}, ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{{Port: 53}}}}
	ix.SetService("kube-system", "dns", dns)
	ix.Flush()
	var w *workloadapi.Workload
	for _, r := range s.last(t)[xds.AddressType][0].Upserted {
		if r.Name == "Kubernetes//Pod/kube-system/dns-z" {
			w = decodeWorkload(t, r)
		} else if r.Name != "kube-system/dns.kube-system.svc.cluster.local" {
			t.Errorf("published %s", r.Name)
		}
	}
	if w == nil || w.NetworkMode != workloadapi.NetworkMode_HOST_NETWORK || w.TunnelProtocol != workloadapi.TunnelProtocol_NONE ||
		w.Services["kube-system/dns.kube-system.svc.cluster.local"] == nil {
		t.Fatalf("service endpoint on the host network: %v", w)
	}

	// No longer selected: withdrawn.
	ix.SetService("kube-system", "dns", nil)
	ix.Flush()
	u := s.last(t)[xds.AddressType][0]
	if len(u.Removed) != 2 || len(u.Upserted) != 0 {
		t.Fatalf("after the service went: %+v", u)
	}
}

// TestHBONEOnlyWhenRedirected: a pod is advertised as reached over HBONE
// only once the node agent annotated it ambient.istio.io/redirection=enabled
// (its traffic goes to ztunnel); before that, and after, it is published
// without HBONE so callers reach it directly.
func TestHBONEOnlyWhenRedirected(t *testing.T) {
	ambient := map[string]string{LabelDataplaneMode: DataplaneAmbient}
	for _, tc := range []struct {
		name       string
		nsLabels   map[string]string
		podLabels  map[string]string
		annotation *string // nil: none
		hostNet    bool
		want       workloadapi.TunnelProtocol
	}{
		{"ambient namespace, redirected", ambient, nil, ptr.To(RedirectionEnabled), false, workloadapi.TunnelProtocol_HBONE},
		{"ambient namespace, not redirected yet", ambient, nil, nil, false, workloadapi.TunnelProtocol_NONE},
		{"ambient namespace, redirection disabled", ambient, nil, ptr.To("disabled"), false, workloadapi.TunnelProtocol_NONE},
		{"ambient namespace, other value", ambient, nil, ptr.To("Enabled"), false, workloadapi.TunnelProtocol_NONE},
		{"pod label opts in, redirected", nil, ambient, ptr.To(RedirectionEnabled), false, workloadapi.TunnelProtocol_HBONE},
		{"pod label opts in, not redirected", nil, ambient, nil, false, workloadapi.TunnelProtocol_NONE},
		{"outside the mesh", nil, nil, nil, false, workloadapi.TunnelProtocol_NONE},
		{"still redirected after leaving the mesh", nil, nil, ptr.To(RedirectionEnabled), false, workloadapi.TunnelProtocol_HBONE},
		{"host network, annotated", ambient, map[string]string{"app": "x"}, ptr.To(RedirectionEnabled), true, workloadapi.TunnelProtocol_NONE},
		{"terminates HBONE itself", nil, map[string]string{LabelTunnel: "http"}, nil, false, workloadapi.TunnelProtocol_HBONE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sink{}
			ix := New(Options{}, s)
			ix.SetNamespace("app", ns("app", tc.nsLabels))
			// A service keeps host-network pods published (as endpoints).
			ix.SetService("app", "svc", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "svc"},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, ClusterIPs: []string{"10.96.0.1"}, Ports: []corev1.ServicePort{{Port: 80}}}})
			p := pod("app", "p", "10.0.0.1", tc.podLabels, true)
			if tc.annotation != nil {
				p.Annotations = map[string]string{AnnotationRedirection: *tc.annotation}
			}
			p.Spec.HostNetwork = tc.hostNet
			ix.SetPod("app", "p", p)
			ix.Flush()
			var w *workloadapi.Workload
			for _, r := range s.last(t)[xds.AddressType][0].Upserted {
				if r.Name == "Kubernetes//Pod/app/p" {
					w = decodeWorkload(t, r)
				}
			}
			if w == nil {
				t.Fatal("pod not published")
			}
			if w.TunnelProtocol != tc.want {
				t.Fatalf("tunnel protocol %v, want %v", w.TunnelProtocol, tc.want)
			}
		})
	}
}

// TestRedirectionAnnotationFollowed: the agent's annotation coming and
// going switches the published workload, each time as one update.
func TestRedirectionAnnotationFollowed(t *testing.T) {
	s := &sink{}
	ix := New(Options{}, s)
	ix.SetNamespace("app", ns("app", map[string]string{LabelDataplaneMode: DataplaneAmbient}))
	uid := "Kubernetes//Pod/app/p"
	for i, step := range []struct {
		name       string
		annotation map[string]string
		want       workloadapi.TunnelProtocol
	}{
		{"scheduled into an ambient namespace", nil, workloadapi.TunnelProtocol_NONE},
		{"agent installed the redirect", map[string]string{AnnotationRedirection: RedirectionEnabled, "other": "x"}, workloadapi.TunnelProtocol_HBONE},
		{"agent removed the redirect", map[string]string{"other": "x"}, workloadapi.TunnelProtocol_NONE},
	} {
		p := pod("app", "p", "10.0.0.1", nil, true)
		p.Annotations = step.annotation
		ix.SetPod("app", "p", p)
		if n := ix.Flush(); n != 1 {
			t.Fatalf("step %d (%s): %d changes, want 1", i, step.name, n)
		}
		u := s.last(t)[xds.AddressType][0]
		if len(u.Upserted) != 1 || u.Upserted[0].Name != uid {
			t.Fatalf("%s: %+v", step.name, u)
		}
		if got := decodeWorkload(t, u.Upserted[0]).TunnelProtocol; got != step.want {
			t.Fatalf("%s: tunnel protocol %v, want %v", step.name, got, step.want)
		}
	}
}

// TestTrimAnnotations: a pod cache that keeps only TrimAnnotations still
// gives the index what it decides HBONE by.
func TestTrimAnnotations(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"none", nil, nil},
		{"unrelated only", map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}, nil},
		{"redirection kept", map[string]string{AnnotationRedirection: RedirectionEnabled, "prometheus.io/scrape": "true"}, map[string]string{AnnotationRedirection: RedirectionEnabled}},
		{"any value kept", map[string]string{AnnotationRedirection: "disabled"}, map[string]string{AnnotationRedirection: "disabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := TrimAnnotations(tc.in)
			if len(got) != len(tc.want) || got[AnnotationRedirection] != tc.want[AnnotationRedirection] {
				t.Fatalf("TrimAnnotations(%v) = %v, want %v", tc.in, got, tc.want)
			}
			p := pod("app", "p", "10.0.0.1", nil, true)
			p.Annotations = tc.in
			full := podFrom(p)
			p.Annotations = got
			if trimmed := podFrom(p); trimmed.redirected != full.redirected {
				t.Fatalf("redirected %v after trimming, %v before", trimmed.redirected, full.redirected)
			}
		})
	}
}
