package identity_test

import (
	"context"
	"fmt"
	"log"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func Example() {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		log.Fatal(err)
	}
	m := identity.NewManager(ca.Client(), identity.ManagerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx) // renews at half-life

	id, err := identity.WorkloadID(td, "default", "web")
	if err != nil {
		log.Fatal(err)
	}
	cert, err := m.Get(ctx, id)
	if err != nil {
		log.Fatal(err)
	}

	// A peer verifies the chain against the trust bundle.
	bundles := identity.NewBundles(ca.Bundle())
	peer, _, err := x509svid.Verify(cert.Chain, bundles)
	if err != nil {
		log.Fatal(err)
	}
	ns, sa, _ := identity.ParseWorkloadID(peer)
	fmt.Println(peer, ns, sa)
	// Output: spiffe://cluster.local/ns/default/sa/web default web
}
