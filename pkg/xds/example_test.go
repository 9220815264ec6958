package xds_test

import (
	"context"
	"fmt"
	"log"

	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// A ztunnel subscribes to every Address and applies each delta to its own
// tables; returning an error rejects the delta (NACK) and keeps the
// previous state.
func ExampleClient() {
	apply := func(d xds.Delta) error {
		for _, r := range d.Updated {
			var a workloadapi.Address
			if err := r.Body.UnmarshalTo(&a); err != nil {
				return fmt.Errorf("%s: %w", r.Name, err)
			}
			// ... validate, then store a.GetWorkload() or a.GetService()
		}
		for range d.Removed {
			// ... forget the named resource
		}
		return nil
	}
	c, err := xds.NewClient(xds.ClientOptions{
		Address:       "istiod.istio-system.svc:15012",
		NodeID:        "ztunnel~node-a",
		NodeMetadata:  map[string]string{"NODE_NAME": "node-a"},
		TokenFile:     "/var/run/secrets/tokens/istio-token",
		RootCertFile:  "/var/run/secrets/istio/root-cert.pem",
		Subscriptions: []xds.Subscription{{TypeURL: xds.AddressType, Apply: apply}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }() // reconnects with backoff until ctx ends
	<-c.Ready()                    // the first state has been applied
}
