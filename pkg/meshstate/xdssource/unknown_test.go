package xdssource

import (
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
)

// withUnknown returns a copy of m carrying a field of number num that this
// ztunnel does not know, as a newer control plane would send.
func withUnknown[M proto.Message](t *testing.T, m M, num protowire.Number) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x0a, 0x03, 'f', 'o', 'o'})
	out := proto.Clone(m).(M)
	proto.Reset(out)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Fields a newer control plane adds to a policy's rules may narrow what it
// matches: ignoring them would widen an ALLOW policy. They fail closed, as
// pkg/policy treats conditions it cannot check: never true in ALLOW, true
// in DENY.
func TestUnknownPolicyFieldsFailClosed(t *testing.T) {
	peer := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep")
	to8080 := policy.Conn{SrcIP: netip.MustParseAddr("10.9.9.9"), DstIP: netip.MustParseAddr("10.0.0.1"), DstPort: 8080, Peer: peer}
	to9090 := to8080
	to9090.DstPort = 9090

	sleep := func() *securityapi.StringMatch {
		return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/sleep"}}
	}
	// policy: one group of two rules: from sleep, to port 8080.
	build := func(action securityapi.Action, edit func(a *securityapi.Authorization)) *securityapi.Authorization {
		a := &securityapi.Authorization{Name: "p", Namespace: "default", Scope: securityapi.Scope_NAMESPACE, Action: action,
			Groups: []*securityapi.Group{{Rules: []*securityapi.Rules{
				{Matches: []*securityapi.Match{{Principals: []*securityapi.StringMatch{sleep()}}}},
				{Matches: []*securityapi.Match{{DestinationPorts: []uint32{8080}}}},
			}}}}
		if edit != nil {
			edit(a)
		}
		return a
	}
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, a *securityapi.Authorization)
		// allowed: the decisions for a connection from sleep to 8080 and to
		// 9090 under the ALLOW policy, then under the DENY policy.
		allow8080, allow9090, deny8080, deny9090 bool
	}{
		{"all known", nil, true, false, false, true},
		{"match field", func(t *testing.T, a *securityapi.Authorization) {
			r := a.Groups[0].Rules[1]
			r.Matches[0] = withUnknown(t, r.Matches[0], 11)
		}, false, false, false, true}, // DENY keeps the port it can check
		{"string match field", func(t *testing.T, a *securityapi.Authorization) {
			m := a.Groups[0].Rules[0].Matches[0]
			m.Principals[0] = withUnknown(t, m.Principals[0], 9)
		}, false, false, false, true}, // DENY still needs the port rule

		{"string match of a newer kind", func(t *testing.T, a *securityapi.Authorization) {
			m := a.Groups[0].Rules[0].Matches[0]
			m.Principals[0] = withUnknown(t, &securityapi.StringMatch{}, 5)
		}, false, false, false, true},
		{"address field", func(t *testing.T, a *securityapi.Authorization) {
			m := a.Groups[0].Rules[1].Matches[0]
			m.SourceIps = []*securityapi.Address{withUnknown(t, &securityapi.Address{Address: netip.MustParseAddr("10.0.0.0").AsSlice(), Length: 8}, 3)}
		}, false, false, false, false}, // the port rule as a whole is unchecked
		{"rules field", func(t *testing.T, a *securityapi.Authorization) {
			a.Groups[0].Rules[1] = withUnknown(t, a.Groups[0].Rules[1], 1)
		}, false, false, false, false},
		{"group field", func(t *testing.T, a *securityapi.Authorization) {
			a.Groups[0] = withUnknown(t, a.Groups[0], 2)
		}, false, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, action := range []securityapi.Action{securityapi.Action_ALLOW, securityapi.Action_DENY} {
				a := build(action, nil)
				if tc.edit != nil {
					tc.edit(t, a)
				}
				st := meshstate.NewStore("istio-system", "cluster.local")
				s := New(st)
				if err := s.Subscriptions()[1].Apply(xds.Delta{TypeURL: xds.AuthorizationType, Updated: []xds.Resource{res(t, "default/p", a)}}); err != nil {
					t.Fatalf("%v: %v", action, err)
				}
				ps := st.Snapshot().Policies()
				want8080, want9090 := tc.allow8080, tc.allow9090
				if action == securityapi.Action_DENY {
					want8080, want9090 = tc.deny8080, tc.deny9090
				}
				if d := policy.Evaluate(ps, to8080); d.Allowed != want8080 {
					t.Errorf("%v: sleep to 8080 allowed=%v (%s), want %v", action, d.Allowed, d.Reason, want8080)
				}
				if d := policy.Evaluate(ps, to9090); d.Allowed != want9090 {
					t.Errorf("%v: sleep to 9090 allowed=%v (%s), want %v", action, d.Allowed, d.Reason, want9090)
				}
			}
		})
	}

	t.Run("policy field", func(t *testing.T) {
		for _, tc := range []struct {
			action  securityapi.Action
			allowed bool
		}{{securityapi.Action_ALLOW, false}, {securityapi.Action_DENY, false}} {
			a := withUnknown(t, build(tc.action, nil), 6)
			st := meshstate.NewStore("istio-system", "cluster.local")
			if err := New(st).Subscriptions()[1].Apply(xds.Delta{TypeURL: xds.AuthorizationType, Updated: []xds.Resource{res(t, "default/p", a)}}); err != nil {
				t.Fatal(err)
			}
			if d := policy.Evaluate(st.Snapshot().Policies(), to8080); d.Allowed != tc.allowed {
				t.Errorf("%v: allowed=%v (%s), want %v", tc.action, d.Allowed, d.Reason, tc.allowed)
			}
		}
	})
}
