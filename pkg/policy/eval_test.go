package policy

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestMatchFields(t *testing.T) {
	type check struct {
		name string
		c    Conn
		want bool
	}
	tests := []struct {
		name   string
		m      Match
		checks []check
	}{
		{"namespaces exact", Match{Namespaces: sm("default")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, false},
			{"plaintext", fromPlaintext, false}, {"odd peer", fromOdd, false},
		}},
		{"namespaces prefix", Match{Namespaces: sm("def*")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, false},
		}},
		{"namespaces suffix", Match{Namespaces: sm("*rod")}, []check{
			{"sleep", fromSleep, false}, {"api", fromAPI, true},
		}},
		{"namespaces presence", Match{Namespaces: sm("*")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, true},
			{"plaintext", fromPlaintext, false}, {"odd peer", fromOdd, false},
		}},
		{"namespaces any of two", Match{Namespaces: append(sm("prod"), sm("default")...)}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, true}, {"plaintext", fromPlaintext, false},
		}},
		{"not_namespaces", Match{NotNamespaces: sm("default")}, []check{
			{"sleep", fromSleep, false}, {"api", fromAPI, true},
			{"plaintext", fromPlaintext, true}, {"odd peer", fromOdd, true},
		}},
		{"not_namespaces presence", Match{NotNamespaces: sm("*")}, []check{
			{"sleep", fromSleep, false}, {"plaintext", fromPlaintext, true}, {"odd peer", fromOdd, true},
		}},
		{"principals exact", Match{Principals: sm("cluster.local/ns/default/sa/sleep")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, false}, {"plaintext", fromPlaintext, false},
		}},
		{"principals with scheme never match", Match{Principals: sm("spiffe://cluster.local/ns/default/sa/sleep")}, []check{
			{"sleep", fromSleep, false},
		}},
		{"principals prefix", Match{Principals: sm("cluster.local/ns/default/*")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, false}, {"plaintext", fromPlaintext, false},
		}},
		{"principals suffix", Match{Principals: sm("*/sa/api")}, []check{
			{"sleep", fromSleep, false}, {"api", fromAPI, true}, {"plaintext", fromPlaintext, false},
		}},
		{"principals star is presence", Match{Principals: sm("*")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, true}, {"odd peer", fromOdd, true},
			{"plaintext", fromPlaintext, false},
		}},
		{"principals empty prefix still needs a peer", Match{Principals: []StringMatch{{Kind: Prefix}}}, []check{
			{"sleep", fromSleep, true}, {"plaintext", fromPlaintext, false},
		}},
		{"principals invalid kind matches nothing", Match{Principals: []StringMatch{{Value: "cluster.local/ns/default/sa/sleep"}}}, []check{
			{"sleep", fromSleep, false},
		}},
		{"not_principals exact", Match{NotPrincipals: sm("cluster.local/ns/default/sa/sleep")}, []check{
			{"sleep", fromSleep, false}, {"api", fromAPI, true}, {"plaintext", fromPlaintext, true},
		}},
		{"not_principals star selects plaintext", Match{NotPrincipals: sm("*")}, []check{
			{"sleep", fromSleep, false}, {"api", fromAPI, false}, {"plaintext", fromPlaintext, true},
		}},
		{"source_ips v4", Match{SourceIPs: prefixes("10.0.0.0/8")}, []check{
			{"in", conn("10.1.2.3", "10.96.0.10", 80, sleepID), true},
			{"out", conn("192.168.0.1", "10.96.0.10", 80, sleepID), false},
			{"v4-mapped v6 in", conn("::ffff:10.1.2.3", "10.96.0.10", 80, sleepID), true},
			{"v4-mapped v6 out", conn("::ffff:11.1.2.3", "10.96.0.10", 80, sleepID), false},
			{"v6", conn("2001:db8::1", "10.96.0.10", 80, sleepID), false},
			{"plaintext", conn("10.1.2.3", "10.96.0.10", 80, spiffeid.ID{}), true},
		}},
		{"source_ips single address", Match{SourceIPs: prefixes("10.0.0.1/32")}, []check{
			{"same", fromSleep, true}, {"api", fromAPI, false},
		}},
		{"source_ips v6", Match{SourceIPs: prefixes("2001:db8::/32")}, []check{
			{"in", conn("2001:db8::5", "2001:db8:1::1", 80, sleepID), true},
			{"out", conn("2001:db9::5", "2001:db8:1::1", 80, sleepID), false},
			{"v4", conn("10.1.2.3", "10.96.0.10", 80, sleepID), false},
			{"zoned", conn("fe80::1%eth0", "fe80::2", 80, sleepID), false},
		}},
		{"source_ips link-local with zone", Match{SourceIPs: prefixes("fe80::/10")}, []check{
			{"zoned", conn("fe80::1%eth0", "fe80::2", 80, sleepID), true},
		}},
		{"source_ips v4-mapped block", Match{SourceIPs: prefixes("::ffff:10.0.0.0/104")}, []check{
			{"v4 in", conn("10.1.2.3", "10.96.0.10", 80, sleepID), true},
			{"mapped in", conn("::ffff:10.1.2.3", "10.96.0.10", 80, sleepID), true},
			{"v4 out", conn("11.0.0.1", "10.96.0.10", 80, sleepID), false},
		}},
		{"source_ips zero address matches nothing", Match{SourceIPs: prefixes("0.0.0.0/0", "::/0")}, []check{
			{"any v4", fromSleep, true},
			{"zero", Conn{DstIP: netip.MustParseAddr("10.96.0.10"), DstPort: 80}, false},
		}},
		{"not_source_ips", Match{NotSourceIPs: prefixes("10.0.0.0/8", "2001:db8::/32")}, []check{
			{"v4 in", conn("10.1.2.3", "10.96.0.10", 80, sleepID), false},
			{"v4 out", conn("192.168.0.1", "10.96.0.10", 80, sleepID), true},
			{"mapped in", conn("::ffff:10.0.0.1", "10.96.0.10", 80, sleepID), false},
			{"v6 in", conn("2001:db8::1", "10.96.0.10", 80, sleepID), false},
			{"v6 out", conn("2001:db9::1", "10.96.0.10", 80, sleepID), true},
		}},
		{"destination_ips", Match{DestinationIPs: prefixes("10.96.0.0/12", "fd00::/8")}, []check{
			{"v4 in", fromSleep, true},
			{"v4 out", conn("10.0.0.1", "10.0.0.2", 80, sleepID), false},
			{"v6 in", conn("fd00::1", "fd00::2", 80, sleepID), true},
			{"mapped in", conn("10.0.0.1", "::ffff:10.96.0.1", 80, sleepID), true},
		}},
		{"not_destination_ips", Match{NotDestinationIPs: prefixes("10.96.0.10/32")}, []check{
			{"that one", fromSleep, false},
			{"another", conn("10.0.0.1", "10.96.0.11", 8080, sleepID), true},
		}},
		{"destination_ports", Match{DestinationPorts: []uint32{80, 8080}}, []check{
			{"8080", fromSleep, true},
			{"80", conn("10.0.0.1", "10.96.0.10", 80, sleepID), true},
			{"443", conn("10.0.0.1", "10.96.0.10", 443, sleepID), false},
		}},
		{"destination_ports out of range never match", Match{DestinationPorts: []uint32{65536 + 8080}}, []check{
			{"8080", fromSleep, false},
		}},
		{"not_destination_ports", Match{NotDestinationPorts: []uint32{8080}}, []check{
			{"8080", fromSleep, false},
			{"80", conn("10.0.0.1", "10.96.0.10", 80, sleepID), true},
		}},
		{"fields are ANDed", Match{
			Principals:       sm("cluster.local/ns/default/sa/sleep"),
			SourceIPs:        prefixes("10.0.0.0/8"),
			DestinationPorts: []uint32{8080},
		}, []check{
			{"all", fromSleep, true},
			{"wrong port", conn("10.0.0.1", "10.96.0.10", 80, sleepID), false},
			{"wrong ip", conn("172.16.0.1", "10.96.0.10", 8080, sleepID), false},
			{"wrong peer", conn("10.0.0.1", "10.96.0.10", 8080, apiID), false},
		}},
		{"positive and negative of one field", Match{Namespaces: sm("*"), NotNamespaces: sm("prod")}, []check{
			{"sleep", fromSleep, true}, {"api", fromAPI, false}, {"plaintext", fromPlaintext, false},
		}},
	}
	for _, tt := range tests {
		for _, ck := range tt.checks {
			t.Run(tt.name+"/"+ck.name, func(t *testing.T) {
				// Fields must behave the same under both actions.
				for _, a := range []Action{Allow, Deny} {
					p := pol("p", a, tt.m)
					if got := p.Matches(ck.c); got != ck.want {
						t.Errorf("%v: Matches = %v, want %v", a, got, ck.want)
					}
				}
			})
		}
	}
}

