package inpodmgr

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/leaktest"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/zds"
	"github.com/skiffmesh/skiff/ztunnel/internal/proxy"
)

// noCerts issues nothing: the pods of these tests never connect.
type noCerts struct{}

func (noCerts) Get(context.Context, spiffeid.ID) (*identity.Certificate, error) {
	return nil, errors.New("no certificates in this test")
}
func (noCerts) Acquire(context.Context, spiffeid.ID) {}
func (noCerts) Release(spiffeid.ID)                  {}

// TestWorkloadCyclesLeakNothing: a pod added (its listeners opened in its
// namespace, QUIC's socket included) and deleted a hundred times leaves
// ztunnel with the goroutines and file descriptors it had, namespace
// handles included.
func TestWorkloadCyclesLeakNothing(t *testing.T) {
	inpodtest.RequireRoot(t)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	px, err := proxy.New(proxy.Config{
		NodeName: "n1", TrustDomain: td, Store: meshstate.NewStore("istio-system", td.Name()),
		Certs: noCerts{}, Bundles: x509bundle.NewSet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := New(ctx, Config{Proxy: px, Certs: noCerts{}, TrustDomain: td})
	defer m.Close()
	cycle := func(i int) {
		ns := inpodtest.NewNetNS(t, "ztleak-")
		handle, err := os.Open(ns.Path) // the manager's to close
		if err != nil {
			t.Fatal(err)
		}
		uid := "uid-" + strconv.Itoa(i)
		if err := m.AddWorkload(ctx, zds.Workload{UID: uid, Name: "p" + strconv.Itoa(i), Namespace: "shop", ServiceAccount: "sa"}, handle); err != nil {
			t.Fatalf("add %s: %v", uid, err)
		}
		if err := m.DelWorkload(ctx, uid); err != nil {
			t.Fatalf("delete %s: %v", uid, err)
		}
		if err := ns.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	const warm, cycles = 5, 100
	for i := range warm {
		cycle(i)
	}
	base := leaktest.Take(t)
	for i := warm; i < warm+cycles; i++ {
		cycle(i)
	}
	now := leaktest.Settle(t, base, 30*time.Second)
	t.Logf("after %d cycles: %d goroutines (baseline %d), %d open files (baseline %d)", cycles, now.Goroutines, base.Goroutines, now.Files, base.Files)
}
