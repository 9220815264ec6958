package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	valid := func() *Policy {
		return &Policy{Name: "p", Namespace: "default", Scope: WorkloadSelector, Action: Deny,
			Groups: []Group{{}, {Rules: []Rules{{Matches: []Match{
				{},
				{Unsupported: true},
				{
					Namespaces: sm("default"), NotNamespaces: sm("*"),
					Principals: sm("cluster.local/*"), NotPrincipals: sm("*/sa/x"),
					SourceIPs: prefixes("10.0.0.0/8"), NotSourceIPs: prefixes("::ffff:10.0.0.0/104"),
					DestinationIPs: prefixes("2001:db8::/32"), NotDestinationIPs: prefixes("10.0.0.1/32"),
					DestinationPorts: []uint32{1, 65535}, NotDestinationPorts: []uint32{8080},
					Paths:    []StringMatch{{Kind: Template, Value: "/api/{*}"}, {Kind: Prefix, Value: "/x/"}},
					NotPaths: sm("*.php"), Methods: sm("GET"), NotMethods: sm("DELETE"),
					Hosts: sm("*.example.com"), NotHosts: sm("admin.example.com:*"),
					Headers: []HeaderMatch{{Name: "x-user", Values: sm("*")}, {Name: "x-b_c.d~1", NotValues: sm("a")}},
				},
			}}}}}}
	}
	match := func(p *Policy) *Match { return &p.Groups[1].Rules[0].Matches[2] }

	tests := []struct {
		name    string
		mutate  func(p *Policy)
		wantErr string // "" for valid
	}{
		{"valid", func(*Policy) {}, ""},
		{"no groups", func(p *Policy) { p.Groups = nil }, ""},
		{"empty name", func(p *Policy) { p.Name = "" }, "empty name"},
		{"empty namespace", func(p *Policy) { p.Namespace = "" }, "empty namespace"},
		{"slash in name", func(p *Policy) { p.Name = "a/b" }, `name "a/b" contains '/'`},
		{"slash in namespace", func(p *Policy) { p.Namespace = "a/b" }, `namespace "a/b" contains '/'`},
		{"unknown scope", func(p *Policy) { p.Scope = 3 }, "unknown scope 3"},
		{"unknown action", func(p *Policy) { p.Action = -1 }, "unknown action -1"},
		{"audit action", func(p *Policy) { p.Action = Audit }, ""},
		{"action after audit", func(p *Policy) { p.Action = 3 }, "unknown action 3"},
		{"invalid template", func(p *Policy) { match(p).Paths = []StringMatch{{Kind: Template, Value: "/{**}/{*}"}} },
			"paths[0]: path template \"/{**}/{*}\": operator after {**}"},
		{"template without operator", func(p *Policy) { match(p).NotPaths = []StringMatch{{Kind: Template, Value: "/a"}} },
			"not_paths[0]: path template \"/a\" has no {*} or {**} operator"},
		{"template in methods", func(p *Policy) { match(p).Methods = []StringMatch{{Kind: Template, Value: "/{*}"}} },
			"methods[0]: path template outside paths"},
		{"template in hosts", func(p *Policy) { match(p).NotHosts = []StringMatch{{Kind: Template, Value: "/{*}"}} },
			"not_hosts[0]: path template outside paths"},
		{"template in principals", func(p *Policy) { match(p).Principals = []StringMatch{{Kind: Template, Value: "/{*}"}} },
			"principals[0]: path template outside paths"},
		{"zero kind in hosts", func(p *Policy) { match(p).Hosts = []StringMatch{{}} }, "hosts[0]: unknown string match kind 0"},
		{"zero kind in methods", func(p *Policy) { match(p).NotMethods = []StringMatch{{}} }, "not_methods[0]: unknown string match kind 0"},
		{"empty header name", func(p *Policy) { match(p).Headers[0].Name = "" }, "headers[0]: empty header name"},
		{"upper-case header name", func(p *Policy) { match(p).Headers[1].Name = "X-User" },
			"headers[1]: header name \"X-User\": invalid character 'X'"},
		{"pseudo-header name", func(p *Policy) { match(p).Headers[0].Name = ":path" }, "header name \":path\": invalid character ':'"},
		{"header name with space", func(p *Policy) { match(p).Headers[0].Name = "x user" }, "invalid character ' '"},
		{"header without values", func(p *Policy) { match(p).Headers[0] = HeaderMatch{Name: "x"} },
			"headers[0]: header \"x\": no values and no not_values"},
		{"header value kind", func(p *Policy) { match(p).Headers[1].NotValues = []StringMatch{{Kind: 7}} },
			"headers[1]: header \"x-b_c.d~1\": not_values[0]: unknown string match kind 7"},
		{"header value template", func(p *Policy) { match(p).Headers[0].Values = []StringMatch{{Kind: Template, Value: "/{*}"}} },
			"values[0]: path template outside paths"},
		{"rules without matches", func(p *Policy) { p.Groups[1].Rules = append(p.Groups[1].Rules, Rules{}) },
			"groups[1].rules[1]: no matches"},
		{"zero string match", func(p *Policy) { match(p).Principals = []StringMatch{{}} },
			"groups[1].rules[0].matches[2].principals[0]: unknown string match kind 0"},
		{"unknown string match", func(p *Policy) { match(p).NotNamespaces = []StringMatch{{Kind: 9, Value: "x"}} },
			"not_namespaces[0]: unknown string match kind 9"},
		{"presence with value", func(p *Policy) { match(p).Namespaces = []StringMatch{{Kind: Presence, Value: "x"}} },
			"namespaces[0]: presence match with a value"},
		{"zero prefix", func(p *Policy) { match(p).SourceIPs = []netip.Prefix{{}} },
			"source_ips[0]: invalid IP prefix"},
		{"too long prefix", func(p *Policy) {
			match(p).NotDestinationIPs = []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 33)}
		}, "not_destination_ips[0]: invalid IP prefix"},
		{"port zero", func(p *Policy) { match(p).DestinationPorts = []uint32{0} },
			"destination_ports[0]: port 0 out of range 1-65535"},
		{"port too big", func(p *Policy) { match(p).NotDestinationPorts = []uint32{80, 65536} },
			"not_destination_ports[1]: port 65536 out of range 1-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid()
			tt.mutate(p)
			err := p.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate = nil, want error containing %q", tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate = %q, want it to contain %q", err, tt.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "policy \""):
				t.Fatalf("Validate = %q, want it to name the policy", err)
			}
		})
	}
	var nilPolicy *Policy
	if err := nilPolicy.Validate(); err == nil {
		t.Error("nil policy: Validate = nil")
	}
}

