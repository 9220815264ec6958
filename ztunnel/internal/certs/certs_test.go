package certs

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
)

func TestAcquireReleaseAndDump(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		t.Fatal(err)
	}
	s := New(identity.NewManager(ca.Client(), identity.ManagerOptions{}), nil)
	a, _ := identity.WorkloadID(td, "ns", "a")
	b, _ := identity.WorkloadID(td, "ns", "b")
	if !s.Ready() {
		t.Fatal("an empty store is not ready")
	}
	ctx := context.Background()
	s.Acquire(ctx, a)
	s.Acquire(ctx, a) // a second pod with the same identity
	s.Acquire(ctx, b)
	// Get records readiness whether or not the prefetch has finished.
	for _, id := range []spiffeid.ID{a, b} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Ready() {
		t.Fatal("not ready with both certificates fetched")
	}
	dump := s.Dump(ctx)
	if len(dump) != 2 || dump[0].Identity != a.String() || dump[0].State != "available" || dump[0].NotAfter.IsZero() {
		t.Fatalf("dump %+v", dump)
	}
	s.Release(a)
	if len(s.Dump(ctx)) != 2 {
		t.Fatal("released a still-used identity")
	}
	s.Release(a)
	s.Release(b)
	if d := s.Dump(ctx); len(d) != 0 {
		t.Fatalf("dump after release: %+v", d)
	}
}
