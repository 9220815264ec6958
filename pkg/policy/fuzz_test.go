package policy

import (
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// gen turns fuzz bytes into values; past the end it yields zeros.
type gen struct{ b []byte }

func (g *gen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *gen) n(max int) int { return int(g.byte()) % max }

var (
	fuzzStrings = []string{"", "*", "default", "prod", "def*", "*rod", "cluster.local/ns/default/sa/sleep",
		"cluster.local/*", "*/sa/api", "other.td/ns/prod/sa/api", "spiffe://x"}
	fuzzPrefixes = []netip.Prefix{{},
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::ffff:10.0.0.0/104"),
		netip.MustParsePrefix("::ffff:0.0.0.0/90"), netip.MustParsePrefix("fe80::/10")}
	fuzzAddrs = []netip.Addr{{},
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.168.1.1"),
		netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("::")}
	fuzzPorts = []uint32{0, 80, 443, 8080, 65535, 65536 + 80}
)

func (g *gen) strings() []StringMatch {
	out := make([]StringMatch, g.n(3))
	for i := range out {
		if g.n(8) == 0 {
			out[i] = StringMatch{Kind: MatchKind(g.n(6)), Value: fuzzStrings[g.n(len(fuzzStrings))]}
		} else {
			out[i] = ParseStringMatch(fuzzStrings[g.n(len(fuzzStrings))])
		}
	}
	return out
}

func (g *gen) prefixes() []netip.Prefix {
	out := make([]netip.Prefix, g.n(3))
	for i := range out {
		out[i] = fuzzPrefixes[g.n(len(fuzzPrefixes))]
	}
	return out
}

func (g *gen) ports() []uint32 {
	out := make([]uint32, g.n(3))
	for i := range out {
		out[i] = fuzzPorts[g.n(len(fuzzPorts))]
	}
	return out
}

func (g *gen) match() Match {
	var m Match
	// One bit per field keeps most matches small.
	f := uint16(g.byte()) | uint16(g.byte())<<8
	set := func(bit int) bool { return f&(1<<bit) != 0 }
	if set(0) {
		m.Namespaces = g.strings()
	}
	if set(1) {
		m.NotNamespaces = g.strings()
	}
	if set(2) {
		m.Principals = g.strings()
	}
	if set(3) {
		m.NotPrincipals = g.strings()
	}
	if set(4) {
		m.SourceIPs = g.prefixes()
	}
	if set(5) {
		m.NotSourceIPs = g.prefixes()
	}
	if set(6) {
		m.DestinationIPs = g.prefixes()
	}
	if set(7) {
		m.NotDestinationIPs = g.prefixes()
	}
	if set(8) {
		m.DestinationPorts = g.ports()
	}
	if set(9) {
		m.NotDestinationPorts = g.ports()
	}
	m.Unsupported = set(10)
	return m
}

func (g *gen) policy(i int) *Policy {
	p := &Policy{Name: fuzzStrings[i%len(fuzzStrings)], Namespace: "ns", Scope: Scope(g.n(4))}
	switch a := g.n(16); {
	case a == 0:
		p.Action = Action(2 + g.n(3)) // rarely invalid
	case a%2 == 0:
		p.Action = Deny
	}
	p.Groups = make([]Group, g.n(3))
	for gi := range p.Groups {
		p.Groups[gi].Rules = make([]Rules, g.n(3))
		for ri := range p.Groups[gi].Rules {
			ms := make([]Match, g.n(3))
			for mi := range ms {
				ms[mi] = g.match()
			}
			p.Groups[gi].Rules[ri].Matches = ms
		}
	}
	return p
}

// FuzzEvaluate builds policies and a connection from the input and checks
// that Evaluate agrees with a direct reading of the rules: a matching DENY
// (or an unknown action) denies, otherwise ALLOW policies decide.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{}, "spiffe://cluster.local/ns/default/sa/sleep")
	f.Add([]byte{3, 1, 1, 1, 1, 255, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "")
	f.Add([]byte{5, 2, 2, 2, 2, 1, 0, 0, 2, 2, 4, 4, 1, 1, 9, 9, 9, 9, 9, 9}, "spiffe://td/ns//sa/x")
	f.Add([]byte("policies from bytes, many of them, to exercise more shapes"), "spiffe://other.td/ns/prod/sa/api")
	f.Fuzz(func(t *testing.T, data []byte, peer string) {
		g := &gen{b: data}
		c := Conn{
			SrcIP:   fuzzAddrs[g.n(len(fuzzAddrs))],
			DstIP:   fuzzAddrs[g.n(len(fuzzAddrs))],
			DstPort: uint16(fuzzPorts[g.n(len(fuzzPorts))]),
		}
		if id, err := spiffeid.FromString(peer); err == nil {
			c.Peer = id
		}
		policies := make([]*Policy, g.n(6))
		for i := range policies {
			policies[i] = g.policy(i)
			_ = policies[i].Validate() // must not panic
		}

		var denied, bad, haveAllow, allowed bool
		keys := map[string]bool{"": true}
		for _, p := range policies {
			keys[p.Key()] = true
			switch p.Action {
			case Deny:
				denied = denied || p.Matches(c)
			case Allow:
				haveAllow = true
				allowed = allowed || p.Matches(c)
			default:
				bad = true
			}
		}
		want := !denied && !bad && (!haveAllow || allowed)

		d := Evaluate(policies, c)
		if d.Allowed != want {
			t.Fatalf("Evaluate = %+v, want Allowed=%v (deny matched %v, bad action %v, allow present %v, allow matched %v)",
				d, want, denied, bad, haveAllow, allowed)
		}
		if !keys[d.Policy] {
			t.Fatalf("Decision names unknown policy %q", d.Policy)
		}
		if d.Reason == "" {
			t.Fatal("Decision without a reason")
		}
		for _, p := range Applicable(policies, "ns", []string{"ns/default"}, "ns") {
			if p == nil {
				t.Fatal("Applicable returned nil")
			}
		}
	})
}

// FuzzParseStringMatch checks that ParseStringMatch round-trips through
// String, yields a valid match, and matches its own input.
func FuzzParseStringMatch(f *testing.F) {
	for _, s := range fuzzStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := ParseStringMatch(s)
		if got := m.String(); got != s {
			t.Fatalf("ParseStringMatch(%q).String() = %q", s, got)
		}
		if err := m.validate(); err != nil {
			t.Fatalf("ParseStringMatch(%q) invalid: %v", s, err)
		}
		if !m.Matches(s) {
			t.Fatalf("ParseStringMatch(%q) does not match its input", s)
		}
	})
}