func TestStructure(t *testing.T) {
	principal := Match{Principals: sm("cluster.local/ns/default/sa/sleep")}
	port80 := Match{DestinationPorts: []uint32{80}}
	nsProd := Match{Namespaces: sm("prod")}
	group := func(rs ...Rules) Group { return Group{Rules: rs} }
	rules := func(ms ...Match) Rules { return Rules{Matches: ms} }

	tests := []struct {
		name      string
		groups    []Group
		c         Conn
		wantAllow bool // Matches for an ALLOW policy
		wantDeny  bool // Matches for a DENY policy
	}{
		{"no groups matches nothing", nil, fromSleep, false, false},
		{"group without rules matches all", []Group{{}}, fromPlaintext, true, true},
		{"groups are ORed", []Group{group(rules(nsProd)), group(rules(principal))}, fromSleep, true, true},
		{"rules are ANDed: one fails", []Group{group(rules(principal), rules(port80))}, fromSleep, false, false},
		{"rules are ANDed: both hold", []Group{group(rules(principal), rules(port80))},
			conn("10.0.0.1", "10.96.0.10", 80, sleepID), true, true},
		{"matches are ORed", []Group{group(rules(nsProd, principal))}, fromSleep, true, true},
		{"rules without matches is unknown", []Group{group(Rules{})}, fromSleep, false, true},
		{"empty match is unknown", []Group{group(rules(Match{}))}, fromPlaintext, false, true},
		{"empty match beside a real one", []Group{group(rules(Match{}, principal))}, fromSleep, true, true},
		{"unsupported without L4", []Group{group(rules(Match{Unsupported: true}))}, fromSleep, false, true},
		{"unsupported with L4 that holds", []Group{group(rules(Match{Unsupported: true, DestinationPorts: []uint32{8080}}))},
			fromSleep, false, true},
		{"unsupported with L4 that fails", []Group{group(rules(Match{Unsupported: true, DestinationPorts: []uint32{80}}))},
			fromSleep, false, false},
		{"unsupported beside a supported alternative", []Group{group(rules(Match{Unsupported: true}, principal))},
			fromSleep, true, true},
		// An L7 "when" condition becomes its own Rules: it cannot make an
		// ALLOW rule match, and in a DENY rule only the L4 part counts.
		{"L7 when with L4 from: peer matches", []Group{group(rules(principal), rules(Match{Unsupported: true}))},
			fromSleep, false, true},
		{"L7 when with L4 from: peer differs", []Group{group(rules(principal), rules(Match{Unsupported: true}))},
			fromAPI, false, false},
		{"unsupported group does not hide another", []Group{group(rules(Match{Unsupported: true})), group(rules(principal))},
			fromSleep, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, a := range []Action{Allow, Deny} {
				p := &Policy{Name: "p", Namespace: "default", Action: a, Groups: tt.groups}
				want := tt.wantAllow
				if a == Deny {
					want = tt.wantDeny
				}
				if got := p.Matches(tt.c); got != want {
					t.Errorf("%v: Matches = %v, want %v", a, got, want)
				}
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	sleepOnly := Match{Principals: sm("cluster.local/ns/default/sa/sleep")}
	prodOnly := Match{Namespaces: sm("prod")}
	allowAll := &Policy{Name: "allow-all", Namespace: "default", Action: Allow, Groups: []Group{{}}}
	denyAll := &Policy{Name: "deny-all", Namespace: "default", Action: Deny, Groups: []Group{{}}}
	allowNothing := &Policy{Name: "allow-nothing", Namespace: "default", Action: Allow}
	denyNothing := &Policy{Name: "deny-nothing", Namespace: "default", Action: Deny}

	tests := []struct {
		name       string
		policies   []*Policy
		c          Conn
		want       bool
		wantPolicy string
		wantReason string
	}{
		{"no policies allows", nil, fromSleep, true, "", reasonNoAllowPolicy},
		{"no policies allows plaintext", nil, fromPlaintext, true, "", reasonNoAllowPolicy},
		{"DENY not matching allows", []*Policy{pol("d", Deny, prodOnly)}, fromSleep, true, "", reasonNoAllowPolicy},
		{"DENY matching denies", []*Policy{pol("d", Deny, sleepOnly)}, fromSleep, false, "default/d", reasonDenyMatched},
		{"DENY wins over earlier ALLOW", []*Policy{pol("a", Allow, sleepOnly), pol("d", Deny, sleepOnly)},
			fromSleep, false, "default/d", reasonDenyMatched},
		{"DENY wins over allow-all", []*Policy{allowAll, pol("d", Deny, sleepOnly)}, fromSleep, false, "default/d", reasonDenyMatched},
		{"ALLOW matching allows", []*Policy{pol("a", Allow, sleepOnly)}, fromSleep, true, "default/a", reasonAllowMatched},
		{"ALLOW not matching denies", []*Policy{pol("a", Allow, sleepOnly)}, fromAPI, false, "", reasonNoAllowMatch},
		{"second ALLOW matches", []*Policy{pol("a1", Allow, prodOnly), pol("a2", Allow, sleepOnly)},
			fromSleep, true, "default/a2", reasonAllowMatched},
		{"first matching ALLOW reported", []*Policy{pol("a1", Allow, sleepOnly), allowAll},
			fromSleep, true, "default/a1", reasonAllowMatched},
		{"DENY miss then ALLOW hit", []*Policy{pol("d", Deny, prodOnly), pol("a", Allow, sleepOnly)},
			fromSleep, true, "default/a", reasonAllowMatched},
		{"spec {} ALLOW denies all", []*Policy{allowNothing}, fromSleep, false, "", reasonNoAllowMatch},
		{"spec {} DENY has no effect", []*Policy{denyNothing}, fromSleep, true, "", reasonNoAllowPolicy},
		{"rules [{}] ALLOW allows all", []*Policy{allowAll}, fromPlaintext, true, "default/allow-all", reasonAllowMatched},
		{"rules [{}] DENY denies all", []*Policy{denyAll}, fromSleep, false, "default/deny-all", reasonDenyMatched},
		{"ALLOW with only L7 denies", []*Policy{pol("a", Allow, Match{Unsupported: true})}, fromSleep, false, "", reasonNoAllowMatch},
		{"ALLOW with L7 and L4 denies", []*Policy{pol("a", Allow, Match{Unsupported: true, Principals: sleepOnly.Principals})},
			fromSleep, false, "", reasonNoAllowMatch},
		{"DENY with only L7 denies all", []*Policy{pol("d", Deny, Match{Unsupported: true})},
			fromPlaintext, false, "default/d", reasonDenyMatched},
		{"DENY with only L7 sent as empty match denies all", []*Policy{pol("d", Deny, Match{})},
			fromSleep, false, "default/d", reasonDenyMatched},
		{"DENY with L7 and port: other port allowed", []*Policy{pol("d", Deny, Match{Unsupported: true, DestinationPorts: []uint32{9090}})},
			fromSleep, true, "", reasonNoAllowPolicy},
		{"DENY with L7 and port: that port denied", []*Policy{pol("d", Deny, Match{Unsupported: true, DestinationPorts: []uint32{8080}})},
			fromSleep, false, "default/d", reasonDenyMatched},
		{"plaintext vs ALLOW principals", []*Policy{pol("a", Allow, Match{Principals: sm("*")})}, fromPlaintext, false, "", reasonNoAllowMatch},
		{"plaintext vs ALLOW namespaces", []*Policy{pol("a", Allow, Match{Namespaces: sm("*")})}, fromPlaintext, false, "", reasonNoAllowMatch},
		{"plaintext vs DENY notPrincipals *", []*Policy{pol("d", Deny, Match{NotPrincipals: sm("*")})},
			fromPlaintext, false, "default/d", reasonDenyMatched},
		{"mTLS vs DENY notPrincipals *", []*Policy{pol("d", Deny, Match{NotPrincipals: sm("*")})},
			fromSleep, true, "", reasonNoAllowPolicy},
		{"plaintext vs ALLOW ipBlocks", []*Policy{pol("a", Allow, Match{SourceIPs: prefixes("10.0.0.0/8")})},
			fromPlaintext, true, "default/a", reasonAllowMatched},
		{"unknown action denies", []*Policy{allowAll, {Name: "x", Namespace: "default", Action: 7}},
			fromSleep, false, "default/x", reasonBadAction},
		{"nil entries skipped", []*Policy{nil, pol("a", Allow, sleepOnly), nil}, fromSleep, true, "default/a", reasonAllowMatched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Evaluate(tt.policies, tt.c)
			want := Decision{Allowed: tt.want, Policy: tt.wantPolicy, Reason: tt.wantReason}
			if d != want {
				t.Errorf("Evaluate = %+v, want %+v", d, want)
			}
			// DENY precedence does not depend on order.
			rev := slices.Clone(tt.policies)
			slices.Reverse(rev)
			if got := Evaluate(rev, tt.c); got.Allowed != d.Allowed {
				t.Errorf("reversed: Allowed = %v, want %v", got.Allowed, d.Allowed)
			}
		})
	}
}

func TestApplicable(t *testing.T) {
	mk := func(ns, name string, s Scope) *Policy {
		return &Policy{Name: name, Namespace: ns, Scope: s}
	}
	var (
		global       = mk("istio-system", "global", Global)
		rootNS       = mk("istio-system", "root-ns", Namespace)
		rootSelector = mk("istio-system", "root-sel", WorkloadSelector)
		nsDefault    = mk("default", "ns", Namespace)
		nsProd       = mk("prod", "ns", Namespace)
		selDefault   = mk("default", "sel", WorkloadSelector)
		selProd      = mk("prod", "sel", WorkloadSelector)
		strayGlobal  = mk("prod", "stray", Global)
		badScope     = mk("default", "bad", Scope(9))
	)
	all := []*Policy{global, rootNS, rootSelector, nsDefault, nsProd, selDefault, selProd, strayGlobal, badScope, nil}

	tests := []struct {
		name  string
		ns    string
		names []string
		root  string
		want  []*Policy
	}{
		{"default, no selectors", "default", nil, "istio-system", []*Policy{global, nsDefault, badScope}},
		{"default, selected", "default", []string{"default/sel", "istio-system/root-sel"}, "istio-system",
			[]*Policy{global, rootSelector, nsDefault, selDefault, badScope}},
		{"name without namespace is not a key", "default", []string{"sel"}, "istio-system", []*Policy{global, nsDefault, badScope}},
		{"same name other namespace", "default", []string{"prod/sel"}, "istio-system",
			[]*Policy{global, nsDefault, selProd, badScope}},
		{"prod gets its stray global", "prod", nil, "istio-system", []*Policy{global, nsProd, strayGlobal}},
		{"root namespace workload", "istio-system", nil, "istio-system", []*Policy{global, rootNS}},
		{"no root namespace", "default", nil, "", []*Policy{nsDefault, badScope}},
		{"other namespace", "kube-system", nil, "istio-system", []*Policy{global}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Applicable(all, tt.ns, tt.names, tt.root)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Applicable = %v, want %v", keys(got), keys(tt.want))
			}
		})
	}
}

func keys(ps []*Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Key()
	}
	return out
}

func TestNamespaceOf(t *testing.T) {
	tests := []struct {
		path, ns string
		ok       bool
	}{
		{"/ns/default/sa/sleep", "default", true},
		{"/ns/a-b/sa/c.d", "a-b", true},
		{"", "", false},
		{"/ns//sa/x", "", false},
		{"/ns/default/sa/", "", false},
		{"/ns/default", "", false},
		{"/ns/default/sa/x/y", "", false},
		{"/ns/a/b/sa/x", "", false},
		{"/workload/ns/default/sa/x", "", false},
		{"/NS/default/sa/x", "", false},
	}
	for _, tt := range tests {
		ns, ok := namespaceOf(tt.path)
		if ns != tt.ns || ok != tt.ok {
			t.Errorf("namespaceOf(%q) = %q, %v; want %q, %v", tt.path, ns, ok, tt.ns, tt.ok)
		}
	}
}
