package xdssource

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

func res(t *testing.T, name string, m proto.Message) xds.Resource {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return xds.Resource{Name: name, Version: "1", Body: a}
}

func wl(uid, ip string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: uid, Name: strings.ReplaceAll(uid, "/", "-"), Namespace: "default", ServiceAccount: "sa",
		Addresses:             [][]byte{netip.MustParseAddr(ip).AsSlice()},
		TunnelProtocol:        workloadapi.TunnelProtocol_HBONE,
		Services:              map[string]*workloadapi.PortList{"default/echo.default.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}},
		AuthorizationPolicies: []string{"default/allow"},
		Waypoint:              &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "default", Hostname: "wp.default.svc.cluster.local"}}, HboneMtlsPort: 15008},
	}}}
}

func svc(vip string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{
		Name: "echo", Namespace: "default", Hostname: "echo.default.svc.cluster.local",
		Addresses: []*workloadapi.NetworkAddress{{Address: netip.MustParseAddr(vip).AsSlice()}},
		Ports:     []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}},
	}}}
}

func authz(name string, action securityapi.Action, prefixLen uint32) *securityapi.Authorization {
	return &securityapi.Authorization{
		Name: name, Namespace: "default", Scope: securityapi.Scope_WORKLOAD_SELECTOR, Action: action,
		Groups: []*securityapi.Group{{Rules: []*securityapi.Rules{{Matches: []*securityapi.Match{{
			Principals:       []*securityapi.StringMatch{{MatchType: &securityapi.StringMatch_Suffix{Suffix: "/sa/sleep"}}},
			SourceIps:        []*securityapi.Address{{Address: netip.MustParseAddr("10.0.0.0").AsSlice(), Length: prefixLen}},
			DestinationPorts: []uint32{8080},
		}}}}}},
	}
}

