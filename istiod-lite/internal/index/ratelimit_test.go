package index

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// rateLimitMesh is an index with waypoint shop/wp serving Services
// shop/web and shop/api, HTTPRoute shop/r attached to web with rules "a",
// "b" and one without a name, and HTTPRoute shop/loose attached to no
// Service. Its trust domain is example.org.
func rateLimitMesh(td string) *Index {
	ix := New(Options{TrustDomain: td}, &sink{})
	ix.SetNamespace("shop", ns("shop", nil))
	ix.SetGateway("shop", "wp", &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}, Spec: gatewayv1.GatewaySpec{GatewayClassName: WaypointClass}})
	for _, name := range []string{"web", "api"} {
		ix.SetService("shop", name, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{LabelUseWaypoint: "wp"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	}
	backend := []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To[gatewayv1.PortNumber](80)}}}}
	ix.SetHTTPRoute("shop", "r", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "r"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "web"}}},
		Rules: []gatewayv1.HTTPRouteRule{
			{Name: ptr.To[gatewayv1.SectionName]("a"), BackendRefs: backend},
			{Name: ptr.To[gatewayv1.SectionName]("b"), BackendRefs: backend},
			{BackendRefs: backend},
		},
	}})
	ix.SetHTTPRoute("shop", "loose", &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "loose"}, Spec: gatewayv1.HTTPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "nosuch"}}},
		Rules:           []gatewayv1.HTTPRouteRule{{Name: ptr.To[gatewayv1.SectionName]("a"), BackendRefs: backend}},
	}})
	return ix
}

// serviceLimits returns the rate limits of each Service of shop/wp.
func serviceLimits(ix *Index) map[string][]*waypointapi.RateLimit {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	out := map[string][]*waypointapi.RateLimit{}
	for _, s := range ix.buildWaypoint(ix.gateways["shop/wp"]).Services {
		if len(s.RateLimits) > 0 {
			out[s.Name] = s.RateLimits
		}
	}
	return out
}

// rlp makes a RateLimitPolicy from the JSON of its spec.
func rlp(t testing.TB, namespace, name, spec string) *policyv1alpha1.RateLimitPolicy {
	t.Helper()
	p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := json.Unmarshal([]byte(spec), &p.Spec); err != nil {
		t.Fatalf("spec %s: %v", spec, err)
	}
	return p
}

