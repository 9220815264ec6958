package index

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/meshstate/xdssource"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// The actions each enforcement point implements, and what the status says
// about the others. ztunnel follows Istio: AUDIT and CUSTOM are not sent
// to it; the waypoint audits AUDIT and denies what CUSTOM matches.
func TestActionSupport(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec string
		// ztunnel: translateL4 sends the policy; ztunnelOK and its message.
		ztunnelSends bool
		ztunnelOK    bool
		ztunnelSays  string
		// waypoint: WaypointSupport.
		waypointOK   bool
		waypointSays string
	}{
		{"allow", `{"rules":[{"from":[{"source":{"namespaces":["a"]}}]}]}`, true, true, "", true, ""},
		{"deny", `{"action":"DENY","rules":[{}]}`, true, true, "", true, ""},
		{"audit", `{"action":"AUDIT","rules":[{}]}`, false, false, "does not support the AUDIT action", true, ""},
		{"custom", `{"action":"CUSTOM","provider":{"name":"opa"},"rules":[{}]}`, false, false, "does not support the CUSTOM action", false, "enforced as DENY"},
		{"allow with JWT", `{"rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}`, true, false, "stricter", false, "stricter"},
		{"deny with JWT", `{"action":"DENY","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}`, true, false, "broader", false, "broader"},
		{"audit with JWT", `{"action":"AUDIT","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]}]}`, false, false, "AUDIT", false, "broader"},
		{"allow with HTTP paths", `{"rules":[{"to":[{"operation":{"paths":["/a"]}}]}]}`, true, false, "Use a waypoint", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
			if err := json.Unmarshal([]byte(tc.spec), &p.Spec); err != nil {
				t.Fatal(err)
			}
			if sent := translateL4(p, "istio-system") != nil; sent != tc.ztunnelSends {
				t.Errorf("ztunnel receives the policy: %v, want %v", sent, tc.ztunnelSends)
			}
			if ok, msg := ZtunnelSupport(p); ok != tc.ztunnelOK || !strings.Contains(msg, tc.ztunnelSays) {
				t.Errorf("ZtunnelSupport = %v %q, want %v and %q", ok, msg, tc.ztunnelOK, tc.ztunnelSays)
			}
			if ok, msg := WaypointSupport(p); ok != tc.waypointOK || !strings.Contains(msg, tc.waypointSays) {
				t.Errorf("WaypointSupport = %v %q, want %v and %q", ok, msg, tc.waypointOK, tc.waypointSays)
			}
		})
	}
}

// FuzzTranslateL7Actions checks the fail-closed shape of the waypoint's
// translation for any policy: only ALLOW (or no action) allows; AUDIT is
// marked; an ALLOW policy loses exactly the rules it cannot check, any
// other keeps every rule (broader); WaypointSupport agrees; and the
// waypoint can read every path and header condition sent.
func FuzzTranslateL7Actions(f *testing.F) {
	f.Add(`{"action":"CUSTOM","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]},{}]}`)
	f.Add(`{"action":"AUDIT","rules":[{"to":[{"operation":{"ports":["x"]}}]}]}`)
	f.Add(`{"rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]},{"when":[{"key":"request.headers[a]","values":["b"]}]}]}`)
	f.Add(`{"action":"DENY","rules":[{"to":[{"operation":{"paths":["/a/{*}x","/b"],"notPaths":["/{**}/c"]}}],"when":[{"key":"request.headers[x-a]"},{"key":"request.headers[:path]","values":["/"]},{"key":"source.ip"}]}]}`)
	f.Fuzz(func(t *testing.T, spec string) {
		p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "n"}}
		if json.Unmarshal([]byte(spec), &p.Spec) != nil {
			return
		}
		l7 := translateL7(p)
		allow := p.Spec.Action == "" || p.Spec.Action == securityv1.ActionAllow
		if allow != (l7.Action == securityapi.Action_ALLOW) {
			t.Fatalf("action %q translated to %v", p.Spec.Action, l7.Action)
		}
		if l7.Audit != (p.Spec.Action == securityv1.ActionAudit) {
			t.Fatalf("action %q: audit %v", p.Spec.Action, l7.Audit)
		}
		checkable := 0
		for _, r := range p.Spec.Rules {
			if _, problems := l7Group(r); len(problems) == 0 {
				checkable++
			}
		}
		checkWaypointReadable(t, l7)
		want := len(p.Spec.Rules)
		if allow {
			want = checkable
		}
		if len(l7.Groups) != want {
			t.Fatalf("%d groups, want %d", len(l7.Groups), want)
		}
		ok, msg := WaypointSupport(p)
		if ok != (checkable == len(p.Spec.Rules) && (allow || p.Spec.Action == securityv1.ActionDeny || p.Spec.Action == securityv1.ActionAudit)) || ok != (msg == "") {
			t.Fatalf("WaypointSupport = %v %q", ok, msg)
		}
		if _, err := proto.Marshal(l7); err != nil {
			t.Fatal(err)
		}
	})
}

