package caclient_test

import (
	"context"
	"log"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
)

// A node proxy obtains and renews certificates for the workloads on its node
// through an identity.Manager backed by the remote CA.
func Example() {
	c, err := caclient.New(caclient.Options{
		Address:      "istiod.istio-system.svc:15012",
		RootCertFile: "/var/run/secrets/istio/root-cert.pem",
		TokenFile:    "/var/run/secrets/tokens/istio-token",
		Impersonate:  true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	m := identity.NewManager(c, identity.ManagerOptions{})
	ctx := context.Background()
	go func() { _ = m.Run(ctx) }() // renews at half-life
	cert, err := m.Get(ctx, spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app"))
	if err != nil {
		log.Fatal(err)
	}
	_ = cert.TLS // present it on the workload's behalf
}