func TestRateLimitTranslation(t *testing.T) {
	const (
		web     = `{"group":"","kind":"Service","name":"web"}`
		route   = `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}`
		ruleA   = `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"}`
		ruleB   = `{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"b"}`
		perSec  = `"limit":{"requests":10,"unit":"Second"}`
		onWeb   = `"targetRefs":[` + web + `]`
		onRoute = `"targetRefs":[` + route + `]`
	)
	// limit is the translation of perSec for policy shop/p: a bucket of 10
	// refilled with 10 a second, shared by all clients, in each replica.
	limit := func(route, rule string) *waypointapi.RateLimit {
		return &waypointapi.RateLimit{Policy: "shop/p", Route: route, Rule: rule, Requests: 10, FillIntervalMs: 1000, Burst: 10, Key: &waypointapi.RateLimitKey{}}
	}
	with := func(rl *waypointapi.RateLimit, edit func(*waypointapi.RateLimit)) *waypointapi.RateLimit {
		edit(rl)
		return rl
	}
	for _, tc := range []struct {
		name      string
		namespace string // of the policy; shop when empty
		spec      string
		want      map[string][]*waypointapi.RateLimit // by service
	}{
		{"service, defaults", "", `{` + onWeb + `,` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
		{"whole route", "", `{` + onRoute + `,` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("shop/r", "")}}},
		{"one rule", "", `{"targetRefs":[` + ruleA + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("shop/r", "a")}}},
		{"two rules", "", `{"targetRefs":[` + ruleB + `,` + ruleA + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("shop/r", "b"), limit("shop/r", "a")}}},
		{"a rule of a route also targeted whole is left out", "", `{"targetRefs":[` + ruleA + `,` + route + `,` + ruleB + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("shop/r", "")}}},
		{"service and route", "", `{"targetRefs":[` + route + `,` + web + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("shop/r", ""), limit("", "")}}},
		{"a repeated target counts once", "", `{"targetRefs":[` + web + `,` + web + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
		{"unknown rule name; the valid target is kept", "", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"zzz"},` + web + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
		{"missing route", "", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"gone"}],` + perSec + `}`, nil},
		{"route attached to no Service of the waypoint", "", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"loose","sectionName":"a"}],` + perSec + `}`, nil},
		{"missing service", "", `{"targetRefs":[{"group":"","kind":"Service","name":"gone"}],` + perSec + `}`, nil},
		{"unsupported kind; the valid target is kept", "", `{"targetRefs":[{"group":"apps","kind":"Deployment","name":"web"},` + web + `],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
		{"GRPCRoute", "", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"GRPCRoute","name":"r"}],` + perSec + `}`, nil},
		{"Service in group core", "", `{"targetRefs":[{"group":"core","kind":"Service","name":"web"}],` + perSec + `}`, nil},
		{"Service with sectionName, which admission refuses", "", `{"targetRefs":[{"group":"","kind":"Service","name":"web","sectionName":"http"}],` + perSec + `}`, nil},
		{"a policy limits only its own namespace", "other", `{` + onWeb + `,` + perSec + `}`, nil},
		{"the other service", "", `{"targetRefs":[{"group":"","kind":"Service","name":"api"}],` + perSec + `}`,
			map[string][]*waypointapi.RateLimit{"api": {limit("", "")}}},
		{"burst, unit and header key", "", `{` + onWeb + `,"limit":{"requests":100,"unit":"Hour","burst":7},"key":{"type":"Header","header":"X-User"}}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) {
				rl.Requests, rl.FillIntervalMs, rl.Burst = 100, 3_600_000, 7
				rl.Key = &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_HEADER, Header: "x-user"}
			})}}},
		{"per minute, per identity", "", `{` + onWeb + `,"limit":{"requests":60,"unit":"Minute"},"key":{"type":"SourceIdentity"}}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) {
				rl.Requests, rl.FillIntervalMs, rl.Burst = 60, 60_000, 60
				rl.Key.Type = waypointapi.RateLimitKey_SOURCE_IDENTITY
			})}}},
		{"per source IP", "", `{` + onWeb + `,` + perSec + `,"key":{"type":"SourceIP"}}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) { rl.Key.Type = waypointapi.RateLimitKey_SOURCE_IP })}}},
		{"overrides of both forms", "", `{` + onWeb + `,` + perSec + `,"overrides":[` +
			`{"limit":{"requests":1000,"unit":"Minute","burst":50},"principals":["cluster.local/ns/batch/sa/reporter","spiffe://example.org/ns/a/sa/b.c"],"serviceAccounts":[{"name":"crawler"},{"name":"indexer","namespace":"search"}]},` +
			`{"limit":{"requests":1,"unit":"Hour"},"serviceAccounts":[{"name":"guest"}]}]}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) {
				rl.Overrides = []*waypointapi.RateLimitOverride{
					{Requests: 1000, FillIntervalMs: 60_000, Burst: 50, Principals: []string{
						"spiffe://cluster.local/ns/batch/sa/reporter", "spiffe://example.org/ns/a/sa/b.c",
						"spiffe://example.org/ns/shop/sa/crawler", "spiffe://example.org/ns/search/sa/indexer"}},
					{Requests: 1, FillIntervalMs: 3_600_000, Burst: 1, Principals: []string{"spiffe://example.org/ns/shop/sa/guest"}},
				}
			})}}},
		{"global, allow on failure by default", "", `{` + onRoute + `,` + perSec + `,"mode":"Global"}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("shop/r", ""), func(rl *waypointapi.RateLimit) { rl.Mode = waypointapi.RateLimit_GLOBAL })}}},
		{"global, deny on failure", "", `{` + onRoute + `,` + perSec + `,"mode":"Global","failureMode":"Deny"}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("shop/r", ""), func(rl *waypointapi.RateLimit) {
				rl.Mode, rl.FailureMode = waypointapi.RateLimit_GLOBAL, waypointapi.RateLimit_DENY
			})}}},
		{"local, explicitly", "", `{` + onWeb + `,` + perSec + `,"mode":"Local"}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
		{"values admission refuses are read the strict way", "", `{` + onWeb + `,"limit":{"requests":0,"unit":"Fortnight","burst":0},"key":{"type":"Header","header":"bad header"},` +
			`"mode":"Local","failureMode":"Deny","overrides":[{"limit":{"requests":5,"unit":"Second"},"principals":["nope","cluster.local/ns/a/sa/*"],"serviceAccounts":[{"name":"a/b"}]},` +
			`{"limit":{"requests":5,"unit":"Second"},"principals":["cluster.local/ns/a/sa/b","cluster.local/other/path"]}]}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) {
				rl.Requests, rl.Burst = 1, 1
				rl.Overrides = []*waypointapi.RateLimitOverride{{Requests: 5, FillIntervalMs: 1000, Burst: 5, Principals: []string{"spiffe://cluster.local/ns/a/sa/b"}}}
			})}}},
		{"an unknown failure mode of a global limit denies", "", `{` + onWeb + `,` + perSec + `,"mode":"Global","failureMode":"Maybe"}`,
			map[string][]*waypointapi.RateLimit{"web": {with(limit("", ""), func(rl *waypointapi.RateLimit) {
				rl.Mode, rl.FailureMode = waypointapi.RateLimit_GLOBAL, waypointapi.RateLimit_DENY
			})}}},
		{"an unknown mode is local", "", `{` + onWeb + `,` + perSec + `,"mode":"Cluster"}`,
			map[string][]*waypointapi.RateLimit{"web": {limit("", "")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := rateLimitMesh("example.org")
			ns := tc.namespace
			if ns == "" {
				ns = "shop"
			}
			ix.SetRateLimitPolicy(ns, "p", rlp(t, ns, "p", tc.spec))
			if got := serviceLimits(ix); !limitsEqual(got, tc.want) {
				t.Fatalf("rate limits:\n%s\nwant:\n%s", showLimits(got), showLimits(tc.want))
			}
		})
	}
}

func limitsEqual(a, b map[string][]*waypointapi.RateLimit) bool {
	if len(a) != len(b) {
		return false
	}
	for svc, as := range a {
		if !slices.EqualFunc(as, b[svc], func(x, y *waypointapi.RateLimit) bool { return proto.Equal(x, y) }) {
			return false
		}
	}
	return true
}

func showLimits(m map[string][]*waypointapi.RateLimit) string {
	var b strings.Builder
	for _, svc := range slices.Sorted(maps.Keys(m)) {
		for _, rl := range m[svc] {
			fmt.Fprintf(&b, "  %s: %s\n", svc, prototext.MarshalOptions{}.Format(rl))
		}
	}
	return b.String()
}

// Policies are sent in namespace/name order, each in the order of its
// targets, so that a waypoint's resource does not change with map order.
func TestRateLimitOrder(t *testing.T) {
	ix := rateLimitMesh("cluster.local")
	for _, name := range []string{"c", "a", "b"} {
		ix.SetRateLimitPolicy("shop", name, rlp(t, "shop", name, `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"b"},{"group":"","kind":"Service","name":"web"}],"limit":{"requests":1,"unit":"Second"}}`))
	}
	var got []string
	for _, rl := range serviceLimits(ix)["web"] {
		got = append(got, rl.Policy+" "+rl.Route+" "+rl.Rule)
	}
	want := []string{"shop/a shop/r b", "shop/a  ", "shop/b shop/r b", "shop/b  ", "shop/c shop/r b", "shop/c  "}
	if !slices.Equal(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
}

// A rule renamed away stops being limited; renamed back, it is again.
func TestRateLimitFollowsRuleNames(t *testing.T) {
	ix := rateLimitMesh("cluster.local")
	ix.SetRateLimitPolicy("shop", "p", rlp(t, "shop", "p", `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"}],"limit":{"requests":1,"unit":"Second"}}`))
	if n := len(serviceLimits(ix)["web"]); n != 1 {
		t.Fatalf("%d limits, want 1", n)
	}
	ix.mu.Lock()
	r := ix.httpRoutes["shop/r"].DeepCopy()
	ix.mu.Unlock()
	r.Spec.Rules[0].Name = ptr.To[gatewayv1.SectionName]("renamed")
	ix.SetHTTPRoute("shop", "r", r)
	if n := len(serviceLimits(ix)["web"]); n != 0 {
		t.Fatalf("%d limits after the rule was renamed, want 0", n)
	}
}