func TestDeltasUpdateTheStore(t *testing.T) {
	st := meshstate.NewStore("istio-system", "cluster.local")
	s := New(st)
	subs := s.Subscriptions()
	addrs, pols := subs[0].Apply, subs[1].Apply

	if err := addrs(xds.Delta{TypeURL: xds.AddressType, Updated: []xds.Resource{
		res(t, "c//Pod/default/a", wl("c//Pod/default/a", "10.0.0.1")),
		res(t, "default/echo.default.svc.cluster.local", svc("10.96.0.1")),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := pols(xds.Delta{TypeURL: xds.AuthorizationType, Updated: []xds.Resource{
		res(t, "default/allow", authz("allow", securityapi.Action_ALLOW, 8)),
	}}); err != nil {
		t.Fatal(err)
	}
	snap := st.Snapshot()
	w := snap.WorkloadByIP(netip.MustParseAddr("10.0.0.1"))
	if w == nil || w.UID != "c//Pod/default/a" || !w.Healthy || w.Protocol != meshstate.TunnelHBONE || w.Waypoint.Port() != 15008 {
		t.Fatalf("workload %+v", w)
	}
	if eps := snap.Endpoints("default/echo.default.svc.cluster.local"); len(eps) != 1 {
		t.Fatalf("endpoints %v", eps)
	}
	ps := snap.PoliciesFor(w)
	if len(ps) != 1 || ps[0].Action != policy.Allow || ps[0].Groups[0].Rules[0].Matches[0].SourceIPs[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Fatalf("policies %+v", ps)
	}

	// Removals by name, for a workload and a service.
	if err := addrs(xds.Delta{TypeURL: xds.AddressType, Removed: []string{"c//Pod/default/a", "default/echo.default.svc.cluster.local"}}); err != nil {
		t.Fatal(err)
	}
	if snap := st.Snapshot(); len(snap.Workloads()) != 0 || len(snap.Services()) != 0 {
		t.Fatalf("after removal: %d workloads, %d services", len(snap.Workloads()), len(snap.Services()))
	}
}

func TestBadDeltasAreRejectedWhole(t *testing.T) {
	tests := []struct {
		name    string
		typeURL string
		updated []xds.Resource
		want    string
	}{
		{"address of 5 bytes", xds.AddressType, []xds.Resource{{Name: "w", Body: mustAny(t, &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{Uid: "w", Name: "w", Namespace: "n", Addresses: [][]byte{{1, 2, 3, 4, 5}}}}})}}, "address of 5 bytes"},
		{"wrong resource name", xds.AddressType, []xds.Resource{res(t, "other", wl("c//Pod/default/a", "10.0.0.1"))}, "resource named"},
		{"port out of range", xds.AddressType, []xds.Resource{res(t, "default/echo.default.svc.cluster.local", &workloadapi.Address{Type: &workloadapi.Address_Service{Service: &workloadapi.Service{Name: "echo", Namespace: "default", Hostname: "echo.default.svc.cluster.local", Ports: []*workloadapi.Port{{ServicePort: 70000}}}}})}, "out of range"},
		{"empty address", xds.AddressType, []xds.Resource{res(t, "x", &workloadapi.Address{})}, "neither a workload nor a service"},
		{"not an address", xds.AddressType, []xds.Resource{res(t, "x", &securityapi.Authorization{})}, "address x"},
		{"bad prefix length", xds.AuthorizationType, []xds.Resource{res(t, "default/deny", authz("deny", securityapi.Action_DENY, 40))}, "prefix length"},
		{"unknown action", xds.AuthorizationType, []xds.Resource{res(t, "default/odd", authz("odd", securityapi.Action(7), 8))}, "odd"},
		// pkg/policy knows AUDIT as 2; on the wire to ztunnel it is unknown.
		{"audit is not a workload API action", xds.AuthorizationType, []xds.Resource{res(t, "default/audit", authz("audit", securityapi.Action(2), 8))}, "unknown action 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := meshstate.NewStore("istio-system", "cluster.local")
			s := New(st)
			subs := s.Subscriptions()
			if err := subs[0].Apply(xds.Delta{TypeURL: xds.AddressType, Updated: []xds.Resource{res(t, "c//Pod/default/a", wl("c//Pod/default/a", "10.0.0.1"))}}); err != nil {
				t.Fatal(err)
			}
			before := st.Snapshot()
			apply := subs[0].Apply
			if tt.typeURL == xds.AuthorizationType {
				apply = subs[1].Apply
			}
			// A good resource beside the bad one is not applied either.
			good := res(t, "c//Pod/default/z", wl("c//Pod/default/z", "10.0.0.9"))
			if tt.typeURL == xds.AuthorizationType {
				good = res(t, "default/allow", authz("allow", securityapi.Action_ALLOW, 8))
			}
			err := apply(xds.Delta{TypeURL: tt.typeURL, Updated: append([]xds.Resource{good}, tt.updated...)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if st.Snapshot() != before {
				t.Fatal("a rejected delta changed the state")
			}
		})
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func hostNetworkPod(uid, ip string) *workloadapi.Address {
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: uid, Name: strings.ReplaceAll(uid, "/", "-"), Namespace: "kube-system",
		Addresses:   [][]byte{netip.MustParseAddr(ip).AsSlice()},
		NetworkMode: workloadapi.NetworkMode_HOST_NETWORK,
		Status:      workloadapi.WorkloadStatus_HEALTHY,
	}}}
}

// Addresses claimed twice (host-network pods on one node, a pod address
// reused while its predecessor is still listed) do not reject the state:
// every other workload arrives, and each address goes to one claimant.
func TestSharedAddressesDoNotRejectTheState(t *testing.T) {
	st := meshstate.NewStore("istio-system", "cluster.local")
	var logs strings.Builder
	s := New(st, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	addrs := s.Subscriptions()[0].Apply
	if err := addrs(xds.Delta{TypeURL: xds.AddressType, Updated: []xds.Resource{
		res(t, "c//Pod/default/app", wl("c//Pod/default/app", "10.0.0.1")),
		res(t, "c//Pod/kube-system/kube-proxy", hostNetworkPod("c//Pod/kube-system/kube-proxy", "192.168.1.10")),
		res(t, "c//Pod/kube-system/cni-agent", hostNetworkPod("c//Pod/kube-system/cni-agent", "192.168.1.10")),
	}}); err != nil {
		t.Fatalf("state with two host-network pods on one node rejected: %v", err)
	}
	snap := st.Snapshot()
	if w := snap.WorkloadByIP(netip.MustParseAddr("10.0.0.1")); w == nil || w.Protocol != meshstate.TunnelHBONE {
		t.Fatalf("mesh workload 10.0.0.1: %+v", w)
	}
	if w := snap.WorkloadByIP(netip.MustParseAddr("192.168.1.10")); w != nil {
		t.Fatalf("the node's address is taken by host-network workload %s", w.UID)
	}
	if w := snap.Workload("c//Pod/kube-system/kube-proxy"); w == nil || !w.HostNetwork {
		t.Fatalf("host-network workload: %+v", w)
	}
	if logs.Len() != 0 {
		t.Fatalf("logged %q for a consistent state", logs.String())
	}

	// A new pod given the address of one still listed: both are kept, the
	// address goes to the healthy one, and the conflict is logged once.
	old := wl("c//Pod/default/old", "10.0.0.7")
	old.GetWorkload().Status = workloadapi.WorkloadStatus_UNHEALTHY
	fresh := wl("c//Pod/default/new", "10.0.0.7")
	fresh.GetWorkload().Status = workloadapi.WorkloadStatus_HEALTHY
	for range 2 {
		if err := addrs(xds.Delta{TypeURL: xds.AddressType, Updated: []xds.Resource{
			res(t, "c//Pod/default/new", fresh), res(t, "c//Pod/default/old", old),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if w := st.Snapshot().WorkloadByIP(netip.MustParseAddr("10.0.0.7")); w == nil || w.UID != "c//Pod/default/new" {
		t.Fatalf("10.0.0.7 belongs to %v, want the healthy new pod", w)
	}
	if n := strings.Count(logs.String(), "address conflict"); n != 1 {
		t.Fatalf("conflict logged %d times, want once:\n%s", n, logs.String())
	}
}
