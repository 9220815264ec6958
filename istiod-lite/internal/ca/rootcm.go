package ca

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// RootConfigMap is the ConfigMap, in every namespace, that holds the mesh
// root under RootConfigMapKey (Istio's names).
const (
	RootConfigMap    = "istio-ca-root-cert"
	RootConfigMapKey = "root-cert.pem"
)

// rootPublisher keeps RootConfigMap up to date in every namespace.
type rootPublisher struct {
	c client.Client
	// r reads ConfigMaps straight from the apiserver, so that istiod-lite
	// does not cache every ConfigMap in the cluster.
	r       client.Reader
	rootPEM []byte
}

// SetupRootPublisher registers, with mgr, a leader-elected controller that
// publishes rootPEM in every namespace.
func SetupRootPublisher(mgr ctrl.Manager, rootPEM []byte) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("ca-root-publisher").
		For(&corev1.Namespace{}).
		Complete(&rootPublisher{c: mgr.GetClient(), r: mgr.GetAPIReader(), rootPEM: rootPEM})
}

func (r *rootPublisher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := r.c.Get(ctx, req.NamespacedName, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ns.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	var cm corev1.ConfigMap
	err := r.r.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: RootConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: RootConfigMap, Labels: map[string]string{"istio.io/config": "true"}},
			Data:       map[string]string{RootConfigMapKey: string(r.rootPEM)},
		}
		if err := r.c.Create(ctx, &cm); err != nil && !apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, fmt.Errorf("create %s/%s: %w", ns.Name, RootConfigMap, err)
		}
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	if bytes.Equal([]byte(cm.Data[RootConfigMapKey]), r.rootPEM) {
		return reconcile.Result{}, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootConfigMapKey] = string(r.rootPEM)
	if err := r.c.Update(ctx, &cm); err != nil {
		return reconcile.Result{}, fmt.Errorf("update %s/%s: %w", ns.Name, RootConfigMap, err)
	}
	return reconcile.Result{}, nil
}