func TestRateLimitTargetSupported(t *testing.T) {
	ref := func(group, kind, section string) gatewayv1.LocalPolicyTargetReferenceWithSectionName {
		r := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Group: gatewayv1.Group(group), Kind: gatewayv1.Kind(kind), Name: "x"}}
		if section != "" {
			r.SectionName = ptr.To(gatewayv1.SectionName(section))
		}
		return r
	}
	for _, tc := range []struct {
		ref         gatewayv1.LocalPolicyTargetReferenceWithSectionName
		ok          bool
		wantMessage string
	}{
		{ref(gatewayv1.GroupName, "HTTPRoute", ""), true, ""},
		{ref(gatewayv1.GroupName, "HTTPRoute", "a"), true, ""},
		{ref("", "Service", ""), true, ""},
		{ref("", "Service", "http"), false, `sectionName "http" is not supported on a Service target`},
		{ref("", "HTTPRoute", ""), false, `target kind HTTPRoute in group "" is not supported`},
		{ref(gatewayv1.GroupName, "GRPCRoute", ""), false, "target kind GRPCRoute in group \"gateway.networking.k8s.io\" is not supported"},
		{ref(gatewayv1.GroupName, "Gateway", ""), false, "is not supported: target an HTTPRoute"},
		{ref("apps", "Deployment", ""), false, "target kind Deployment"},
	} {
		ok, msg := RateLimitTargetSupported(tc.ref)
		if ok != tc.ok || !strings.Contains(msg, tc.wantMessage) || (ok && msg != "") {
			t.Errorf("%+v: %v %q, want %v and a message with %q", tc.ref, ok, msg, tc.ok, tc.wantMessage)
		}
	}
}

