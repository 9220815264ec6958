package authz

import (
	"testing"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Fields a newer control plane adds may narrow what a rule matches:
// ignoring them would widen an ALLOW policy. They fail closed, as ztunnel's
// conversion does: never true in ALLOW, true in DENY and AUDIT.
func TestUnknownFieldsFailClosed(t *testing.T) {
	hit := request("GET", "/api/x", "h", "X-User", "a")  // matches both rules
	miss := request("GET", "/other", "h", "X-User", "a") // fails the paths rule

	// One group of two rules: from sleep with GET and header x-user, and
	// paths /api/*.
	build := func(action securityapi.Action) *waypointapi.L7Authorization {
		return &waypointapi.L7Authorization{Name: "p", Namespace: "default", Action: action,
			Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{
				{Matches: []*waypointapi.L7Match{{
					L4:      &securityapi.Match{Principals: isms("cluster.local/ns/default/sa/sleep")},
					Methods: isms("GET"),
					Headers: []*waypointapi.HeaderCondition{{Name: "x-user", Values: isms("*")}},
				}}},
				{Matches: []*waypointapi.L7Match{{Paths: isms("/api/*")}}},
			}}}}
	}
	first := func(a *waypointapi.L7Authorization) *waypointapi.L7Match { return a.Groups[0].Rules[0].Matches[0] }
	second := func(a *waypointapi.L7Authorization) *waypointapi.L7Match { return a.Groups[0].Rules[1].Matches[0] }

	for _, tc := range []struct {
		name string
		edit func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization
		// Whether the policy matches hit and miss, as ALLOW, then as
		// DENY (and AUDIT).
		allowHit, allowMiss, denyHit, denyMiss bool
	}{
		{"all known", nil, true, false, true, false},
		{"match field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			a.Groups[0].Rules[1].Matches[0] = withUnknown(t, second(a), 20)
			return a
		}, false, false, true, false}, // DENY keeps the paths it can check
		{"L4 match field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			first(a).L4 = withUnknown(t, first(a).L4, 20)
			return a
		}, false, false, true, false},
		{"path of a newer kind", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			second(a).Paths[0] = withUnknown(t, &securityapi.StringMatch{}, 9)
			return a
		}, false, false, true, true}, // the paths rule as a whole is unchecked
		{"string match field in a method", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			first(a).Methods[0] = withUnknown(t, first(a).Methods[0], 9)
			return a
		}, false, false, true, false}, // the first rule is unchecked; paths still decide
		{"principal of a newer kind", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			first(a).L4.Principals[0] = withUnknown(t, first(a).L4.Principals[0], 9)
			return a
		}, false, false, true, false},
		{"header condition field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			first(a).Headers[0] = withUnknown(t, first(a).Headers[0], 7)
			return a
		}, false, false, true, false},
		{"rules field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			a.Groups[0].Rules[1] = withUnknown(t, a.Groups[0].Rules[1], 5)
			return a
		}, false, false, true, true},
		{"group field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			a.Groups[0] = withUnknown(t, a.Groups[0], 5)
			return a
		}, false, false, true, true},
		{"policy field", func(t *testing.T, a *waypointapi.L7Authorization) *waypointapi.L7Authorization {
			return withUnknown(t, a, 9)
		}, false, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, action := range []securityapi.Action{securityapi.Action_ALLOW, securityapi.Action_DENY} {
				a := build(action)
				if tc.edit != nil {
					a = tc.edit(t, a)
				}
				p, err := Compile(a)
				if err != nil {
					t.Fatalf("%v: Compile: %v", action, err)
				}
				wantHit, wantMiss := tc.allowHit, tc.allowMiss
				if action == securityapi.Action_DENY {
					wantHit, wantMiss = tc.denyHit, tc.denyMiss
				}
				if got := p.Matches(hit); got != wantHit {
					t.Errorf("%v: matches %s = %v, want %v", action, hit.Request.Path, got, wantHit)
				}
				if got := p.Matches(miss); got != wantMiss {
					t.Errorf("%v: matches %s = %v, want %v", action, miss.Request.Path, got, wantMiss)
				}
				if action == securityapi.Action_DENY {
					// An AUDIT policy errs the same way.
					a.Audit = true
					ap := mustCompile(t, a)[0]
					if got := policy.Audited(hit, []*policy.Policy{ap}) != nil; got != wantHit {
						t.Errorf("AUDIT: flags %s = %v, want %v", hit.Request.Path, got, wantHit)
					}
				}
			}
		})
	}
}
