package policy

import (
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	sleepID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep")
	apiID   = spiffeid.RequireFromString("spiffe://other.td/ns/prod/sa/api")
	// oddID is a valid SPIFFE ID that is not of Istio's form: no namespace.
	oddID = spiffeid.RequireFromString("spiffe://cluster.local/workload/x")
)

// conn builds a Conn from addresses in text; peer may be the zero ID.
func conn(src, dst string, port uint16, peer spiffeid.ID) Conn {
	return Conn{SrcIP: netip.MustParseAddr(src), DstIP: netip.MustParseAddr(dst), DstPort: port, Peer: peer}
}

// Common connections: mTLS from sleep, mTLS from api, plaintext, odd peer.
var (
	fromSleep     = conn("10.0.0.1", "10.96.0.10", 8080, sleepID)
	fromAPI       = conn("192.168.1.5", "10.96.0.10", 8080, apiID)
	fromPlaintext = conn("10.0.0.1", "10.96.0.10", 8080, spiffeid.ID{})
	fromOdd       = conn("10.0.0.1", "10.96.0.10", 8080, oddID)
)

// pol builds a policy with one group holding one Rules of matches (ORed).
func pol(name string, a Action, ms ...Match) *Policy {
	return &Policy{Name: name, Namespace: "default", Scope: Namespace, Action: a,
		Groups: []Group{{Rules: []Rules{{Matches: ms}}}}}
}

func sm(s string) []StringMatch { return []StringMatch{ParseStringMatch(s)} }

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
