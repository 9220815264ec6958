package meshstate

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/skiffmesh/skiff/pkg/policy"
)

func TestUpdateAppliesDeltasAtomically(t *testing.T) {
	st := NewStore("istio-system", "cluster.local")
	changed := st.Changed()
	a := &Workload{UID: "a", Name: "a", Namespace: "ns", Addresses: []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")}}
	if err := st.Update(func(tx *Tx) error { return tx.AddWorkload(a) }); err != nil {
		t.Fatal(err)
	}
	<-changed
	if st.IsLoaded() {
		t.Fatal("an update alone marked the state loaded")
	}
	snap := st.Snapshot()
	got := snap.WorkloadByIP(netip.MustParseAddr("10.0.0.1"))
	if got == nil || got == a {
		t.Fatalf("lookup by unmapped address = %v; the store must keep its own copy", got)
	}
	if got.Identity().String() != "spiffe://cluster.local/ns/ns/sa/default" {
		t.Fatalf("identity %s", got.Identity())
	}

	// A delta that adds a valid policy but also an invalid workload is
	// rejected whole.
	bad := &Workload{UID: "bad", Name: "bad", Namespace: "ns", Addresses: []netip.Addr{{}}}
	err := st.Update(func(tx *Tx) error {
		if err := tx.AddPolicy(&policy.Policy{Name: "p", Namespace: "ns"}); err != nil {
			return err
		}
		return tx.AddWorkload(bad)
	})
	if err == nil {
		t.Fatal("invalid delta accepted")
	}
	if st.Snapshot() != snap || len(st.Snapshot().Policies()) != 0 {
		t.Fatal("rejected delta changed the state")
	}

	b := &Workload{UID: "b", Name: "b", Namespace: "ns", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	if err := st.Update(func(tx *Tx) error {
		tx.RemoveWorkload("a")
		return tx.AddWorkload(b)
	}); err != nil {
		t.Fatal(err)
	}
	if w := st.Snapshot().WorkloadByIP(netip.MustParseAddr("10.0.0.1")); w == nil || w.UID != "b" {
		t.Fatalf("after move, address belongs to %v", w)
	}
	if st.Version() != 2 {
		t.Fatalf("version %d, want 2", st.Version())
	}
}

func addr(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }

// Workloads or services claiming one address do not reject an update: each
// address goes to the same claimant whatever the order of arrival, and the
// conflict is reported.
func TestAddressConflictsAreResolved(t *testing.T) {
	hbone := func(w *Workload) *Workload { w.Protocol = TunnelHBONE; return w }
	healthy := func(w *Workload) *Workload { w.Healthy = true; return w }
	hostnet := func(w *Workload) *Workload { w.HostNetwork = true; return w }
	w := func(uid, ip string) *Workload {
		return &Workload{UID: uid, Name: uid, Namespace: "ns", Addresses: addr(ip), Services: map[string][]Port{"ns/s.ns.svc": {{ServicePort: 53}}}}
	}
	for _, tc := range []struct {
		name      string
		a, b      *Workload
		ip        string
		want      string // uid found at ip, "" for none
		conflicts int
	}{
		{"host network pods share their node's address", hostnet(w("kube-proxy", "192.168.1.10")), hostnet(w("cni-agent", "192.168.1.10")), "192.168.1.10", "", 0},
		{"healthy wins", w("a", "10.0.0.1"), healthy(w("b", "10.0.0.1")), "10.0.0.1", "b", 1},
		{"hbone wins", w("a", "10.0.0.1"), hbone(w("b", "10.0.0.1")), "10.0.0.1", "b", 1},
		{"healthy before hbone", hbone(w("a", "10.0.0.1")), healthy(w("b", "10.0.0.1")), "10.0.0.1", "b", 1},
		{"smaller uid wins", w("b", "10.0.0.1"), w("a", "10.0.0.1"), "10.0.0.1", "a", 1},
		{"a pod and a host network pod", hostnet(w("a", "10.0.0.1")), w("b", "10.0.0.1"), "10.0.0.1", "b", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][]*Workload{{tc.a, tc.b}, {tc.b, tc.a}} {
				st := NewStore("istio-system", "cluster.local")
				for _, x := range order {
					if err := st.Update(func(tx *Tx) error { return tx.AddWorkload(x) }); err != nil {
						t.Fatalf("adding %s: %v", x.UID, err)
					}
				}
				snap := st.Snapshot()
				got := snap.WorkloadByIP(netip.MustParseAddr(tc.ip))
				if (got == nil) != (tc.want == "") || (got != nil && got.UID != tc.want) {
					t.Fatalf("%s then %s: %v owns %s, want %q", order[0].UID, order[1].UID, got, tc.ip, tc.want)
				}
				if len(snap.Workloads()) != 2 || len(snap.Endpoints("ns/s.ns.svc")) != 2 {
					t.Fatalf("both workloads must stay (and stay service endpoints): %d workloads, %d endpoints", len(snap.Workloads()), len(snap.Endpoints("ns/s.ns.svc")))
				}
				if len(snap.Conflicts()) != tc.conflicts {
					t.Fatalf("conflicts %q, want %d", snap.Conflicts(), tc.conflicts)
				}
			}
		})
	}

	t.Run("services", func(t *testing.T) {
		st := NewStore("istio-system", "cluster.local")
		for _, x := range []*Service{
			{Name: "z", Namespace: "ns", Hostname: "z.ns.svc", Addresses: addr("10.96.0.1")},
			{Name: "a", Namespace: "ns", Hostname: "a.ns.svc", Addresses: addr("10.96.0.1")},
		} {
			if err := st.Update(func(tx *Tx) error { return tx.AddService(x) }); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Update(func(tx *Tx) error { return tx.AddWorkload(w("p", "10.96.0.1")) }); err != nil {
			t.Fatal(err)
		}
		snap := st.Snapshot()
		if s := snap.ServiceByVIP(netip.MustParseAddr("10.96.0.1")); s == nil || s.Name != "a" {
			t.Fatalf("VIP owned by %v, want service a", s)
		}
		if w := snap.WorkloadByIP(netip.MustParseAddr("10.96.0.1")); w == nil || w.UID != "p" {
			t.Fatalf("address owned by workload %v, want p", w)
		}
		if len(snap.Conflicts()) != 2 {
			t.Fatalf("conflicts %q, want 2", snap.Conflicts())
		}
	})

	t.Run("a whole configuration is strict", func(t *testing.T) {
		st := NewStore("istio-system", "cluster.local")
		err := st.Replace(Config{Workloads: []*Workload{w("a", "10.0.0.1"), w("b", "10.0.0.1")}})
		if err == nil || !strings.Contains(err.Error(), "share address") {
			t.Fatalf("Replace with a shared address: %v", err)
		}
		if err := st.Replace(Config{Workloads: []*Workload{hostnet(w("a", "10.0.0.1")), hostnet(w("b", "10.0.0.1"))}}); err != nil {
			t.Fatalf("Replace with host network pods on one node: %v", err)
		}
	})
}

// Workloads added separately share the strings they have in common, and
// the store owns its services map and policy slice: the caller's stay as
// they were.
func TestAddWorkloadInterns(t *testing.T) {
	st := NewStore("istio-system", "cluster.local")
	mk := func(uid string) *Workload {
		// Built at run time, as a decoder builds them: separate copies.
		ns := strings.Clone("shop")
		return &Workload{
			UID: uid, Name: uid, Namespace: ns, Node: strings.Clone("node-1"), ServiceAccount: strings.Clone("cart"),
			Services:              map[string][]Port{ns + "/cart.shop.svc.cluster.local": {{ServicePort: 80, TargetPort: 8080}}},
			AuthorizationPolicies: []string{ns + "/allow-web"},
		}
	}
	a, b := mk("a"), mk("b")
	for _, w := range []*Workload{a, b} {
		if err := st.Update(func(tx *Tx) error { return tx.AddWorkload(w) }); err != nil {
			t.Fatal(err)
		}
		// Sharing must outlive a collection: the runtime drops a
		// canonical copy that no handle refers to.
		runtime.GC()
	}
	snap := st.Snapshot()
	ga, gb := snap.Workload("a"), snap.Workload("b")
	if ga == nil || gb == nil {
		t.Fatal("workloads not stored")
	}
	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	key := func(w *Workload) string {
		for k := range w.Services {
			return k
		}
		return ""
	}
	for _, c := range []struct {
		field string
		x, y  string
	}{
		{"namespace", ga.Namespace, gb.Namespace},
		{"node", ga.Node, gb.Node},
		{"service account", ga.ServiceAccount, gb.ServiceAccount},
		{"service key", key(ga), key(gb)},
		{"policy", ga.AuthorizationPolicies[0], gb.AuthorizationPolicies[0]},
	} {
		if c.x != c.y || !same(c.x, c.y) {
			t.Errorf("%s: %q and %q are separate copies", c.field, c.x, c.y)
		}
	}
	// The caller's map and slice are untouched, and not the store's.
	ga.AuthorizationPolicies[0] = "changed"
	delete(ga.Services, key(ga))
	if a.AuthorizationPolicies[0] != "shop/allow-web" || len(a.Services) != 1 {
		t.Errorf("the store shares the caller's policies or services: %v %v", a.AuthorizationPolicies, a.Services)
	}
}