func TestStringMatch(t *testing.T) {
	tests := []struct {
		in   string
		want StringMatch
	}{
		{"*", StringMatch{Kind: Presence}},
		{"*/sa/sleep", StringMatch{Kind: Suffix, Value: "/sa/sleep"}},
		{"cluster.local/*", StringMatch{Kind: Prefix, Value: "cluster.local/"}},
		{"cluster.local/ns/a/sa/b", StringMatch{Kind: Exact, Value: "cluster.local/ns/a/sa/b"}},
		{"**", StringMatch{Kind: Suffix, Value: "*"}},
		{"*a*", StringMatch{Kind: Suffix, Value: "a*"}},
		{"", StringMatch{Kind: Exact}},
	}
	for _, tt := range tests {
		got := ParseStringMatch(tt.in)
		if got != tt.want {
			t.Errorf("ParseStringMatch(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseStringMatch(%q).String() = %q", tt.in, s)
		}
	}

	matches := []struct {
		m    StringMatch
		s    string
		want bool
	}{
		{StringMatch{Kind: Exact, Value: "foo"}, "foo", true},
		{StringMatch{Kind: Exact, Value: "foo"}, "foo2", false},
		{StringMatch{Kind: Exact, Value: "foo"}, "", false},
		{StringMatch{Kind: Prefix, Value: "foo"}, "foobar", true},
		{StringMatch{Kind: Prefix, Value: "foo"}, "barfoo", false},
		{StringMatch{Kind: Suffix, Value: "foo"}, "barfoo", true},
		{StringMatch{Kind: Suffix, Value: "foo"}, "foobar", false},
		{StringMatch{Kind: Presence}, "x", true},
		{StringMatch{Kind: Presence}, "", false},
		{StringMatch{Value: "foo"}, "foo", false},
	}
	for _, tt := range matches {
		if got := tt.m.Matches(tt.s); got != tt.want {
			t.Errorf("%v.Matches(%q) = %v, want %v", tt.m, tt.s, got, tt.want)
		}
	}
	if s := (StringMatch{Kind: 9, Value: "x"}).String(); s != `StringMatch(9, "x")` {
		t.Errorf("invalid kind String() = %q", s)
	}
}

func TestEnumStrings(t *testing.T) {
	for v, want := range map[string]string{
		Allow.String(): "ALLOW", Deny.String(): "DENY", Audit.String(): "AUDIT", Action(5).String(): "Action(5)",
		Global.String(): "GLOBAL", Namespace.String(): "NAMESPACE",
		WorkloadSelector.String(): "WORKLOAD_SELECTOR", Scope(5).String(): "Scope(5)",
	} {
		if v != want {
			t.Errorf("got %q, want %q", v, want)
		}
	}
}
