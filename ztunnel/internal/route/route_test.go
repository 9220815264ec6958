package route

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/skiffmesh/skiff/pkg/meshstate"
)

var ap = netip.MustParseAddrPort

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

const echoKey = "default/echo.default.svc.cluster.local"

func testSnapshot(t *testing.T) *meshstate.Snapshot {
	t.Helper()
	wl := func(name, addr string, mut func(*meshstate.Workload)) *meshstate.Workload {
		w := &meshstate.Workload{UID: name, Name: name, Namespace: "default", ServiceAccount: name,
			Addresses: []netip.Addr{ip(addr)}, Protocol: meshstate.TunnelHBONE, Healthy: true}
		if mut != nil {
			mut(w)
		}
		return w
	}
	echoPorts := map[string][]meshstate.Port{echoKey: {{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090}}}
	c := meshstate.Config{
		Workloads: []*meshstate.Workload{
			wl("echo-1", "10.0.0.1", func(w *meshstate.Workload) { w.Services = echoPorts }),
			wl("echo-2", "10.0.0.2", func(w *meshstate.Workload) {
				w.Services = map[string][]meshstate.Port{echoKey: {{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090, TargetPort: 9999}}}
			}),
			wl("echo-sick", "10.0.0.3", func(w *meshstate.Workload) { w.Services = echoPorts; w.Healthy = false }),
			wl("plain", "10.0.0.4", func(w *meshstate.Workload) { w.Protocol = meshstate.TunnelNone }),
			wl("waypoint", "10.0.0.9", func(w *meshstate.Workload) {
				w.Services = map[string][]meshstate.Port{"default/wp.default.svc.cluster.local": {{ServicePort: 15008}}}
			}),
			wl("behind-wp", "10.0.0.5", func(w *meshstate.Workload) {
				w.Waypoint = &meshstate.GatewayAddress{Hostname: meshstate.NamespacedHostname{Namespace: "default", Hostname: "wp.default.svc.cluster.local"}}
			}),
			wl("lost-wp", "10.0.0.6", func(w *meshstate.Workload) {
				w.Waypoint = &meshstate.GatewayAddress{Address: ip("10.0.0.99")}
			}),
			wl("client", "10.0.0.7", nil),
		},
		Services: []*meshstate.Service{
			{Name: "echo", Namespace: "default", Hostname: "echo.default.svc.cluster.local",
				Addresses: []netip.Addr{ip("10.96.0.1")}, Ports: []meshstate.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 9090}}},
			{Name: "wp", Namespace: "default", Hostname: "wp.default.svc.cluster.local",
				Addresses: []netip.Addr{ip("10.96.0.9")}, Ports: []meshstate.Port{{ServicePort: 15008}}},
			{Name: "routed", Namespace: "default", Hostname: "routed.default.svc.cluster.local",
				Addresses: []netip.Addr{ip("10.96.0.2")}, Ports: []meshstate.Port{{ServicePort: 80}},
				Waypoint: &meshstate.GatewayAddress{Address: ip("10.96.0.9")}},
			{Name: "empty", Namespace: "default", Hostname: "empty.default.svc.cluster.local",
				Addresses: []netip.Addr{ip("10.96.0.3")}, Ports: []meshstate.Port{{ServicePort: 80}}},
		},
	}
	st := meshstate.NewStore("istio-system", "cluster.local")
	if err := st.Replace(c); err != nil {
		t.Fatal(err)
	}
	return st.Snapshot()
}

