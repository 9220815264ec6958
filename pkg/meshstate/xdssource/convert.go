package xdssource

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

func addr(b []byte) (netip.Addr, error) {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("address of %d bytes", len(b))
	}
	return a.Unmap(), nil
}

func port(p uint32) (uint16, error) {
	if p > 65535 {
		return 0, fmt.Errorf("port %d out of range", p)
	}
	return uint16(p), nil
}

func ports(in []*workloadapi.Port) ([]meshstate.Port, error) {
	out := make([]meshstate.Port, 0, len(in))
	for _, p := range in {
		sp, err := port(p.GetServicePort())
		if err != nil {
			return nil, err
		}
		tp, err := port(p.GetTargetPort())
		if err != nil {
			return nil, err
		}
		out = append(out, meshstate.Port{ServicePort: sp, TargetPort: tp})
	}
	return out, nil
}

func gateway(g *workloadapi.GatewayAddress) (*meshstate.GatewayAddress, error) {
	if g == nil {
		return nil, nil
	}
	hp, err := port(g.GetHboneMtlsPort())
	if err != nil {
		return nil, fmt.Errorf("waypoint: %w", err)
	}
	out := &meshstate.GatewayAddress{HBONEPort: hp}
	switch d := g.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Address:
		if out.Address, err = addr(d.Address.GetAddress()); err != nil {
			return nil, fmt.Errorf("waypoint: %w", err)
		}
	case *workloadapi.GatewayAddress_Hostname:
		out.Hostname = meshstate.NamespacedHostname{Namespace: d.Hostname.GetNamespace(), Hostname: d.Hostname.GetHostname()}
	default:
		return nil, fmt.Errorf("waypoint without a destination")
	}
	return out, nil
}

// workload converts an xDS workload; name is its resource name (the uid).
func workload(name string, w *workloadapi.Workload) (*meshstate.Workload, error) {
	out := &meshstate.Workload{
		UID:                   w.GetUid(),
		Name:                  w.GetName(),
		Namespace:             w.GetNamespace(),
		Node:                  w.GetNode(),
		TrustDomain:           w.GetTrustDomain(),
		ServiceAccount:        w.GetServiceAccount(),
		AuthorizationPolicies: w.GetAuthorizationPolicies(),
		Healthy:               w.GetStatus() == workloadapi.WorkloadStatus_HEALTHY,
		CanonicalName:         w.GetCanonicalName(),
		CanonicalRevision:     w.GetCanonicalRevision(),
		WorkloadName:          w.GetWorkloadName(),
		ClusterID:             w.GetClusterId(),
		HostNetwork:           w.GetNetworkMode() == workloadapi.NetworkMode_HOST_NETWORK,
	}
	if out.UID == "" {
		out.UID = name
	}
	if out.UID != name {
		return nil, fmt.Errorf("workload %s: resource named %q", out.UID, name)
	}
	switch w.GetTunnelProtocol() {
	case workloadapi.TunnelProtocol_NONE:
		out.Protocol = meshstate.TunnelNone
	case workloadapi.TunnelProtocol_HBONE:
		out.Protocol = meshstate.TunnelHBONE
	default:
		return nil, fmt.Errorf("workload %s: unknown tunnel protocol %v", name, w.GetTunnelProtocol())
	}
	for _, b := range w.GetAddresses() {
		a, err := addr(b)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", name, err)
		}
		out.Addresses = append(out.Addresses, a)
	}
	var err error
	if out.Waypoint, err = gateway(w.GetWaypoint()); err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	if len(w.GetServices()) > 0 {
		out.Services = make(map[string][]meshstate.Port, len(w.GetServices()))
		for key, pl := range w.GetServices() {
			if out.Services[key], err = ports(pl.GetPorts()); err != nil {
				return nil, fmt.Errorf("workload %s: service %s: %w", name, key, err)
			}
		}
	}
	return out, nil
}