func TestHasRule(t *testing.T) {
	r := &gatewayv1.HTTPRoute{Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{{Name: ptr.To[gatewayv1.SectionName]("a")}, {}}}}
	for name, want := range map[string]bool{"": true, "a": true, "b": false, "A": false} {
		if got := HasRule(r, name); got != want {
			t.Errorf("HasRule(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRateLimitProblems(t *testing.T) {
	const head = `"targetRefs":[{"group":"","kind":"Service","name":"web"}]`
	for _, tc := range []struct {
		name, spec string
		want       []string // each a part of one problem, in order
	}{
		{"valid", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"mode":"Global","failureMode":"Deny","key":{"type":"Header","header":"x-user"},` +
			`"overrides":[{"limit":{"requests":2,"unit":"Minute"},"principals":["td/ns/a/sa/b"],"serviceAccounts":[{"name":"c"}]}]}`, nil},
		{"limit", `{` + head + `,"limit":{"requests":0,"unit":"Week","burst":0}}`,
			[]string{"limit.requests: must be at least 1; 1 is used", `limit.unit: unknown unit "Week"; Second is used`, "limit.burst: must be at least 1"}},
		{"key", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"key":{"type":"Header"}}`,
			[]string{"key.header: invalid header name"}},
		{"key type", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"key":{"type":"Cookie"}}`,
			[]string{`key.type: unknown type "Cookie"; all clients share one bucket`}},
		{"override clients", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"overrides":[{"limit":{"requests":1,"unit":"Second"},"principals":["*"],"serviceAccounts":[{"name":"a","namespace":".."}]},{"limit":{"requests":1,"unit":"Second"}}]}`,
			[]string{`overrides[0].principals[0]: principal "*"`, "overrides[0].serviceAccounts[0]:", "overrides[0]: lists no client the waypoint can identify; the override is left out", "overrides[1]: lists no client"}},
		{"failureMode of a local limit", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"failureMode":"Allow"}`,
			[]string{"failureMode: applies only to mode Global; ignored"}},
		{"mode", `{` + head + `,"limit":{"requests":1,"unit":"Second"},"mode":"Everywhere"}`,
			[]string{`mode: unknown mode "Everywhere"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RateLimitProblems(rlp(t, "shop", "p", tc.spec))
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d: %q, want one with %q", i, got[i], w)
				}
			}
		})
	}
}

