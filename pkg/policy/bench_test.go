package policy

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchPolicies returns 50 policies shaped like a busy namespace: DENY
// policies on IP blocks, ALLOW policies on principals, namespaces and ports,
// with the one that matches fromSleep last.
func benchPolicies() []*Policy {
	var ps []*Policy
	for i := range 10 {
		ps = append(ps, pol(fmt.Sprintf("deny-%d", i), Deny, Match{
			SourceIPs:         []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24)},
			NotDestinationIPs: prefixes("10.96.0.0/12"),
		}))
	}
	for i := range 39 {
		ps = append(ps, &Policy{Name: fmt.Sprintf("allow-%d", i), Namespace: "default", Action: Allow,
			Groups: []Group{{Rules: []Rules{
				{Matches: []Match{
					{Principals: sm(fmt.Sprintf("cluster.local/ns/team-%d/sa/*", i))},
					{Namespaces: sm(fmt.Sprintf("team-%d", i)), NotPrincipals: sm("*/sa/default")},
				}},
				{Matches: []Match{{DestinationPorts: []uint32{uint32(9000 + i)}}}},
			}}}})
	}
	ps = append(ps, pol("allow-sleep", Allow, Match{
		Principals:       sm("cluster.local/ns/default/sa/sleep"),
		DestinationPorts: []uint32{8080},
	}))
	return ps
}

func BenchmarkEvaluate(b *testing.B) {
	ps := benchPolicies()
	for _, bc := range []struct {
		name string
		c    Conn
		want bool
	}{
		{"allow-last", fromSleep, true},
		{"deny-none-match", fromAPI, false},
		{"plaintext", fromPlaintext, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if d := Evaluate(ps, bc.c); d.Allowed != bc.want {
				b.Fatalf("Evaluate = %+v, want Allowed=%v", d, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				Evaluate(ps, bc.c)
			}
		})
	}
}

// BenchmarkEvaluateRequest measures L7 policies against an HTTP request:
// a DENY on paths, then ALLOW policies on methods, templates and headers,
// with the one that matches last.
func BenchmarkEvaluateRequest(b *testing.B) {
	ps := []*Policy{pol("deny-admin", Deny, Match{Paths: paths("/admin", "/admin/*"), NotNamespaces: sm("ops")})}
	for i := range 20 {
		ps = append(ps, pol(fmt.Sprintf("allow-%d", i), Allow, Match{
			Principals: sm(fmt.Sprintf("cluster.local/ns/team-%d/sa/*", i)),
			Methods:    sms("GET", "POST"),
			Paths:      paths(fmt.Sprintf("/api/v%d/{*}/items", i)),
			Headers:    []HeaderMatch{{Name: "x-tenant", Values: sms("*")}},
		}))
	}
	ps = append(ps, pol("allow-sleep", Allow, Match{
		Principals: sm("cluster.local/ns/default/sa/sleep"), Hosts: sms("*.svc.cluster.local"), Methods: sms("GET"),
	}))
	c := req("GET", "/api/v1/x/items", "api.default.svc.cluster.local:8080", "X-Tenant", "a")
	if d := Evaluate(ps, c); !d.Allowed || d.Policy != "default/allow-sleep" {
		b.Fatalf("Evaluate = %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		Evaluate(ps, c)
	}
}
