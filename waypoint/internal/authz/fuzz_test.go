package authz

import (
	"net/netip"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protopath"
	"google.golang.org/protobuf/reflect/protorange"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// fuzzConns are connections and requests the compiled policies are
// checked against.
func fuzzConns() []policy.Conn {
	api := spiffeid.RequireFromString("spiffe://cluster.local/ns/prod/sa/api")
	plain := tcpConn()
	plain.Peer = spiffeid.ID{}
	fromAPI := request("POST", "/api/x", "Example.com:8080", "X-User", "admin", "X-User", "bob")
	fromAPI.Peer, fromAPI.SrcIP = api, netip.MustParseAddr("192.168.1.1")
	return []policy.Conn{
		tcpConn(), plain,
		request("GET", "/admin", "example.com"),
		request("GET", "/admin/x", "a.example.com", "X-User", "admin"),
		request("DELETE", "/files/a/b", "h:80", "X-Token", ""),
		request("get", "/", ""),
		fromAPI,
	}
}

// FuzzCompile feeds arbitrary policies to Compile: it returns a valid
// policy or an error, never panics, and what it compiles fails closed. An
// ALLOW policy matches a connection without its request only if it matches
// with it, and a DENY or AUDIT policy the other way round. Adding a field
// this build does not know, to any message of the policy, may only narrow
// an ALLOW policy and widen a DENY or AUDIT one.
func FuzzCompile(f *testing.F) {
	for _, p := range []*waypointapi.L7Authorization{
		l7("a", securityapi.Action_ALLOW, &waypointapi.L7Match{
			L4:      &securityapi.Match{Principals: isms("cluster.local/ns/default/sa/*"), DestinationPorts: []uint32{8080}},
			Methods: isms("GET"), Paths: isms("/admin*", "/files/{**}"), Hosts: isms("example.com"),
		}),
		l7("d", securityapi.Action_DENY, &waypointapi.L7Match{
			NotPaths: isms("/api/{*}", "*.php"), NotMethods: isms("GET"), NotHosts: isms("*.example.com:*"),
			Headers: []*waypointapi.HeaderCondition{{Name: "x-user", Values: isms("admin*"), NotValues: isms("*")}},
		}),
		{Name: "audit", Namespace: "default", Audit: true, Groups: []*waypointapi.L7Group{{}}},
	} {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
		f.Add(b, uint8(5))
	}
	conns := fuzzConns()
	f.Fuzz(func(t *testing.T, body []byte, where uint8) {
		var in waypointapi.L7Authorization
		if proto.Unmarshal(body, &in) != nil {
			return
		}
		p, err := Compile(&in)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Compile returned an invalid policy: %v", err)
		}
		for _, c := range conns {
			d := Decide([]*policy.Policy{p}, nil, c)
			if d.Reason == "" {
				t.Fatal("Decision without a reason")
			}
			if c.Request == nil {
				continue
			}
			tcp := c
			tcp.Request = nil
			withReq, without := p.Matches(c), p.Matches(tcp)
			if p.Action == policy.Allow && without && !withReq {
				t.Fatalf("ALLOW matches %v without its request but not with it", c.Request)
			}
			if p.Action != policy.Allow && withReq && !without {
				t.Fatalf("%v matches %v with its request but not without it", p.Action, c.Request)
			}
		}

		// The same policy with an unknown field in one of its messages.
		marked := proto.Clone(&in).(*waypointapi.L7Authorization)
		if !addUnknown(marked, int(where)) {
			return
		}
		q, err := Compile(marked)
		if err != nil {
			t.Fatalf("Compile with an unknown field: %v (without: ok)", err)
		}
		for _, c := range conns {
			before, after := p.Matches(c), q.Matches(c)
			if p.Action == policy.Allow && after && !before {
				t.Fatalf("an unknown field widened an ALLOW policy for %+v", c)
			}
			if p.Action != policy.Allow && before && !after {
				t.Fatalf("an unknown field narrowed a %v policy for %+v", p.Action, c)
			}
		}
	})
}

// addUnknown adds an unknown field to the n-th message of m (in
// protorange order, wrapping around); false if the policy has no message
// that could hold one.
func addUnknown(m proto.Message, n int) bool {
	var msgs []protoreflect.Message
	protorange.Range(m.ProtoReflect(), func(v protopath.Values) error {
		if mm, ok := v.Index(-1).Value.Interface().(protoreflect.Message); ok {
			msgs = append(msgs, mm)
		}
		return nil
	})
	if len(msgs) == 0 {
		return false
	}
	mm := msgs[n%len(msgs)]
	// Field 999 is unknown to every message here.
	b := protowire.AppendTag(nil, 999, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("new"))
	mm.SetUnknown(append(mm.GetUnknown(), b...))
	return true
}
