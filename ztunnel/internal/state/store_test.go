package state

import (
	"net/netip"
	"testing"

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

	// A delta that adds a valid policy but also a conflicting workload is
	// rejected whole.
	b := &Workload{UID: "b", Name: "b", Namespace: "ns", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	err := st.Update(func(tx *Tx) error {
		if err := tx.AddPolicy(&policy.Policy{Name: "p", Namespace: "ns"}); err != nil {
			return err
		}
		return tx.AddWorkload(b)
	})
	if err == nil {
		t.Fatal("conflicting delta accepted")
	}
	if st.Snapshot() != snap || len(st.Snapshot().Policies()) != 0 {
		t.Fatal("rejected delta changed the state")
	}

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
