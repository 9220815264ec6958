package policy

import (
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
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

	// L7 values: paths as written in policies (some templates, one
	// invalid), and request attributes that hit them.
	fuzzPathValues = []string{"/admin", "/admin/*", "*", "*.php", "/", "/api/{*}/x", "/files/{**}",
		"/{**}/x", "/bad/{**}/{*}", "/ADMIN"}
	fuzzMethods      = []string{"GET", "POST", "get", "", "DELETE"}
	fuzzHostValues   = []string{"example.com", "example.com:*", "*.example.com", "*", "example.com:8080", "EXAMPLE.COM", "[::1]"}
	fuzzPaths        = []string{"/", "/admin", "/admin/x", "/ADMIN", "/api/a/x", "/files/", "/files", "/a/b/x", "", "/x.php"}
	fuzzHosts        = []string{"", "example.com", "Example.com:8080", "a.example.com", "example.com.", "[::1]:80", "other:1"}
	fuzzHeaderNames  = []string{"x-user", "host", "X-Bad", "", "x-token"}
	fuzzHeaderValues = []string{"admin", "", "bob", "admin,bob"}
)

func (g *gen) paths() []StringMatch {
	out := make([]StringMatch, g.n(3))
	for i := range out {
		v := fuzzPathValues[g.n(len(fuzzPathValues))]
		if IsPathTemplate(v) {
			// Invalid templates too: Validate must reject them, and
			// matching must not panic.
			out[i] = StringMatch{Kind: Template, Value: v}
		} else {
			out[i] = ParseStringMatch(v)
		}
	}
	return out
}

func (g *gen) from(values []string) []StringMatch {
	out := make([]StringMatch, g.n(3))
	for i := range out {
		out[i] = ParseStringMatch(values[g.n(len(values))])
	}
	return out
}

func (g *gen) headers() []HeaderMatch {
	out := make([]HeaderMatch, g.n(3))
	for i := range out {
		out[i] = HeaderMatch{Name: fuzzHeaderNames[g.n(len(fuzzHeaderNames))],
			Values: g.from(fuzzHeaderValues), NotValues: g.from(fuzzHeaderValues)}
		if g.n(4) == 0 {
			out[i].Values = append(out[i].Values, StringMatch{Kind: Presence})
		}
	}
	return out
}

func (g *gen) request() *Request {
	r := &Request{
		Method: fuzzMethods[g.n(len(fuzzMethods))],
		Path:   fuzzPaths[g.n(len(fuzzPaths))],
		Host:   fuzzHosts[g.n(len(fuzzHosts))],
		Header: http.Header{},
	}
	for range g.n(4) {
		// Raw keys, canonical or not, as a hand-built map may hold.
		k := fuzzHeaderNames[g.n(len(fuzzHeaderNames))]
		r.Header[k] = append(r.Header[k], fuzzHeaderValues[g.n(len(fuzzHeaderValues))])
	}
	return r
}

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
	l7 := g.byte()
	if l7&1 != 0 {
		m.Paths = g.paths()
	}
	if l7&2 != 0 {
		m.NotPaths = g.paths()
	}
	if l7&4 != 0 {
		m.Methods = g.from(fuzzMethods)
	}
	if l7&8 != 0 {
		m.NotMethods = g.from(fuzzMethods)
	}
	if l7&16 != 0 {
		m.Hosts = g.from(fuzzHostValues)
	}
	if l7&32 != 0 {
		m.NotHosts = g.from(fuzzHostValues)
	}
	if l7&64 != 0 {
		m.Headers = g.headers()
	}
	return m
}

