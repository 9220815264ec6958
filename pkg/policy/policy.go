package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Action is what a policy does to the connections it matches. The values are
// those of istio.security.Action.
type Action int

const (
	Allow Action = 0
	Deny  Action = 1
	// Audit flags the requests a policy matches; it never allows or denies
	// (see Audited). Its value is Istio's AuthorizationPolicy AUDIT.
	Audit Action = 2
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	case Audit:
		return "AUDIT"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Scope says which workloads a policy applies to. The values are those of
// istio.security.Scope.
type Scope int

const (
	// Global applies to every workload in the mesh. Only a policy in the root
	// namespace can be global; see Applicable.
	Global Scope = 0
	// Namespace applies to every workload in the policy's namespace.
	Namespace Scope = 1
	// WorkloadSelector applies to the workloads that list the policy's key.
	WorkloadSelector Scope = 2
)

func (s Scope) String() string {
	switch s {
	case Global:
		return "GLOBAL"
	case Namespace:
		return "NAMESPACE"
	case WorkloadSelector:
		return "WORKLOAD_SELECTOR"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Policy is one istio.security.Authorization.
type Policy struct {
	Name      string
	Namespace string
	Scope     Scope
	Action    Action
	// Groups are ORed. None means the policy matches nothing.
	Groups []Group
}

// Key returns "namespace/name", the form workloads use to list their
// policies and the form a Decision reports.
func (p *Policy) Key() string { return p.Namespace + "/" + p.Name }

// Group is one rule of an AuthorizationPolicy. Its Rules are ANDed; a group
// without Rules matches everything.
type Group struct {
	Rules []Rules
}

// Rules is one from, to or when clause. Its Matches are ORed; a Rules without
// Matches is treated as an unsupported condition.
type Rules struct {
	Matches []Match
}

// Match is a conjunction of conditions on the connection. Within a list,
// entries are ORed; an empty list is no condition. A Not list holds when none
// of its entries matches.
type Match struct {
	Namespaces    []StringMatch
	NotNamespaces []StringMatch

	Principals    []StringMatch
	NotPrincipals []StringMatch

	SourceIPs    []netip.Prefix
	NotSourceIPs []netip.Prefix

	DestinationIPs    []netip.Prefix
	NotDestinationIPs []netip.Prefix

	// Ports are uint32 as on the wire, so that Validate can reject values
	// out of range instead of truncating them.
	DestinationPorts    []uint32
	NotDestinationPorts []uint32

	// The L7 conditions below can only be checked for a Conn that carries
	// a Request; without one they count as unsupported (see the package
	// documentation).

	// Paths are compared with the normalized request path; they may hold
	// path templates (see ParsePathMatch).
	Paths    []StringMatch
	NotPaths []StringMatch

	// Methods are compared case-sensitively, as HTTP methods are.
	Methods    []StringMatch
	NotMethods []StringMatch

	// Hosts are compared case-insensitively with the request's authority,
	// and also with its host alone (see the package documentation).
	Hosts    []StringMatch
	NotHosts []StringMatch

	// Headers must each hold.
	Headers []HeaderMatch

	// Unsupported records that the source policy had further conditions here
	// that cannot be checked. Evaluation takes them as false in an ALLOW
	// policy and true in a DENY policy (see the package documentation).
	Unsupported bool
}

// HeaderMatch is one request.headers[Name] condition: it holds when the
// header's value matches an entry of Values (if any) and no entry of
// NotValues. A header sent several times is matched as its values joined
// with ",". A missing header matches no entry: it fails Values and passes
// NotValues. A Presence entry matches a header that is present, even empty.
type HeaderMatch struct {
	// Name is lower case. "host" is the request's authority.
	Name      string
	Values    []StringMatch
	NotValues []StringMatch
}

// hasL4 reports whether m has an L4 condition.
func (m *Match) hasL4() bool {
	return len(m.Namespaces) > 0 || len(m.NotNamespaces) > 0 ||
		len(m.Principals) > 0 || len(m.NotPrincipals) > 0 ||
		len(m.SourceIPs) > 0 || len(m.NotSourceIPs) > 0 ||
		len(m.DestinationIPs) > 0 || len(m.NotDestinationIPs) > 0 ||
		len(m.DestinationPorts) > 0 || len(m.NotDestinationPorts) > 0
}

// hasL7 reports whether m has a condition on the HTTP request.
func (m *Match) hasL7() bool {
	return len(m.Paths) > 0 || len(m.NotPaths) > 0 ||
		len(m.Methods) > 0 || len(m.NotMethods) > 0 ||
		len(m.Hosts) > 0 || len(m.NotHosts) > 0 ||
		len(m.Headers) > 0
}

// Validate reports the first problem found in p, naming the policy and the
// path to the offending field.
func (p *Policy) Validate() error {
	if p == nil {
		return errors.New("policy: nil policy")
	}
	if err := p.validate(); err != nil {
		return fmt.Errorf("policy %q: %w", p.Key(), err)
	}
	return nil
}

func (p *Policy) validate() error {
	if err := validName("name", p.Name); err != nil {
		return err
	}
	if err := validName("namespace", p.Namespace); err != nil {
		return err
	}
	switch p.Scope {
	case Global, Namespace, WorkloadSelector:
	default:
		return fmt.Errorf("unknown scope %d", int(p.Scope))
	}
	switch p.Action {
	case Allow, Deny, Audit:
	default:
		return fmt.Errorf("unknown action %d", int(p.Action))
	}
	for gi, g := range p.Groups {
		for ri, r := range g.Rules {
			if len(r.Matches) == 0 {
				return fmt.Errorf("groups[%d].rules[%d]: no matches", gi, ri)
			}
			for mi := range r.Matches {
				if err := r.Matches[mi].validate(); err != nil {
					return fmt.Errorf("groups[%d].rules[%d].matches[%d].%w", gi, ri, mi, err)
				}
			}
		}
	}
	return nil
}

func validName(field, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s", field)
	}
	// A slash would make Key ambiguous; Kubernetes names cannot hold one.
	if strings.Contains(s, "/") {
		return fmt.Errorf("%s %q contains '/'", field, s)
	}
	return nil
}

func (m *Match) validate() error {
	for _, f := range []struct {
		name      string
		v         []StringMatch
		templates bool
	}{
		{"namespaces", m.Namespaces, false},
		{"not_namespaces", m.NotNamespaces, false},
		{"principals", m.Principals, false},
		{"not_principals", m.NotPrincipals, false},
		{"paths", m.Paths, true},
		{"not_paths", m.NotPaths, true},
		{"methods", m.Methods, false},
		{"not_methods", m.NotMethods, false},
		{"hosts", m.Hosts, false},
		{"not_hosts", m.NotHosts, false},
	} {
		if err := validateStrings(f.name, f.v, f.templates); err != nil {
			return err
		}
	}
	for i := range m.Headers {
		if err := m.Headers[i].validate(); err != nil {
			return fmt.Errorf("headers[%d]: %w", i, err)
		}
	}
	for _, f := range []struct {
		name string
		v    []netip.Prefix
	}{
		{"source_ips", m.SourceIPs},
		{"not_source_ips", m.NotSourceIPs},
		{"destination_ips", m.DestinationIPs},
		{"not_destination_ips", m.NotDestinationIPs},
	} {
		for i, p := range f.v {
			if !p.IsValid() {
				return fmt.Errorf("%s[%d]: invalid IP prefix %v", f.name, i, p)
			}
		}
	}
	for _, f := range []struct {
		name string
		v    []uint32
	}{
		{"destination_ports", m.DestinationPorts},
		{"not_destination_ports", m.NotDestinationPorts},
	} {
		for i, p := range f.v {
			if p == 0 || p > 65535 {
				return fmt.Errorf("%s[%d]: port %d out of range 1-65535", f.name, i, p)
			}
		}
	}
	return nil
}

func validateStrings(field string, l []StringMatch, templates bool) error {
	for i, s := range l {
		if s.Kind == Template && !templates {
			return fmt.Errorf("%s[%d]: path template outside paths", field, i)
		}
		if err := s.validate(); err != nil {
			return fmt.Errorf("%s[%d]: %w", field, i, err)
		}
	}
	return nil
}

func (h *HeaderMatch) validate() error {
	if err := validHeaderName(h.Name); err != nil {
		return err
	}
	// Istio requires values or notValues; a condition with neither would
	// hold for every request, which is unlikely to be what was meant.
	if len(h.Values) == 0 && len(h.NotValues) == 0 {
		return fmt.Errorf("header %q: no values and no not_values", h.Name)
	}
	if err := validateStrings("values", h.Values, false); err != nil {
		return fmt.Errorf("header %q: %w", h.Name, err)
	}
	if err := validateStrings("not_values", h.NotValues, false); err != nil {
		return fmt.Errorf("header %q: %w", h.Name, err)
	}
	return nil
}

// validHeaderName accepts a lower-case field name (RFC 9110 token). Upper
// case is refused rather than folded so that the control plane's form and
// the one evaluated cannot differ; pseudo-headers (":path") are not tokens.
func validHeaderName(s string) error {
	if s == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isTokenChar(c) || ('A' <= c && c <= 'Z') {
			return fmt.Errorf("header name %q: invalid character %q", s, c)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
