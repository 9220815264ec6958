package authz

import (
	"fmt"
	"testing"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// BenchmarkDecide measures the common case, no policies at all, which must
// not allocate, and a namespace's worth of L7 policies.
func BenchmarkDecide(b *testing.B) {
	var wp, svc []*waypointapi.L7Authorization
	wp = append(wp, l7("deny-admin", securityapi.Action_DENY, &waypointapi.L7Match{
		Paths: isms("/admin", "/admin/*"), L4: &securityapi.Match{NotNamespaces: isms("ops")}}))
	for i := range 10 {
		svc = append(svc, l7(fmt.Sprintf("allow-%d", i), securityapi.Action_ALLOW, &waypointapi.L7Match{
			L4:      &securityapi.Match{Principals: isms(fmt.Sprintf("cluster.local/ns/team-%d/sa/*", i))},
			Methods: isms("GET", "POST"), Paths: isms(fmt.Sprintf("/api/v%d/{**}", i)),
			Headers: []*waypointapi.HeaderCondition{{Name: "x-tenant", Values: isms("*")}},
		}))
	}
	svc = append(svc, l7("allow-sleep", securityapi.Action_ALLOW, &waypointapi.L7Match{
		L4: &securityapi.Match{Principals: isms("cluster.local/ns/default/sa/sleep")}, Methods: isms("GET")}))
	wpp, svcp := mustCompile(b, wp...), mustCompile(b, svc...)

	for _, bc := range []struct {
		name    string
		wp, svc []*policy.Policy
		c       policy.Conn
		want    bool
	}{
		{"none", nil, nil, request("GET", "/api/x", "example.com", "X-Tenant", "a"), true},
		{"none-tcp", nil, nil, tcpConn(), true},
		{"allow-last", wpp, svcp, request("GET", "/api/x", "example.com", "X-Tenant", "a"), true},
		{"deny", wpp, svcp, request("GET", "/admin/x", "example.com"), false},
		{"tcp", wpp, svcp, tcpConn(), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if d := Decide(bc.wp, bc.svc, bc.c); d.Allowed != bc.want {
				b.Fatalf("Decide = %+v, want Allowed=%v", d, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				Decide(bc.wp, bc.svc, bc.c)
			}
		})
	}
}
