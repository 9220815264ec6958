package index

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
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
// other keeps every rule (broader); WaypointSupport agrees.
func FuzzTranslateL7Actions(f *testing.F) {
	f.Add(`{"action":"CUSTOM","rules":[{"from":[{"source":{"requestPrincipals":["*"]}}]},{}]}`)
	f.Add(`{"action":"AUDIT","rules":[{"to":[{"operation":{"ports":["x"]}}]}]}`)
	f.Add(`{"rules":[{"from":[{"source":{"ipBlocks":["nope"]}}]},{"when":[{"key":"request.headers[a]","values":["b"]}]}]}`)
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
			if _, unsupported := l7Group(r); !unsupported {
				checkable++
			}
		}
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
