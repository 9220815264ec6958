package policy

import (
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Conn is what L4 authorization knows about a connection.
type Conn struct {
	SrcIP   netip.Addr
	DstIP   netip.Addr
	DstPort uint16
	// Peer is the source's authenticated identity; the zero ID for plaintext.
	Peer spiffeid.ID
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Allowed bool
	// Policy is the key ("namespace/name") of the policy that decided, or ""
	// when no single policy did (no ALLOW policy, or none matched).
	Policy string
	// Reason is a short fixed phrase, suitable for logs and metric labels.
	Reason string
}

const (
	reasonDenyMatched   = "matched DENY policy"
	reasonAllowMatched  = "matched ALLOW policy"
	reasonNoAllowPolicy = "no ALLOW policy"
	reasonNoAllowMatch  = "no ALLOW policy matched"
	reasonBadAction     = "policy has unknown action"
)

// Evaluate decides whether c may reach a workload to which policies apply
// (see Applicable). A matching DENY policy denies; with no ALLOW policy the
// connection is allowed; otherwise it is allowed only if an ALLOW policy
// matches. A policy with an unknown action denies every connection, so a bad
// policy cannot widen access. Nil entries are skipped.
func Evaluate(policies []*Policy, c Conn) Decision {
	cc := newConn(c)
	haveAllow := false
	for _, p := range policies {
		if p == nil {
			continue
		}
		switch p.Action {
		case Allow:
			haveAllow = true
		case Deny:
			if p.matches(&cc) {
				return Decision{Policy: p.Key(), Reason: reasonDenyMatched}
			}
		default:
			return Decision{Policy: p.Key(), Reason: reasonBadAction}
		}
	}
	if !haveAllow {
		return Decision{Allowed: true, Reason: reasonNoAllowPolicy}
	}
	for _, p := range policies {
		if p != nil && p.Action == Allow && p.matches(&cc) {
			return Decision{Allowed: true, Policy: p.Key(), Reason: reasonAllowMatched}
		}
	}
	return Decision{Reason: reasonNoAllowMatch}
}

// Matches reports whether p matches c. Unsupported conditions count as false
// for an ALLOW policy and true for any other.
func (p *Policy) Matches(c Conn) bool {
	cc := newConn(c)
	return p.matches(&cc)
}

// Applicable returns, in order, the policies of all that apply to a workload
// in workloadNamespace whose xDS entry lists workloadPolicyNames (as
// "namespace/name"). A Global policy applies everywhere only if it lives in
// rootNamespace; elsewhere it is narrowed to its own namespace, so a policy
// cannot reach across namespaces by its scope alone. An unknown scope is
// treated the same way.
func Applicable(all []*Policy, workloadNamespace string, workloadPolicyNames []string, rootNamespace string) []*Policy {
	var out []*Policy
	for _, p := range all {
		if p != nil && applies(p, workloadNamespace, workloadPolicyNames, rootNamespace) {
			out = append(out, p)
		}
	}
	return out
}

func applies(p *Policy, ns string, names []string, root string) bool {
	switch p.Scope {
	case Global:
		return (root != "" && p.Namespace == root) || p.Namespace == ns
	case WorkloadSelector:
		for _, n := range names {
			// Compare the parts rather than build p.Key(): no allocation.
			pns, pname, ok := strings.Cut(n, "/")
			if ok && pns == p.Namespace && pname == p.Name {
				return true
			}
		}
		return false
	}
	return p.Namespace == ns
}

// prepared is Conn prepared once for matching against many policies.
type prepared struct {
	src, dst  netip.Addr
	port      uint32
	peer      bool
	principal string // without "spiffe://"
	namespace string
	hasNS     bool
}

func newConn(c Conn) prepared {
	// Unmap so that a v4-mapped v6 address matches IPv4 blocks; drop zones,
	// which netip.Prefix.Contains would refuse.
	cc := prepared{
		src:  c.SrcIP.Unmap().WithZone(""),
		dst:  c.DstIP.Unmap().WithZone(""),
		port: uint32(c.DstPort),
	}
	if !c.Peer.IsZero() {
		cc.peer = true
		cc.principal = strings.TrimPrefix(c.Peer.String(), "spiffe://")
		cc.namespace, cc.hasNS = namespaceOf(c.Peer.Path())
	}
	return cc
}

// namespaceOf extracts <ns> from an Istio identity path /ns/<ns>/sa/<sa>.
func namespaceOf(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/ns/")
	if !ok {
		return "", false
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(ns, "/") || strings.Contains(sa, "/") {
		return "", false
	}
	return ns, true
}

func (p *Policy) matches(c *prepared) bool {
	// Conditions that cannot be checked count as false in ALLOW and true
	// otherwise, which keeps each policy at least as strict as written.
	unknown := p.Action != Allow
	for i := range p.Groups {
		if p.Groups[i].matches(c, unknown) {
			return true
		}
	}
	return false
}

func (g *Group) matches(c *prepared, unknown bool) bool {
	for i := range g.Rules {
		if !g.Rules[i].matches(c, unknown) {
			return false
		}
	}
	return true
}

func (r *Rules) matches(c *prepared, unknown bool) bool {
	if len(r.Matches) == 0 {
		return unknown
	}
	for i := range r.Matches {
		if r.Matches[i].matches(c, unknown) {
			return true
		}
	}
	return false
}

func (m *Match) matches(c *prepared, unknown bool) bool {
	if (m.Unsupported || m.empty()) && !unknown {
		return false
	}
	// Here the unchecked part, if any, counts as true: only L4 remains.
	return matchStrings(m.Namespaces, m.NotNamespaces, c.namespace, c.hasNS) &&
		matchStrings(m.Principals, m.NotPrincipals, c.principal, c.peer) &&
		matchIPs(m.SourceIPs, m.NotSourceIPs, c.src) &&
		matchIPs(m.DestinationIPs, m.NotDestinationIPs, c.dst) &&
		matchPorts(m.DestinationPorts, m.NotDestinationPorts, c.port)
}

// matchStrings checks an attribute that may be absent (ok false); an absent
// attribute matches no entry of either list.
func matchStrings(pos, neg []StringMatch, v string, ok bool) bool {
	if len(pos) > 0 && !(ok && anyString(pos, v)) {
		return false
	}
	return !(ok && anyString(neg, v))
}

func anyString(l []StringMatch, v string) bool {
	for _, m := range l {
		if m.Matches(v) {
			return true
		}
	}
	return false
}

func matchIPs(pos, neg []netip.Prefix, a netip.Addr) bool {
	if len(pos) > 0 && !anyIP(pos, a) {
		return false
	}
	return !anyIP(neg, a)
}

func anyIP(l []netip.Prefix, a netip.Addr) bool {
	for _, p := range l {
		// A v4-mapped v6 block is the IPv4 block it maps; a is unmapped too.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func matchPorts(pos, neg []uint32, port uint32) bool {
	if len(pos) > 0 && !anyPort(pos, port) {
		return false
	}
	return !anyPort(neg, port)
}

func anyPort(l []uint32, port uint32) bool {
	for _, p := range l {
		if p == port {
			return true
		}
	}
	return false
}