func TestResolve(t *testing.T) {
	snap := testSnapshot(t)
	client := snap.Workload("client")
	tests := []struct {
		name          string
		src           string
		dst           string
		kind          Kind
		target        string // "" when several are possible
		authority     string
		san           string
		err           error
		wantWorkloads []string // allowed destination workloads
	}{
		{name: "workload over HBONE", dst: "10.0.0.1:8080", kind: Direct, target: "10.0.0.1:15008", authority: "10.0.0.1:8080", san: "echo-1"},
		{name: "workload outside the mesh", dst: "10.0.0.4:5432", kind: Passthrough, target: "10.0.0.4:5432"},
		{name: "unknown address", dst: "192.0.2.1:443", kind: Passthrough, target: "192.0.2.1:443"},
		{name: "service VIP maps the port", dst: "10.96.0.1:80", kind: Direct, wantWorkloads: []string{"echo-1", "echo-2"}},
		{name: "service without that port", dst: "10.96.0.1:81", err: ErrUnknownPort},
		{name: "service without healthy endpoints", dst: "10.96.0.3:80", err: ErrNoHealthyEndpoint},
		{name: "service behind a waypoint", dst: "10.96.0.2:80", kind: Waypoint, target: "10.0.0.9:15008", authority: "10.96.0.2:80", san: "waypoint"},
		{name: "workload behind a waypoint", dst: "10.0.0.5:80", kind: Waypoint, target: "10.0.0.9:15008", authority: "10.0.0.5:80", san: "waypoint"},
		{name: "the waypoint itself skips it", src: "waypoint", dst: "10.0.0.5:80", kind: Direct, target: "10.0.0.5:15008", authority: "10.0.0.5:80"},
		{name: "missing waypoint fails closed", dst: "10.0.0.6:80", err: ErrNoWaypoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := client
			if tt.src != "" {
				src = snap.Workload(tt.src)
			}
			r, err := Resolve(snap, src, ap(tt.dst), nil)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tt.kind {
				t.Errorf("kind %v, want %v", r.Kind, tt.kind)
			}
			if tt.target != "" && r.Target != ap(tt.target) {
				t.Errorf("target %v, want %v", r.Target, tt.target)
			}
			if tt.authority != "" && r.Authority != ap(tt.authority) {
				t.Errorf("authority %v, want %v", r.Authority, tt.authority)
			}
			if tt.san != "" && (len(r.SANs) != 1 || r.SANs[0] != snap.Workload(tt.san).Identity()) {
				t.Errorf("SANs %v, want %s's identity", r.SANs, tt.san)
			}
			if len(tt.wantWorkloads) > 0 {
				found := false
				for _, w := range tt.wantWorkloads {
					found = found || r.Workload.UID == w
				}
				if !found {
					t.Errorf("picked %s, want one of %v", r.Workload.UID, tt.wantWorkloads)
				}
				if r.Authority.Port() != 8080 || r.Target.Port() != 15008 || r.Service == nil {
					t.Errorf("route %+v: want authority port 8080, target 15008 and the service", r)
				}
			}
		})
	}
}

func TestServiceSpreadsOverHealthyEndpoints(t *testing.T) {
	snap := testSnapshot(t)
	seen := map[string]int{}
	for range 200 {
		r, err := Resolve(snap, nil, ap("10.96.0.1:80"), nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Workload.UID]++
	}
	if seen["echo-1"] == 0 || seen["echo-2"] == 0 || seen["echo-sick"] != 0 {
		t.Fatalf("picks %v: want both healthy endpoints and never the unhealthy one", seen)
	}
}

func TestPowerOfTwoChoicesPrefersLessLoaded(t *testing.T) {
	snap := testSnapshot(t)
	load := func(uid string) int64 {
		if uid == "echo-1" {
			return 10
		}
		return 0
	}
	// With two healthy endpoints both are always the two choices.
	for range 50 {
		r, err := Resolve(snap, nil, ap("10.96.0.1:80"), load)
		if err != nil {
			t.Fatal(err)
		}
		if r.Workload.UID != "echo-2" {
			t.Fatalf("picked loaded %s", r.Workload.UID)
		}
	}
}

func TestNamedPortResolvedPerWorkload(t *testing.T) {
	snap := testSnapshot(t)
	for range 50 {
		r, err := Resolve(snap, nil, ap("10.96.0.1:9090"), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint16{"echo-1": 9090, "echo-2": 9999}[r.Workload.UID]
		if r.Authority.Port() != want {
			t.Fatalf("%s: authority port %d, want %d", r.Workload.UID, r.Authority.Port(), want)
		}
	}
}