// checkWaypointReadable checks that the waypoint reads every path and
// header condition of a translated policy as written: path templates parse
// where the waypoint reads them (exact values) and appear nowhere else,
// and header conditions pass pkg/policy's validation.
func checkWaypointReadable(t *testing.T, l7 *waypointapi.L7Authorization) {
	t.Helper()
	for _, g := range l7.Groups {
		for _, r := range g.Rules {
			for _, m := range r.Matches {
				for _, sm := range append(slices.Clone(m.Paths), m.NotPaths...) {
					if v := sm.GetExact(); v != "" && policy.IsPathTemplate(v) {
						if _, err := policy.ParsePathMatch(v); err != nil {
							t.Fatalf("path %q sent: %v", v, err)
						}
					}
					if policy.IsPathTemplate(sm.GetPrefix()) || policy.IsPathTemplate(sm.GetSuffix()) {
						t.Fatalf("path template in a prefix or suffix sent: %v", sm)
					}
				}
				for _, h := range m.Headers {
					name := h.Name
					if name == ":authority" {
						name = "host"
					}
					hm := policy.HeaderMatch{Name: name, Values: xdssource.ConvertStringMatches(h.Values), NotValues: xdssource.ConvertStringMatches(h.NotValues)}
					p := policy.Policy{Name: "p", Namespace: "n", Groups: []policy.Group{{Rules: []policy.Rules{{Matches: []policy.Match{{Headers: []policy.HeaderMatch{hm}}}}}}}}
					if err := p.Validate(); err != nil {
						t.Fatalf("header condition %v sent: %v", h, err)
					}
				}
			}
		}
	}
}

// Conditions the waypoint cannot evaluate: the status names each, an ALLOW
// policy loses the rule, and any other keeps the rule without them.
func TestTranslateL7Problems(t *testing.T) {
	for _, tc := range []struct {
		name, rule string
		says       string
		// check inspects the translated DENY rule.
		check func(g *waypointapi.L7Group) bool
	}{
		{"header condition without values", `{"to":[{"operation":{"methods":["GET"]}}],"when":[{"key":"request.headers[X-Team]"}]}`,
			"rules[0].when[0]: request.headers[X-Team]: no values and no notValues",
			func(g *waypointapi.L7Group) bool {
				return len(g.Rules) == 1 && g.Rules[0].Matches[0].Methods[0].GetExact() == "GET"
			}},
		{"header name not a token", `{"when":[{"key":"request.headers[x team]","values":["a"]}]}`,
			`rules[0].when[0]: request.headers[x team]: header name "x team" is not a token`,
			func(g *waypointapi.L7Group) bool { return len(g.Rules) == 0 }},
		{"pseudo-header", `{"when":[{"key":"request.headers[:path]","values":["/a"]}]}`,
			"pseudo-headers other than :authority cannot be checked",
			func(g *waypointapi.L7Group) bool { return len(g.Rules) == 0 }},
		{"condition without values", `{"when":[{"key":"source.ip"},{"key":"request.headers[x-a]","values":["1"]}]}`,
			"rules[0].when[0]: source.ip has no values and no notValues",
			func(g *waypointapi.L7Group) bool {
				return len(g.Rules) == 1 && g.Rules[0].Matches[0].Headers[0].Name == "x-a"
			}},
		{"invalid path template", `{"to":[{"operation":{"paths":["/a","/b/{*}x"],"methods":["POST"]}}]}`,
			`rules[0].to[0].operation.paths[1]: path template "/b/{*}x"`,
			func(g *waypointapi.L7Group) bool {
				m := g.Rules[0].Matches[0]
				return len(m.Paths) == 0 && m.Methods[0].GetExact() == "POST" // the whole list, not just the value
			}},
		{"template in a prefix", `{"to":[{"operation":{"notPaths":["/{*}/admin*"]}}]}`,
			"rules[0].to[0].operation.notPaths[0]: path template",
			func(g *waypointapi.L7Group) bool { return len(g.Rules[0].Matches[0].NotPaths) == 0 }},
		{"bad port", `{"to":[{"operation":{"ports":["http"]}}]}`, `rules[0].to[0].operation.ports: "http" is not a port number`,
			func(g *waypointapi.L7Group) bool { return len(g.Rules[0].Matches[0].L4.DestinationPorts) == 0 }},
		{"JWT", `{"from":[{"source":{"requestPrincipals":["*"],"namespaces":["a"]}}]}`, "rules[0].from[0].source.requestPrincipals: JWT principals cannot be checked",
			func(g *waypointapi.L7Group) bool { return g.Rules[0].Matches[0].L4.Namespaces[0].GetExact() == "a" }},
		{"valid template", `{"to":[{"operation":{"paths":["/a/{*}/b"]}}]}`, "",
			func(g *waypointapi.L7Group) bool { return g.Rules[0].Matches[0].Paths[0].GetExact() == "/a/{*}/b" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, action := range []string{"ALLOW", "DENY"} {
				p := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}}
				if err := json.Unmarshal([]byte(`{"targetRefs":[{"kind":"Service","name":"web"}],"action":"`+action+`","rules":[`+tc.rule+`]}`), &p.Spec); err != nil {
					t.Fatal(err)
				}
				l7 := translateL7(p)
				checkWaypointReadable(t, l7)
				ok, msg := WaypointSupport(p)
				if ok != (tc.says == "") || !strings.Contains(msg, tc.says) {
					t.Fatalf("%s: WaypointSupport = %v %q, want it to say %q", action, ok, msg, tc.says)
				}
				switch {
				case action == "ALLOW" && tc.says != "":
					if len(l7.Groups) != 0 || !strings.Contains(msg, "stricter") {
						t.Fatalf("ALLOW: groups %v, message %q; want the rule dropped", l7.Groups, msg)
					}
				case action == "DENY" && tc.says != "" && !strings.Contains(msg, "broader"):
					t.Fatalf("DENY: message %q does not say it is broader", msg)
				case action == "DENY" || tc.says == "":
					if len(l7.Groups) != 1 || !tc.check(l7.Groups[0]) {
						t.Fatalf("%s: groups %v", action, l7.Groups)
					}
				}
			}
		})
	}
}
