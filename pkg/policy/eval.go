package policy

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Conn is what authorization knows about a connection, and for the
// waypoint, about the HTTP request on it.
type Conn struct {
	SrcIP   netip.Addr
	DstIP   netip.Addr
	DstPort uint16
	// Peer is the source's authenticated identity; the zero ID for plaintext.
	Peer spiffeid.ID
	// Request is the HTTP request being authorized, or nil for a plain
	// connection (ztunnel, or TCP through the waypoint). Without it, L7
	// conditions cannot be checked and count as unsupported.
	Request *Request
}

// Request is what L7 authorization knows about an HTTP request.
type Request struct {
	// Method as sent; compared case-sensitively.
	Method string
	// Path is the normalized escaped path, without query: the one the
	// backend is sent. Matching an unnormalized path lets encoded or
	// dotted variants slip past path rules.
	Path string
	// Host is the authority as received (Host header or :authority), with
	// its port if the client sent one: values naming a port are compared
	// with it, and values without one with the host alone.
	Host string
	// Header holds the request's header fields as received. Keys are
	// compared case-insensitively; a "host" condition reads Host instead.
	Header http.Header
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
// matches. AUDIT policies take no part (see Audited). A policy with an
// unknown action denies every connection, so a bad policy cannot widen
// access. Nil entries are skipped.
func Evaluate(policies []*Policy, c Conn) Decision {
	return EvaluateAll(c, policies)
}

// EvaluateAll is Evaluate over the union of sets, for a destination that
// several sets of policies apply to (the waypoint's and a service's). It
// does not allocate when the sets hold no ALLOW or DENY policy.
func EvaluateAll(c Conn, sets ...[]*Policy) Decision {
	lc := lazyConn{c: c}
	haveAllow := false
	for _, ps := range sets {
		for _, p := range ps {
			if p == nil {
				continue
			}
			switch p.Action {
			case Allow:
				haveAllow = true
			case Deny:
				if p.matches(lc.get()) {
					return Decision{Policy: p.Key(), Reason: reasonDenyMatched}
				}
			case Audit:
			default:
				return Decision{Policy: p.Key(), Reason: reasonBadAction}
			}
		}
	}
	if !haveAllow {
		return Decision{Allowed: true, Reason: reasonNoAllowPolicy}
	}
	for _, ps := range sets {
		for _, p := range ps {
			if p != nil && p.Action == Allow && p.matches(lc.get()) {
				return Decision{Allowed: true, Policy: p.Key(), Reason: reasonAllowMatched}
			}
		}
	}
	return Decision{Reason: reasonNoAllowMatch}
}

// Audited returns, in order, the keys of the AUDIT policies in sets that
// match c, or nil if none does. As in a DENY policy, conditions that cannot
// be checked count as true: an audit log errs towards flagging. It does not
// allocate when the sets hold no AUDIT policy.
func Audited(c Conn, sets ...[]*Policy) []string {
	lc := lazyConn{c: c}
	var out []string
	for _, ps := range sets {
		for _, p := range ps {
			if p != nil && p.Action == Audit && p.matches(lc.get()) {
				out = append(out, p.Key())
			}
		}
	}
	return out
}

// lazyConn prepares a Conn on first use, so that a set without policies to
// match costs nothing.
type lazyConn struct {
	c     Conn
	p     prepared
	ready bool
}

func (l *lazyConn) get() *prepared {
	if !l.ready {
		l.p, l.ready = newConn(l.c), true
	}
	return &l.p
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
	req       *Request
	host      string // req.Host without port or trailing dot
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
	if c.Request != nil {
		cc.req = c.Request
		cc.host = hostOnly(c.Request.Host)
	}
	return cc
}

// hostOnly returns the host of an authority: without a port (digits after
// the last colon, unless that colon is inside an IPv6 literal) and without
// one trailing dot, which names the same host.
func hostOnly(a string) string {
	if i := strings.LastIndexByte(a, ':'); i >= 0 && allDigits(a[i+1:]) {
		// In "[::1]:80" the part before the port ends with ']'; a bare
		// "::1" is an address, not a host and port.
		if h := a[:i]; !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
			a = h
		}
	}
	if len(a) > 1 && a[len(a)-1] == '.' {
		a = a[:len(a)-1]
	}
	return a
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
	l7 := m.hasL7()
	if !unknown && (m.Unsupported || (!l7 && !m.hasL4()) || (l7 && c.req == nil)) {
		return false
	}
	// Here the unchecked part, if any, counts as true: what can be checked
	// decides.
	if !(matchStrings(m.Namespaces, m.NotNamespaces, c.namespace, c.hasNS) &&
		matchStrings(m.Principals, m.NotPrincipals, c.principal, c.peer) &&
		matchIPs(m.SourceIPs, m.NotSourceIPs, c.src) &&
		matchIPs(m.DestinationIPs, m.NotDestinationIPs, c.dst) &&
		matchPorts(m.DestinationPorts, m.NotDestinationPorts, c.port)) {
		return false
	}
	if c.req == nil || !l7 {
		return true
	}
	return matchStrings(m.Paths, m.NotPaths, c.req.Path, true) &&
		matchStrings(m.Methods, m.NotMethods, c.req.Method, true) &&
		matchHosts(m.Hosts, m.NotHosts, c) &&
		matchHeaders(m.Headers, c)
}

// matchHosts checks hosts against the authority as sent and against the
// host alone, so that "example.com" matches "Example.com:8080" (Istio
// compares the whole authority and documents listing "example.com:*"
// too), while values naming a port ("example.com:8080", "example.com:*")
// are compared with the authority as Istio compares them.
func matchHosts(pos, neg []StringMatch, c *prepared) bool {
	ok := c.req.Host != ""
	if len(pos) > 0 && !(ok && anyHost(pos, c)) {
		return false
	}
	return !(ok && anyHost(neg, c))
}

func anyHost(l []StringMatch, c *prepared) bool {
	for _, m := range l {
		if m.matchesFold(c.req.Host) || (c.host != c.req.Host && m.matchesFold(c.host)) {
			return true
		}
	}
	return false
}

func matchHeaders(hs []HeaderMatch, c *prepared) bool {
	for i := range hs {
		h := &hs[i]
		v, ok := c.header(h.Name)
		if len(h.Values) > 0 && !(ok && anyHeaderValue(h.Values, v)) {
			return false
		}
		if ok && anyHeaderValue(h.NotValues, v) {
			return false
		}
	}
	return true
}

func anyHeaderValue(l []StringMatch, v string) bool {
	for _, m := range l {
		// Presence means the header is there, as Envoy's present_match,
		// even with an empty value.
		if m.Kind == Presence || m.Matches(v) {
			return true
		}
	}
	return false
}

// header returns the value of the request header name (lower case) and
// whether it is present. Several fields of that name are joined with ",",
// as Envoy joins them for matching. Keys are compared case-insensitively,
// so a header map built without canonical keys cannot hide a field.
func (c *prepared) header(name string) (string, bool) {
	if name == "host" {
		return c.req.Host, c.req.Host != ""
	}
	var key string
	n := 0
	for k := range c.req.Header {
		if asciiEqualFold(k, name) {
			key = k
			n++
		}
	}
	var vs []string
	switch n {
	case 0:
		return "", false
	case 1:
		vs = c.req.Header[key]
	default:
		// Rare (a hand-built map): take every key's values, in key order
		// so that the result does not depend on map iteration.
		var keys []string
		for k := range c.req.Header {
			if asciiEqualFold(k, name) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			vs = append(vs, c.req.Header[k]...)
		}
	}
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
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
