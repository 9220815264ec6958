package authz

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// ism converts a value as written in an AuthorizationPolicy, the way the
// control plane sends it.
func ism(v string) *securityapi.StringMatch {
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

func isms(vs ...string) []*securityapi.StringMatch {
	out := make([]*securityapi.StringMatch, len(vs))
	for i, v := range vs {
		out[i] = ism(v)
	}
	return out
}

func psm(vs ...string) []policy.StringMatch {
	out := make([]policy.StringMatch, len(vs))
	for i, v := range vs {
		out[i] = policy.ParseStringMatch(v)
	}
	return out
}

// l7 builds a policy of one group of one rules holding ms.
func l7(name string, action securityapi.Action, ms ...*waypointapi.L7Match) *waypointapi.L7Authorization {
	return &waypointapi.L7Authorization{Name: name, Namespace: "default", Action: action,
		Groups: []*waypointapi.L7Group{{Rules: []*waypointapi.L7Rules{{Matches: ms}}}}}
}

// mustCompile compiles each policy or fails the test.
func mustCompile(t testing.TB, ps ...*waypointapi.L7Authorization) []*policy.Policy {
	t.Helper()
	out := make([]*policy.Policy, len(ps))
	for i, p := range ps {
		cp, err := Compile(p)
		if err != nil {
			t.Fatalf("Compile(%v): %v", p, err)
		}
		out[i] = cp
	}
	return out
}

// withUnknown returns a copy of m carrying a field of number num that this
// build does not know, as a newer control plane would send.
func withUnknown[M proto.Message](t testing.TB, m M, num protowire.Number) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("new"))
	out := proto.Clone(m).(M)
	proto.Reset(out)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

var sleepID = spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/sleep")

// request is a request from sleep to 10.96.0.10:8080; hdr is name, value
// pairs.
func request(method, path, host string, hdr ...string) policy.Conn {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Add(hdr[i], hdr[i+1])
	}
	c := tcpConn()
	c.Request = &policy.Request{Method: method, Path: path, Host: host, Header: h}
	return c
}

// tcpConn is a connection from sleep without an HTTP request.
func tcpConn() policy.Conn {
	return policy.Conn{SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.96.0.10"), DstPort: 8080, Peer: sleepID}
}
