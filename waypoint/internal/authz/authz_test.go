package authz

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

func TestCompile(t *testing.T) {
	sleep := "cluster.local/ns/default/sa/sleep"
	one := func(a policy.Action, ms ...policy.Match) *policy.Policy {
		return &policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector, Action: a,
			Groups: []policy.Group{{Rules: []policy.Rules{{Matches: ms}}}}}
	}
	tests := []struct {
		name string
		in   *waypointapi.L7Authorization
		want *policy.Policy
	}{
		{"ALLOW without groups", &waypointapi.L7Authorization{Name: "p", Namespace: "default"},
			&policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector}},
		{"DENY with an empty group", &waypointapi.L7Authorization{Name: "p", Namespace: "default",
			Action: securityapi.Action_DENY, Groups: []*waypointapi.L7Group{{}}},
			&policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector, Action: policy.Deny,
				Groups: []policy.Group{{}}}},
		{"audit overrides the action", &waypointapi.L7Authorization{Name: "p", Namespace: "default",
			Action: securityapi.Action_DENY, Audit: true},
			&policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector, Action: policy.Audit}},
		{"audit with an unknown action", &waypointapi.L7Authorization{Name: "p", Namespace: "default",
			Action: 7, Audit: true},
			&policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector, Action: policy.Audit}},
		{"L4 reuses the ztunnel conversion", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{L4: &securityapi.Match{
			Principals: isms(sleep), NotNamespaces: isms("prod*"),
			SourceIps:        []*securityapi.Address{{Address: []byte{10, 0, 0, 0}, Length: 8}},
			DestinationPorts: []uint32{8080},
		}}), one(policy.Allow, policy.Match{
			Principals: psm(sleep), NotNamespaces: psm("prod*"),
			SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, DestinationPorts: []uint32{8080},
		})},
		{"L7 fields", l7("p", securityapi.Action_DENY, &waypointapi.L7Match{
			Paths: isms("/admin", "/admin/*", "*.php", "*"), NotPaths: isms("/admin/public"),
			Methods: isms("GET"), NotMethods: isms("DELETE"),
			Hosts: isms("*.example.com"), NotHosts: isms("example.com:*"),
			Headers: []*waypointapi.HeaderCondition{
				{Name: "x-user", Values: isms("admin"), NotValues: isms("*")},
				{Name: "X-Env", NotValues: isms("prod")},
			},
		}), one(policy.Deny, policy.Match{
			Paths: psm("/admin", "/admin/*", "*.php", "*"), NotPaths: psm("/admin/public"),
			Methods: psm("GET"), NotMethods: psm("DELETE"),
			Hosts: psm("*.example.com"), NotHosts: psm("example.com:*"),
			Headers: []policy.HeaderMatch{
				{Name: "x-user", Values: psm("admin"), NotValues: psm("*")},
				{Name: "x-env", NotValues: psm("prod")},
			},
		})},
		{"L4 and L7 together", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			L4: &securityapi.Match{DestinationPorts: []uint32{80}}, Paths: isms("/x"),
		}), one(policy.Allow, policy.Match{DestinationPorts: []uint32{80}, Paths: psm("/x")})},
		{"empty L4 is no condition", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			L4: &securityapi.Match{}, Methods: isms("GET"),
		}), one(policy.Allow, policy.Match{Methods: psm("GET")})},
		{"empty match stays empty", l7("p", securityapi.Action_DENY, &waypointapi.L7Match{}), one(policy.Deny, policy.Match{})},
		{"path templates", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			Paths: isms("/api/{*}/items", "/files/{**}"), NotPaths: isms("/{**}/secret"),
		}), one(policy.Allow, policy.Match{
			Paths: []policy.StringMatch{
				{Kind: policy.Template, Value: "/api/{*}/items"}, {Kind: policy.Template, Value: "/files/{**}"}},
			NotPaths: []policy.StringMatch{{Kind: policy.Template, Value: "/{**}/secret"}},
		})},
		{"braces without an operator are exact", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			Paths: isms("/a/{id}"),
		}), one(policy.Allow, policy.Match{Paths: psm("/a/{id}")})},
		{"invalid template leaves its list unchecked", l7("p", securityapi.Action_DENY, &waypointapi.L7Match{
			Paths: isms("/ok", "/{**}/x/{*}"), NotPaths: isms("/public"), Methods: isms("GET"),
		}), one(policy.Deny, policy.Match{Unsupported: true, NotPaths: psm("/public"), Methods: psm("GET")})},
		{"template in a prefix is invalid", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			NotPaths: isms("/a/{*}*"), Paths: isms("/a/*"),
		}), one(policy.Allow, policy.Match{Unsupported: true, Paths: psm("/a/*")})},
		{"template in a suffix is invalid", l7("p", securityapi.Action_ALLOW, &waypointapi.L7Match{
			Paths: isms("*/{**}"),
		}), one(policy.Allow, policy.Match{Unsupported: true})},
		{":authority is host", l7("p", securityapi.Action_DENY, &waypointapi.L7Match{
			Headers: []*waypointapi.HeaderCondition{{Name: ":authority", Values: isms("a.example.com*")}},
		}), one(policy.Deny, policy.Match{Headers: []policy.HeaderMatch{{Name: "host", Values: psm("a.example.com*")}}})},
		{"other pseudo-headers are unchecked", l7("p", securityapi.Action_DENY, &waypointapi.L7Match{
			Methods: isms("POST"),
			Headers: []*waypointapi.HeaderCondition{{Name: ":path", Values: isms("/admin")}, {Name: "x", Values: isms("1")}},
		}), one(policy.Deny, policy.Match{Unsupported: true, Methods: psm("POST"),
			Headers: []policy.HeaderMatch{{Name: "x", Values: psm("1")}}})},
		{"groups, rules and matches", &waypointapi.L7Authorization{Name: "p", Namespace: "default", Groups: []*waypointapi.L7Group{
			{Rules: []*waypointapi.L7Rules{
				{Matches: []*waypointapi.L7Match{{Methods: isms("GET")}, {Methods: isms("HEAD")}}},
				{Matches: []*waypointapi.L7Match{{Paths: isms("/a")}}},
			}},
			{Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{{L4: &securityapi.Match{Principals: isms(sleep)}}}}}},
		}}, &policy.Policy{Name: "p", Namespace: "default", Scope: policy.WorkloadSelector, Groups: []policy.Group{
			{Rules: []policy.Rules{
				{Matches: []policy.Match{{Methods: psm("GET")}, {Methods: psm("HEAD")}}},
				{Matches: []policy.Match{{Paths: psm("/a")}}},
			}},
			{Rules: []policy.Rules{{Matches: []policy.Match{{Principals: psm(sleep)}}}}},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Compile(tt.in)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Compile =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	match := func(m *waypointapi.L7Match) *waypointapi.L7Authorization { return l7("p", securityapi.Action_ALLOW, m) }
	tests := []struct {
		name string
		in   *waypointapi.L7Authorization
		want string
	}{
		{"nil", nil, "authz: nil policy"},
		{"unknown action", &waypointapi.L7Authorization{Name: "p", Namespace: "default", Action: 2},
			`authz: policy "default/p": unknown action 2`},
		{"empty name", &waypointapi.L7Authorization{Namespace: "default"}, "empty name"},
		{"empty namespace", &waypointapi.L7Authorization{Name: "p"}, "empty namespace"},
		{"nil group", &waypointapi.L7Authorization{Name: "p", Namespace: "default", Groups: []*waypointapi.L7Group{nil}},
			`policy "default/p": groups[0]: nil`},
		{"nil rules", &waypointapi.L7Authorization{Name: "p", Namespace: "default",
			Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{}, nil}}}},
			"groups[0].rules[1]: nil"},
		{"rules without matches", &waypointapi.L7Authorization{Name: "p", Namespace: "default",
			Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{}}}}},
			"groups[0].rules[0]: no matches"},
		{"nil match", match(nil), "groups[0].rules[0].matches[0]: nil"},
		{"nil header", match(&waypointapi.L7Match{Headers: []*waypointapi.HeaderCondition{nil}}),
			"groups[0].rules[0].matches[0].headers[0]: nil"},
		{"bad address", match(&waypointapi.L7Match{L4: &securityapi.Match{SourceIps: []*securityapi.Address{{Address: []byte{1, 2, 3}}}}}),
			"groups[0].rules[0].matches[0].l4: address of 3 bytes"},
		{"empty header name", match(&waypointapi.L7Match{Headers: []*waypointapi.HeaderCondition{{Values: isms("x")}}}),
			"headers[0]: empty header name"},
		{"header name not a token", match(&waypointapi.L7Match{Headers: []*waypointapi.HeaderCondition{{Name: "x y", Values: isms("x")}}}),
			`header name "x y": invalid character ' '`},
		{"header without values", match(&waypointapi.L7Match{Headers: []*waypointapi.HeaderCondition{{Name: "x"}}}),
			"no values and no not_values"},
		{"string match without kind", match(&waypointapi.L7Match{Methods: []*securityapi.StringMatch{{}}}),
			"methods[0]: unknown string match kind 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.in)
			if err == nil {
				t.Fatalf("Compile = %+v, want error containing %q", p, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "authz: ") {
				t.Fatalf("Compile error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	wp := mustCompile(t,
		l7("deny-admin", securityapi.Action_DENY, &waypointapi.L7Match{Paths: isms("/admin", "/admin/*")}),
		&waypointapi.L7Authorization{Name: "audit-writes", Namespace: "default", Audit: true, Groups: []*waypointapi.L7Group{
			{Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{{NotMethods: isms("GET", "HEAD")}}}}}}},
	)
	svc := mustCompile(t,
		l7("allow-sleep-get", securityapi.Action_ALLOW, &waypointapi.L7Match{
			L4: &securityapi.Match{Principals: isms("cluster.local/ns/default/sa/sleep")}, Methods: isms("GET", "POST")}),
		l7("audit-api", securityapi.Action_ALLOW, &waypointapi.L7Match{Paths: isms("/api/*")}),
	)
	svc[1].Action = policy.Audit
	allowOnly := svc[:1]
	denyOnly := wp[:1]

	other := request("PUT", "/", "h")

	tests := []struct {
		name    string
		wp, svc []*policy.Policy
		c       policy.Conn
		want    Decision
	}{
		{"no policies", nil, nil, request("GET", "/admin", "h"),
			Decision{Allowed: true, Reason: "no ALLOW policy"}},
		{"waypoint DENY", wp, svc, request("GET", "/admin/x", "h"),
			Decision{Policy: "default/deny-admin", Reason: "matched DENY policy"}},
		{"service ALLOW", wp, svc, request("GET", "/api/x", "h"),
			Decision{Allowed: true, Policy: "default/allow-sleep-get", Reason: "matched ALLOW policy", Audit: []string{"default/audit-api"}}},
		{"service ALLOW misses", wp, svc, other,
			Decision{Reason: "no ALLOW policy matched", Audit: []string{"default/audit-writes"}}},
		{"audit from both lists, waypoint first", wp, svc, request("POST", "/api/x", "h"),
			Decision{Allowed: true, Policy: "default/allow-sleep-get", Reason: "matched ALLOW policy",
				Audit: []string{"default/audit-writes", "default/audit-api"}}},
		{"DENY in service list, ALLOW in waypoint list", allowOnly, denyOnly, request("GET", "/admin", "h"),
			Decision{Policy: "default/deny-admin", Reason: "matched DENY policy"}},
		{"ALLOW in waypoint list applies to the service", allowOnly, nil, request("DELETE", "/", "h"),
			Decision{Reason: "no ALLOW policy matched"}},
		{"TCP against a DENY on paths", denyOnly, nil, tcpConn(),
			Decision{Policy: "default/deny-admin", Reason: "matched DENY policy"}},
		{"TCP against an ALLOW on methods", nil, allowOnly, tcpConn(),
			Decision{Reason: "no ALLOW policy matched"}},
		{"TCP is audited when only L7 conditions stand", wp[1:], nil, tcpConn(),
			Decision{Allowed: true, Reason: "no ALLOW policy", Audit: []string{"default/audit-writes"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.wp, tt.svc, tt.c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide = %+v, want %+v", got, tt.want)
			}
			// The union does not depend on which list a policy came in,
			// except for the order of Audit.
			got := Decide(slices.Concat(tt.svc, tt.wp), nil, tt.c)
			if got.Allowed != tt.want.Allowed {
				t.Errorf("swapped lists: Allowed = %v, want %v", got.Allowed, tt.want.Allowed)
			}
		})
	}
}

func TestDecideNoPoliciesNoAllocations(t *testing.T) {
	c := request("GET", "/", "example.com", "X-User", "admin")
	if n := testing.AllocsPerRun(100, func() { Decide(nil, nil, c) }); n != 0 {
		t.Errorf("Decide without policies: %v allocations, want 0", n)
	}
	tcp := tcpConn()
	if n := testing.AllocsPerRun(100, func() { Decide(nil, []*policy.Policy{}, tcp) }); n != 0 {
		t.Errorf("Decide without policies, TCP: %v allocations, want 0", n)
	}
}
