package index

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
)

// translatable reports whether ztunnel enforces p: ALLOW or DENY, attached
// by selector or namespace rather than to a waypoint.
//
// AUDIT and CUSTOM policies are not for ztunnel, as in Istio, whose
// control plane sends ztunnel neither and reports "ztunnel does not support
// the AUDIT/CUSTOM action" in the policy's status (ZtunnelSupport says the
// same here): ztunnel keeps no audit log, and it has no external
// authorizer to ask. Ignoring AUDIT changes no decision; ignoring CUSTOM
// means that a selector policy with that action does not restrict anything,
// so its status says so and points to a waypoint, where Skiff enforces
// CUSTOM as DENY (translateL7).
func translatable(p *securityv1.AuthorizationPolicy) bool {
	if hasTargets(p) {
		return false
	}
	switch p.Spec.Action {
	case "", securityv1.ActionAllow, securityv1.ActionDeny:
		return true
	}
	return false
}

// translateL4 turns a policy into ztunnel's L4 form, or nil when ztunnel
// does not enforce it. Attributes ztunnel cannot check are handled the way
// Istio does, never more permissively than written: in an ALLOW policy a rule
// using them is dropped (it can never match); in a DENY policy they are left
// out, so the rule matches on its L4 conditions alone (all traffic if none).
// Values that do not parse are treated as such attributes.
func translateL4(p *securityv1.AuthorizationPolicy, rootNS string) *securityapi.Authorization {
	if !translatable(p) {
		return nil
	}
	a := &securityapi.Authorization{Name: p.Name, Namespace: p.Namespace, Action: securityapi.Action_ALLOW}
	deny := p.Spec.Action == securityv1.ActionDeny
	if deny {
		a.Action = securityapi.Action_DENY
	}
	switch {
	case selectorOf(p) != nil:
		a.Scope = securityapi.Scope_WORKLOAD_SELECTOR
	case p.Namespace == rootNS:
		a.Scope = securityapi.Scope_GLOBAL
	default:
		a.Scope = securityapi.Scope_NAMESPACE
	}
	for _, r := range p.Spec.Rules {
		g, l7 := l4Group(r)
		if l7 && !deny {
			continue
		}
		a.Groups = append(a.Groups, g)
	}
	return a
}

// l4Group translates a rule; l7 reports that it used attributes (or
// values) that could not be expressed at L4.
func l4Group(r securityv1.Rule) (g *securityapi.Group, l7 bool) {
	g = &securityapi.Group{}
	if len(r.From) > 0 {
		rules := &securityapi.Rules{}
		for _, f := range r.From {
			m, unsupported := sourceMatch(f.Source)
			l7 = l7 || unsupported
			rules.Matches = append(rules.Matches, m)
		}
		g.Rules = append(g.Rules, rules)
	}
	if len(r.To) > 0 {
		rules := &securityapi.Rules{}
		for _, t := range r.To {
			m, unsupported := operationMatch(t.Operation)
			l7 = l7 || unsupported
			rules.Matches = append(rules.Matches, m)
		}
		g.Rules = append(g.Rules, rules)
	}
	for _, c := range r.When {
		m, unsupported := conditionMatch(c)
		l7 = l7 || unsupported
		g.Rules = append(g.Rules, &securityapi.Rules{Matches: []*securityapi.Match{m}})
	}
	return g, l7
}

func sourceMatch(s *securityv1.Source) (*securityapi.Match, bool) {
	m := &securityapi.Match{}
	if s == nil {
		return m, false
	}
	l7 := len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+len(s.RemoteIPBlocks)+len(s.NotRemoteIPBlocks) > 0
	m.Principals = stringMatches(s.Principals)
	m.NotPrincipals = stringMatches(s.NotPrincipals)
	m.Namespaces = stringMatches(s.Namespaces)
	m.NotNamespaces = stringMatches(s.NotNamespaces)
	var bad bool
	m.SourceIps, bad = cidrs(s.IPBlocks)
	l7 = l7 || bad
	m.NotSourceIps, bad = cidrs(s.NotIPBlocks)
	return m, l7 || bad
}

func operationMatch(o *securityv1.Operation) (*securityapi.Match, bool) {
	m := &securityapi.Match{}
	if o == nil {
		return m, false
	}
	l7 := len(o.Hosts)+len(o.NotHosts)+len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths) > 0
	var bad bool
	m.DestinationPorts, bad = ports(o.Ports)
	l7 = l7 || bad
	m.NotDestinationPorts, bad = ports(o.NotPorts)
	return m, l7 || bad
}

func conditionMatch(c securityv1.Condition) (*securityapi.Match, bool) {
	m := &securityapi.Match{}
	var bad, bad2 bool
	switch c.Key {
	case "source.ip":
		m.SourceIps, bad = cidrs(c.Values)
		m.NotSourceIps, bad2 = cidrs(c.NotValues)
	case "destination.ip":
		m.DestinationIps, bad = cidrs(c.Values)
		m.NotDestinationIps, bad2 = cidrs(c.NotValues)
	case "destination.port":
		m.DestinationPorts, bad = ports(c.Values)
		m.NotDestinationPorts, bad2 = ports(c.NotValues)
	case "source.namespace":
		m.Namespaces, m.NotNamespaces = stringMatches(c.Values), stringMatches(c.NotValues)
	case "source.principal":
		m.Principals, m.NotPrincipals = stringMatches(c.Values), stringMatches(c.NotValues)
	default:
		return &securityapi.Match{}, true
	}
	return m, bad || bad2
}