// service converts an xDS service; name is its resource name
// ("<namespace>/<hostname>").
func service(name string, s *workloadapi.Service) (*meshstate.Service, error) {
	out := &meshstate.Service{
		Name:            s.GetName(),
		Namespace:       s.GetNamespace(),
		Hostname:        s.GetHostname(),
		SubjectAltNames: s.GetSubjectAltNames(),
	}
	if out.Key() != name {
		return nil, fmt.Errorf("service %s: resource named %q", out.Key(), name)
	}
	for _, na := range s.GetAddresses() {
		a, err := addr(na.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		out.Addresses = append(out.Addresses, a)
	}
	var err error
	if out.Ports, err = ports(s.GetPorts()); err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	if out.Waypoint, err = gateway(s.GetWaypoint()); err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	return out, nil
}

// unsupported is a condition that cannot be checked: false in an ALLOW
// policy, true in a DENY policy (see policy.Match.Unsupported).
func unsupported() policy.Rules {
	return policy.Rules{Matches: []policy.Match{{Unsupported: true}}}
}

// unknown reports whether m itself carries fields this ztunnel does not
// know (a newer control plane's).
func unknown(m proto.Message) bool { return len(m.ProtoReflect().GetUnknown()) > 0 }

// nestedUnknown reports whether a message held by m, at any depth, carries
// unknown fields.
func nestedUnknown(m protoreflect.Message) bool {
	found := false
	protorange.Range(m, func(v protopath.Values) error {
		if len(v.Path) == 1 {
			return nil // m itself
		}
		if nm, ok := v.Index(-1).Value.Interface().(protoreflect.Message); ok && len(nm.GetUnknown()) > 0 {
			found = true
			return protorange.Terminate
		}
		return nil
	})
	return found
}

// authorization converts an xDS policy; the result is validated.
//
// Fields this ztunnel does not know (sent by a newer control plane) may
// narrow what a rule matches, so ignoring them could widen an ALLOW policy.
// They fail closed, as conditions that cannot be checked: a group or rules
// with unknown fields becomes one unsupported condition (never true in
// ALLOW, always in DENY); a match with unknown fields of its own keeps its
// known conditions and is marked Unsupported; a match whose conditions
// hold unknown fields (a string match or address of a newer kind) is
// unsupported as a whole. Unknown fields of the policy itself make the
// whole policy one unsupported condition.
func authorization(name string, a *securityapi.Authorization) (*policy.Policy, error) {
	p := &policy.Policy{
		Name:      a.GetName(),
		Namespace: a.GetNamespace(),
		Scope:     policy.Scope(a.GetScope()),
		Action:    policy.Action(a.GetAction()),
	}
	if p.Key() != name {
		return nil, fmt.Errorf("policy %s: resource named %q", p.Key(), name)
	}
	// The workload API has ALLOW and DENY only. pkg/policy also knows
	// AUDIT (the waypoint's), which decides nothing: an unknown action on
	// the wire must not become one that allows.
	if act := a.GetAction(); act != securityapi.Action_ALLOW && act != securityapi.Action_DENY {
		return nil, fmt.Errorf("policy %s: unknown action %d", name, act)
	}
	if unknown(a) {
		p.Groups = []policy.Group{{Rules: []policy.Rules{unsupported()}}}
		if err := p.Validate(); err != nil {
			return nil, err
		}
		return p, nil
	}
	for _, g := range a.GetGroups() {
		if unknown(g) {
			p.Groups = append(p.Groups, policy.Group{Rules: []policy.Rules{unsupported()}})
			continue
		}
		var pg policy.Group
		for _, r := range g.GetRules() {
			if unknown(r) {
				pg.Rules = append(pg.Rules, unsupported())
				continue
			}
			var pr policy.Rules
			for _, m := range r.GetMatches() {
				pm, err := ConvertMatch(m)
				if err != nil {
					return nil, fmt.Errorf("policy %s: %w", name, err)
				}
				pr.Matches = append(pr.Matches, pm)
			}
			pg.Rules = append(pg.Rules, pr)
		}
		p.Groups = append(p.Groups, pg)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// ConvertMatch converts the L4 conditions of an xDS policy match. A match
// that carries fields this build does not know fails closed: unknown fields
// of m itself keep its known conditions and set Unsupported; unknown
// fields inside a condition (a string match or address of a newer kind)
// make the whole match one Unsupported condition. The result is not
// validated; see policy.Policy.Validate.
func ConvertMatch(m *securityapi.Match) (policy.Match, error) {
	if nestedUnknown(m.ProtoReflect()) {
		// A condition of a kind this ztunnel cannot read.
		return policy.Match{Unsupported: true}, nil
	}
	out := policy.Match{
		Unsupported:         unknown(m),
		Namespaces:          ConvertStringMatches(m.GetNamespaces()),
		NotNamespaces:       ConvertStringMatches(m.GetNotNamespaces()),
		Principals:          ConvertStringMatches(m.GetPrincipals()),
		NotPrincipals:       ConvertStringMatches(m.GetNotPrincipals()),
		DestinationPorts:    m.GetDestinationPorts(),
		NotDestinationPorts: m.GetNotDestinationPorts(),
	}
	var err error
	for _, l := range []struct {
		in  []*securityapi.Address
		out *[]netip.Prefix
	}{
		{m.GetSourceIps(), &out.SourceIPs},
		{m.GetNotSourceIps(), &out.NotSourceIPs},
		{m.GetDestinationIps(), &out.DestinationIPs},
		{m.GetNotDestinationIps(), &out.NotDestinationIPs},
	} {
		for _, a := range l.in {
			ip, aerr := addr(a.GetAddress())
			if aerr != nil {
				return policy.Match{}, aerr
			}
			if a.GetLength() > uint32(ip.BitLen()) {
				return policy.Match{}, fmt.Errorf("prefix length %d for %v", a.GetLength(), ip)
			}
			var p netip.Prefix
			if p, err = ip.Prefix(int(a.GetLength())); err != nil {
				return policy.Match{}, err
			}
			*l.out = append(*l.out, p)
		}
	}
	return out, nil
}

// ConvertStringMatches converts xDS string matches, nil for none. A match
// of no known kind becomes an invalid policy.StringMatch, which matches
// nothing and fails validation; callers that must tolerate a newer
// control plane's kinds look for unknown fields first, as ConvertMatch
// does.
func ConvertStringMatches(in []*securityapi.StringMatch) []policy.StringMatch {
	out := make([]policy.StringMatch, 0, len(in))
	for _, m := range in {
		switch v := m.GetMatchType().(type) {
		case *securityapi.StringMatch_Exact:
			out = append(out, policy.StringMatch{Kind: policy.Exact, Value: v.Exact})
		case *securityapi.StringMatch_Prefix:
			out = append(out, policy.StringMatch{Kind: policy.Prefix, Value: v.Prefix})
		case *securityapi.StringMatch_Suffix:
			out = append(out, policy.StringMatch{Kind: policy.Suffix, Value: v.Suffix})
		case *securityapi.StringMatch_Presence:
			out = append(out, policy.StringMatch{Kind: policy.Presence})
		default:
			// An empty match matches nothing: an unknown kind never widens.
			out = append(out, policy.StringMatch{Kind: policy.MatchKind(255)})
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
