package xdssource

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// FuzzApply feeds arbitrary resource bodies to both subscriptions: a
// delta is applied or rejected, never a panic, and a rejected one leaves
// the state as it was.
func FuzzApply(f *testing.F) {
	for _, m := range []proto.Message{wl("c//Pod/default/a", "10.0.0.1"), svc("10.96.0.1")} {
		b, _ := proto.Marshal(m)
		f.Add(b, false)
	}
	b, _ := proto.Marshal(authz("allow", securityapi.Action_ALLOW, 8))
	f.Add(b, true)
	f.Fuzz(func(t *testing.T, body []byte, policy bool) {
		st := meshstate.NewStore("istio-system", "cluster.local")
		s := New(st)
		subs := s.Subscriptions()
		typeURL, apply, msg := xds.AddressType, subs[0].Apply, proto.Message(&workloadapi.Address{})
		if policy {
			typeURL, apply, msg = xds.AuthorizationType, subs[1].Apply, &securityapi.Authorization{}
		}
		if proto.Unmarshal(body, msg) != nil {
			return
		}
		a, err := anypb.New(msg)
		if err != nil {
			return
		}
		name := "default/allow"
		switch m := msg.(type) {
		case *workloadapi.Address:
			if w := m.GetWorkload(); w != nil {
				name = w.GetUid()
			} else if sv := m.GetService(); sv != nil {
				name = sv.GetNamespace() + "/" + sv.GetHostname()
			}
		case *securityapi.Authorization:
			name = m.GetNamespace() + "/" + m.GetName()
		}
		before := st.Snapshot()
		if err := apply(xds.Delta{TypeURL: typeURL, Updated: []xds.Resource{{Name: name, Body: a}}}); err != nil && st.Snapshot() != before {
			t.Fatal("rejected delta changed the state")
		}
	})
}