// StringMatch converts Istio's string syntax: "*" any non-empty value,
// "*x" suffix, "x*" prefix, otherwise exact.
func StringMatch(v string) *securityapi.StringMatch {
	switch {
	case v == "*":
		return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Presence{Presence: &emptypb.Empty{}}}
	case strings.HasPrefix(v, "*"):
		return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Prefix{Prefix: v[:len(v)-1]}}
	}
	return &securityapi.StringMatch{MatchType: &securityapi.StringMatch_Exact{Exact: v}}
}

func stringMatches(vs []string) []*securityapi.StringMatch {
	var out []*securityapi.StringMatch
	for _, v := range vs {
		out = append(out, StringMatch(v))
	}
	return out
}

// cidrs parses IPs and CIDRs; bad reports a value that does not parse
// (which is left out).
func cidrs(vs []string) (out []*securityapi.Address, bad bool) {
	for _, v := range vs {
		p, err := parseCIDR(v)
		if err != nil {
			bad = true
			continue
		}
		p = p.Masked()
		out = append(out, &securityapi.Address{Address: addrBytes(p.Addr()), Length: uint32(p.Bits())})
	}
	return out, bad
}

// parseCIDR reads an IP address (a single-address prefix) or a CIDR.
func parseCIDR(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		return netip.ParsePrefix(v)
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func ports(vs []string) (out []uint32, bad bool) {
	for _, v := range vs {
		n, ok := parsePort(v)
		if !ok {
			bad = true
			continue
		}
		out = append(out, n)
	}
	return out, bad
}

// parsePort reads a port number, 1 to 65535.
func parsePort(v string) (uint32, bool) {
	n, err := strconv.ParseUint(v, 10, 16)
	return uint32(n), err == nil && n != 0
}

func validCIDR(v string) bool { _, err := parseCIDR(v); return err == nil }

func validPort(v string) bool { _, ok := parsePort(v); return ok }

// firstBad returns the first of vs that valid refuses.
func firstBad(vs []string, valid func(string) bool) (string, bool) {
	for _, v := range vs {
		if !valid(v) {
			return v, true
		}
	}
	return "", false
}

// ZtunnelSupport reports whether ztunnel enforces p as written and, when
// it does not, what it does instead (for the policy's status).
func ZtunnelSupport(p *securityv1.AuthorizationPolicy) (ok bool, message string) {
	switch p.Spec.Action {
	case "", securityv1.ActionAllow, securityv1.ActionDeny:
	case securityv1.ActionAudit:
		return false, "ztunnel does not support the AUDIT action; the policy is ignored. Attach it to a waypoint (targetRefs) to flag the requests it matches."
	case securityv1.ActionCustom:
		return false, "ztunnel does not support the CUSTOM action; the policy is ignored. Skiff has no external authorizer: attached to a waypoint (targetRefs), the policy denies the requests its rules match."
	default:
		return false, "action " + string(p.Spec.Action) + " is not supported; the policy is ignored"
	}
	for _, r := range p.Spec.Rules {
		if _, l7 := l4Group(r); l7 {
			if p.Spec.Action == securityv1.ActionDeny {
				return false, "ztunnel cannot check HTTP attributes, JWT principals, remote IPs or some values; it denies on the other conditions of those rules alone, which is broader than requested. Use a waypoint for HTTP rules."
			}
			return false, "ztunnel cannot check HTTP attributes, JWT principals, remote IPs or some values; rules using them are left out of this ALLOW policy, which is stricter than requested. Use a waypoint for HTTP rules."
		}
	}
	return true, ""
}

// WaypointSupport reports whether the waypoint enforces p (a policy with
// targetRefs) as written and, when it does not, what it does instead (for
// the policy's status). The waypoint enforces ALLOW, DENY and AUDIT; it
// denies what a CUSTOM policy matches, since Skiff has no external
// authorizer; and it cannot check request principals (JWT), conditions
// it does not know, values that do not parse, path templates Istio would
// refuse, or header conditions without values: translateL7 leaves those
// out, and the message names each.
func WaypointSupport(p *securityv1.AuthorizationPolicy) (ok bool, message string) {
	var parts []string
	switch p.Spec.Action {
	case "", securityv1.ActionAllow, securityv1.ActionDeny, securityv1.ActionAudit:
	case securityv1.ActionCustom:
		parts = append(parts, "Skiff has no external authorizer: this CUSTOM policy is enforced as DENY, so the requests its rules match are denied.")
	default:
		parts = append(parts, "action "+string(p.Spec.Action)+" is not supported; the policy is enforced as DENY.")
	}
	var problems []string
	for i, r := range p.Spec.Rules {
		_, ps := l7Group(r)
		for _, pr := range ps {
			problems = append(problems, fmt.Sprintf("rules[%d].%s", i, pr))
		}
	}
	if len(problems) > 0 {
		what := "The waypoint cannot check " + strings.Join(problems, "; ")
		if p.Spec.Action == "" || p.Spec.Action == securityv1.ActionAllow {
			what += ". Rules using them are left out of this ALLOW policy, which is stricter than requested."
		} else {
			what += ". It matches on the other conditions of those rules alone, which is broader than requested."
		}
		parts = append(parts, what)
	}
	return len(parts) == 0, strings.Join(parts, " ")
}
