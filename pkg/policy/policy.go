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
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
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

	// Unsupported records that the source policy had further conditions here
	// that cannot be checked at L4. Evaluation takes them as false in an ALLOW
	// policy and true in a DENY policy (see the package documentation).
	Unsupported bool
}

// empty reports whether m has no L4 condition.
func (m *Match) empty() bool {
	return len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 &&
		len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.SourceIPs) == 0 && len(m.NotSourceIPs) == 0 &&
		len(m.DestinationIPs) == 0 && len(m.NotDestinationIPs) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0
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
	case Allow, Deny:
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
		name string
		v    []StringMatch
	}{
		{"namespaces", m.Namespaces},
		{"not_namespaces", m.NotNamespaces},
		{"principals", m.Principals},
		{"not_principals", m.NotPrincipals},
	} {
		for i, s := range f.v {
			if err := s.validate(); err != nil {
				return fmt.Errorf("%s[%d]: %w", f.name, i, err)
			}
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
