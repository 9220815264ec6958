package ca

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// RootConfigMap is the ConfigMap, in every namespace, that holds the mesh
// root under RootConfigMapKey (Istio's names).
const (
	RootConfigMap    = "istio-ca-root-cert"
	RootConfigMapKey = "root-cert.pem"
)

// RootConfigMapLabel marks the ConfigMaps istiod-lite publishes; the cache
// keeps only ConfigMaps with it (see CacheOptions).
const RootConfigMapLabel = "istio.io/config"

// rootPublisher keeps RootConfigMap up to date in every namespace.
type rootPublisher struct {
	c client.Client
	// direct reads a ConfigMap the cache cannot see (one created without
	// the label, by another control plane or by hand).
	direct  client.Reader
	rootPEM []byte
}

// CacheByObject restricts the manager's ConfigMap cache to the ones
// istiod-lite publishes, rather than every ConfigMap in the cluster.
func CacheByObject() (client.Object, cache.ByObject) {
	return &corev1.ConfigMap{}, cache.ByObject{Label: labels.SelectorFromSet(labels.Set{RootConfigMapLabel: "true"})}
}

// SetupRootPublisher registers, with mgr, a leader-elected controller that
// publishes rootPEM in every namespace, and puts it back if it is edited or
// deleted.
func SetupRootPublisher(mgr ctrl.Manager, rootPEM []byte) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("ca-root-publisher").
		For(&corev1.Namespace{}).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if o.GetName() != RootConfigMap {
				return nil
			}
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
		})).
		Complete(&rootPublisher{c: mgr.GetClient(), direct: mgr.GetAPIReader(), rootPEM: rootPEM})
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
	err := r.c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: RootConfigMap}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: RootConfigMap, Labels: map[string]string{RootConfigMapLabel: "true"}},
			Data:       map[string]string{RootConfigMapKey: string(r.rootPEM)},
		}
		err := r.c.Create(ctx, &cm)
		if err == nil {
			return reconcile.Result{}, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, fmt.Errorf("create %s/%s: %w", ns.Name, RootConfigMap, err)
		}
		if err := r.direct.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: RootConfigMap}, &cm); err != nil {
			return reconcile.Result{}, err
		}
	case err != nil:
		return reconcile.Result{}, err
	}
	if bytes.Equal([]byte(cm.Data[RootConfigMapKey]), r.rootPEM) && cm.Labels[RootConfigMapLabel] == "true" {
		return reconcile.Result{}, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootConfigMapKey] = string(r.rootPEM)
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[RootConfigMapLabel] = "true"
	if err := r.c.Update(ctx, &cm); err != nil {
		return reconcile.Result{}, fmt.Errorf("update %s/%s: %w", ns.Name, RootConfigMap, err)
	}
	return reconcile.Result{}, nil
}