// Principals are read as Istio writes them, or as SPIFFE IDs; only a
// workload identity names a client.
func TestPrincipalID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b"},
		{"spiffe://example.org/ns/a/sa/b", "spiffe://example.org/ns/a/sa/b"},
		{"", ""},
		{"spiffe://", ""},
		{"spiffe://spiffe://td/ns/a/sa/b", ""},
		{"td/ns/a", ""},
		{"td/ns/a/sa/b/c", ""},
		{"td/ns/a/sa/*", ""},
		{"TD/ns/a/sa/b", ""},
		{"td//ns/a/sa/b", ""},
		{"td/ns/../sa/b", ""},
		{"https://td/ns/a/sa/b", ""},
	} {
		id, err := principalID(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("principalID(%q) = %v, want an error", tc.in, id)
		case tc.want != "" && (err != nil || id.String() != tc.want):
			t.Errorf("principalID(%q) = %v, %v; want %s", tc.in, id, err, tc.want)
		}
	}
}

// FuzzRateLimitTranslation feeds arbitrary policy specs (JSON) and trust
// domains through the index. Whatever the fields, translation never
// panics, every limit it emits is one the waypoint can run (at least one
// request and one token per known interval), every override names
// clients by SPIFFE IDs that parse as workload identities, a rule is only
// named within a route that has it, and a policy RateLimitProblems finds
// nothing wrong with loses nothing on the way.
func FuzzRateLimitTranslation(f *testing.F) {
	for _, seed := range []struct{ spec, td string }{
		{`{"targetRefs":[{"group":"","kind":"Service","name":"web"}],"limit":{"requests":10,"unit":"Second"}}`, "cluster.local"},
		{`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"a"},{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r"}],"limit":{"requests":1,"unit":"Hour","burst":3},"key":{"type":"SourceIdentity"}}`, "example.org"},
		{`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"HTTPRoute","name":"r","sectionName":"b"}],"limit":{"requests":5,"unit":"Minute"},"mode":"Global","failureMode":"Deny","key":{"type":"Header","header":"X-User"}}`, "td"},
		{`{"targetRefs":[{"group":"","kind":"Service","name":"web"}],"limit":{"requests":2,"unit":"Second"},"overrides":[{"limit":{"requests":9,"unit":"Second","burst":1},"principals":["cluster.local/ns/a/sa/b","spiffe://td/ns/c/sa/d"],"serviceAccounts":[{"name":"e"},{"name":"f","namespace":"g"}]}]}`, "cluster.local"},
		{`{"targetRefs":[{"group":"","kind":"Service","name":"web","sectionName":"x"},{"group":"apps","kind":"Deployment","name":"web"}],"limit":{"requests":0,"unit":"","burst":0},"mode":"?","failureMode":"?","key":{"type":"Header","header":""},"overrides":[{"limit":{"requests":0,"unit":"x"},"principals":["*"],"serviceAccounts":[{"name":""}]}]}`, "Not A Trust Domain"},
		{`{}`, ""},
	} {
		f.Add(seed.spec, seed.td)
	}
	f.Fuzz(func(t *testing.T, spec, td string) {
		p := &policyv1alpha1.RateLimitPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "p"}}
		if err := json.Unmarshal([]byte(spec), &p.Spec); err != nil {
			t.Skip()
		}
		ix := rateLimitMesh(td)
		ix.SetRateLimitPolicy("shop", "p", p)
		limits := serviceLimits(ix)
		problems := RateLimitProblems(p)
		_, tdErr := spiffeid.TrustDomainFromString(ix.opts.TrustDomain)
		for svc, rls := range limits {
			for _, rl := range rls {
				checkLimit(t, "limit", rl.Requests, rl.FillIntervalMs, rl.Burst)
				if rl.Policy != "shop/p" {
					t.Fatalf("policy %q", rl.Policy)
				}
				switch {
				case rl.Rule != "" && rl.Route == "":
					t.Fatalf("rule %q without a route", rl.Rule)
				case rl.Route != "" && (svc != "web" || rl.Route != "shop/r"):
					t.Fatalf("service %s limited through route %q, which is not attached to it", svc, rl.Route)
				case rl.Rule != "" && !HasRule(ix.httpRoutes["shop/r"], rl.Rule):
					t.Fatalf("rule %q is not a rule of the route", rl.Rule)
				}
				if rl.FailureMode != waypointapi.RateLimit_ALLOW && rl.Mode != waypointapi.RateLimit_GLOBAL {
					t.Fatalf("failure mode %v on a %v limit", rl.FailureMode, rl.Mode)
				}
				if rl.Key.GetType() == waypointapi.RateLimitKey_HEADER {
					if err := waypointapi.CheckHeaderName(rl.Key.Header); err != nil || rl.Key.Header != strings.ToLower(rl.Key.Header) {
						t.Fatalf("key header %q: %v", rl.Key.Header, err)
					}
				}
				for _, o := range rl.Overrides {
					checkLimit(t, "override", o.Requests, o.FillIntervalMs, o.Burst)
					if len(o.Principals) == 0 {
						t.Fatal("an override without clients")
					}
					for _, v := range o.Principals {
						id, err := spiffeid.FromString(v)
						if err != nil {
							t.Fatalf("principal %q: %v", v, err)
						}
						if _, _, err := identity.ParseWorkloadID(id); err != nil {
							t.Fatalf("principal %q: %v", v, err)
						}
					}
				}
				if len(problems) == 0 && tdErr == nil {
					if len(rl.Overrides) != len(p.Spec.Overrides) {
						t.Fatalf("no problem reported, yet %d of %d overrides kept", len(rl.Overrides), len(p.Spec.Overrides))
					}
					for i, o := range rl.Overrides {
						if n := len(p.Spec.Overrides[i].Principals) + len(p.Spec.Overrides[i].ServiceAccounts); len(o.Principals) != n {
							t.Fatalf("no problem reported, yet override %d keeps %d of %d clients", i, len(o.Principals), n)
						}
					}
				}
			}
		}
	})
}

func checkLimit(t *testing.T, what string, requests, intervalMs, burst uint32) {
	t.Helper()
	if requests < 1 || burst < 1 {
		t.Fatalf("%s: %d requests, burst %d", what, requests, burst)
	}
	switch intervalMs {
	case fillSecondMs, fillMinuteMs, fillHourMs:
	default:
		t.Fatalf("%s: fill interval %d ms", what, intervalMs)
	}
}