func (g *gen) policy(i int) *Policy {
	p := &Policy{Name: fuzzStrings[i%len(fuzzStrings)], Namespace: "ns", Scope: Scope(g.n(4))}
	switch a := g.n(16); {
	case a == 0:
		p.Action = Action(3 + g.n(3)) // rarely invalid
	case a == 1 || a == 3:
		p.Action = Audit
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

// FuzzEvaluate builds policies and a connection, with or without an HTTP
// request, from the input and checks that Evaluate agrees with a direct
// reading of the rules: a matching DENY (or an unknown action) denies,
// otherwise ALLOW policies decide, and AUDIT policies take no part. It also
// checks that unchecked L7 conditions fail closed: taking the request away
// can only make an ALLOW policy match less and a DENY or AUDIT policy match
// more.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{}, "spiffe://cluster.local/ns/default/sa/sleep")
	f.Add([]byte{3, 1, 1, 1, 1, 255, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "")
	f.Add([]byte{5, 2, 2, 2, 2, 1, 0, 0, 2, 2, 4, 4, 1, 1, 9, 9, 9, 9, 9, 9}, "spiffe://td/ns//sa/x")
	f.Add([]byte("policies from bytes, many of them, to exercise more shapes"), "spiffe://other.td/ns/prod/sa/api")
	f.Add([]byte{1, 1, 1, 3, 2, 4, 1, 1, 2, 2, 1, 1, 0, 0, 127, 2, 1, 2, 1, 0, 1, 2, 1, 0}, "spiffe://cluster.local/ns/default/sa/sleep")
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
		if g.n(2) == 0 {
			c.Request = g.request()
		}
		policies := make([]*Policy, g.n(6))
		for i := range policies {
			policies[i] = g.policy(i)
			_ = policies[i].Validate() // must not panic
		}

		var denied, bad, haveAllow, allowed bool
		var audited []string
		keys := map[string]bool{"": true}
		for _, p := range policies {
			keys[p.Key()] = true
			switch p.Action {
			case Deny:
				denied = denied || p.Matches(c)
			case Allow:
				haveAllow = true
				allowed = allowed || p.Matches(c)
			case Audit:
				if p.Matches(c) {
					audited = append(audited, p.Key())
				}
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
		split := len(policies) / 2
		if got := EvaluateAll(c, policies[:split], nil, policies[split:]); got != d {
			t.Fatalf("EvaluateAll over a split = %+v, want %+v", got, d)
		}
		if got := Audited(c, policies[:split], policies[split:]); !slices.Equal(got, audited) {
			t.Fatalf("Audited = %q, want %q", got, audited)
		}
		if c.Request != nil {
			tcp := c
			tcp.Request = nil
			for _, p := range policies {
				withReq, without := p.Matches(c), p.Matches(tcp)
				if p.Action == Allow && without && !withReq {
					t.Fatalf("ALLOW %s matches without the request but not with it", p.Key())
				}
				if p.Action != Allow && withReq && !without {
					t.Fatalf("%v %s matches with the request but not without it", p.Action, p.Key())
				}
			}
		}
		for _, p := range Applicable(policies, "ns", []string{"ns/default"}, "ns") {
			if p == nil {
				t.Fatal("Applicable returned nil")
			}
		}
	})
}

// FuzzPathTemplate checks ParsePathMatch against Istio's template rules
// and, for every template it accepts, the matcher against a regular
// expression built from the template: "{*}" as "[^/]+", "{**}" as ".*".
func FuzzPathTemplate(f *testing.F) {
	for _, s := range []string{"/foo/{*}", "/foo/{**}/", "/foo/{*}/bar/{**}", "/{**}", "/{**}/x", "/a/{*}.txt",
		"/{**}/{*}", "/x//{*}", "/plain"} {
		f.Add(s, "/foo/bar/")
	}
	f.Add("/{*}/{*}", "/a/b")
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		m, err := ParsePathMatch(tmpl)
		if err != nil {
			if !IsPathTemplate(tmpl) {
				t.Fatalf("ParsePathMatch(%q) = %v for a value without an operator", tmpl, err)
			}
			return
		}
		if m.String() != tmpl {
			t.Fatalf("ParsePathMatch(%q).String() = %q", tmpl, m.String())
		}
		if err := m.validate(); err != nil {
			t.Fatalf("ParsePathMatch(%q) invalid: %v", tmpl, err)
		}
		if m.Kind != Template {
			return
		}
		var re strings.Builder
		re.WriteString("(?s)^")
		for _, seg := range strings.Split(tmpl[1:], "/") {
			re.WriteString("/")
			switch seg {
			case "{*}":
				re.WriteString("[^/]+")
			case "{**}":
				re.WriteString(".*")
			default:
				re.WriteString(regexp.QuoteMeta(seg))
			}
		}
		re.WriteString("$")
		want := regexp.MustCompile(re.String()).MatchString(path)
		if got := m.Matches(path); got != want {
			t.Fatalf("template %q on %q: Matches = %v, regexp %s says %v", tmpl, path, got, re.String(), want)
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
