package app_test

import (
	"context"
	"fmt"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/app"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// TestLeaderElection runs two replicas: both serve xDS, one leads the
// writes, and when a replica stops the other carries on.
func TestLeaderElection(t *testing.T) {
	cl := startCluster(t)
	ctx := context.Background()
	cl.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}})
	cl.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}})
	cl.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel"}})
	cl.create(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	zt := cl.pod(t, "istio-system", "zt", "ztunnel", "node-a", "", nil)
	elect := func(c *app.Config) { c.LeaderElection = true }
	addrA, addrB := freePort(t), freePort(t)
	stopA, _ := runIstiod(t, cl, addrA, elect)
	stopB, _ := runIstiod(t, cl, addrB, elect)
	defer func() {
		if err := stopB(); err != nil {
			t.Error(err)
		}
	}()
	roots := cl.roots(t, "app")
	token := cl.token(t, zt)
	for _, addr := range []string{addrA, addrB} {
		c := startClient(t, addr, roots, token, xds.Subscription{TypeURL: xds.AddressType})
		<-c.Ready()
		if len(c.Versions(xds.AddressType)) == 0 {
			t.Fatalf("replica %s serves an empty state", addr)
		}
	}
	eventually(t, "a leader holds the lease", func() error {
		var l coordinationv1.Lease
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "istiod-lite-leader"}, &l); err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	if err := stopA(); err != nil {
		t.Error(err)
	}
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "wp"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "istio-waypoint", Listeners: []gatewayv1.Listener{{Name: "mesh", Port: 15008, Protocol: "HBONE"}}},
	}
	cl.create(t, gw)
	eventually(t, "the remaining replica accepts a new Gateway", func() error {
		var g gatewayv1.Gateway
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(gw), &g); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(g.Status.Conditions, "Accepted") {
			return fmt.Errorf("conditions %v", g.Status.Conditions)
		}
		return nil
	})
}
