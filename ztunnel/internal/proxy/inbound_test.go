package proxy

import (
	"net/netip"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
)

func TestInboundService(t *testing.T) {
	web := &meshstate.Service{Name: "web", Namespace: "a", Hostname: "web.a.svc.cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Ports: []meshstate.Port{{ServicePort: 80, TargetPort: 8080}}}
	// Named target port: the workload resolves it.
	api := &meshstate.Service{Name: "api", Namespace: "a", Hostname: "api.a.svc.cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.2")}, Ports: []meshstate.Port{{ServicePort: 80}}}
	// Same target port as web; web's key sorts first.
	www := &meshstate.Service{Name: "www", Namespace: "a", Hostname: "www.a.svc.cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.96.0.3")}, Ports: []meshstate.Port{{ServicePort: 80, TargetPort: 8080}}}
	pod := &meshstate.Workload{UID: "pod", Name: "pod", Namespace: "a", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		Services: map[string][]meshstate.Port{
			web.Key(): {{ServicePort: 80, TargetPort: 8080}},
			api.Key(): {{ServicePort: 80, TargetPort: 9090}},
			www.Key(): {{ServicePort: 80, TargetPort: 8080}},
			// A service the state does not hold (yet): skipped.
			"a/gone.a.svc.cluster.local": {{ServicePort: 80, TargetPort: 7070}},
		}}
	st := meshstate.NewStore("istio-system", "cluster.local")
	if err := st.Replace(meshstate.Config{Workloads: []*meshstate.Workload{pod}, Services: []*meshstate.Service{web, api, www}}); err != nil {
		t.Fatal(err)
	}
	snap := st.Snapshot()
	for _, tc := range []struct {
		port uint16
		want string // the service's key; "" for none
	}{
		{8080, web.Key()},
		{9090, api.Key()},
		{7070, ""},
		{15000, ""},
	} {
		// Map order varies: ask often enough to see it vary.
		for range 20 {
			got := ""
			if svc := inboundService(snap, pod, tc.port); svc != nil {
				got = svc.Key()
			}
			if got != tc.want {
				t.Fatalf("port %d: got service %q, want %q", tc.port, got, tc.want)
			}
		}
	}
}
