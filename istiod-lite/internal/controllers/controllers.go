// Package controllers feeds istiod-lite's index from the cluster: one
// controller-runtime reconciler per kind, each reading the object from the
// informer cache and handing it (or its deletion) to the index. They run on
// every replica (no leader election), since every replica serves xDS.
package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

// feeder reconciles one kind into the index.
type feeder[T client.Object] struct {
	reader client.Reader
	newObj func() T
	set    func(ns, name string, obj T) // obj is the zero T on deletion
}

func (f *feeder[T]) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	obj := f.newObj()
	err := f.reader.Get(ctx, req.NamespacedName, obj)
	switch {
	case apierrors.IsNotFound(err):
		var zero T
		f.set(req.Namespace, req.Name, zero)
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("get %s: %w", req.NamespacedName, err)
	}
	f.set(req.Namespace, req.Name, obj)
	return reconcile.Result{}, nil
}

func add[T client.Object](mgr ctrl.Manager, name string, newObj func() T, set func(ns, name string, obj T), workers int) error {
	f := &feeder[T]{reader: mgr.GetCache(), newObj: newObj, set: set}
	err := ctrl.NewControllerManagedBy(mgr).
		Named(name).
		For(newObj()).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), MaxConcurrentReconciles: workers}).
		Complete(f)
	if err != nil {
		return fmt.Errorf("controller %s: %w", name, err)
	}
	return nil
}

// Options selects optional kinds.
type Options struct {
	// GatewayAPI watches Gateways, HTTPRoutes and GRPCRoutes (their CRDs
	// must be installed).
	GatewayAPI bool
	// Policies watches AuthorizationPolicies and RateLimitPolicies.
	Policies bool
}

// Setup registers the index's reconcilers with mgr.
func Setup(mgr ctrl.Manager, ix *index.Index, opts Options) error {
	steps := []func() error{
		func() error {
			return add(mgr, "index-namespace", func() *corev1.Namespace { return &corev1.Namespace{} }, func(_, name string, o *corev1.Namespace) {
				ix.SetNamespace(name, o)
			}, 1)
		},
		func() error {
			return add(mgr, "index-pod", func() *corev1.Pod { return &corev1.Pod{} }, ix.SetPod, 2)
		},
		func() error {
			return add(mgr, "index-service", func() *corev1.Service { return &corev1.Service{} }, ix.SetService, 1)
		},
		func() error {
			return add(mgr, "index-endpointslice", func() *discoveryv1.EndpointSlice { return &discoveryv1.EndpointSlice{} }, ix.SetEndpointSlice, 1)
		},
	}
	if opts.GatewayAPI {
		steps = append(steps,
			func() error {
				return add(mgr, "index-gateway", func() *gatewayv1.Gateway { return &gatewayv1.Gateway{} }, ix.SetGateway, 1)
			},
			func() error {
				return add(mgr, "index-httproute", func() *gatewayv1.HTTPRoute { return &gatewayv1.HTTPRoute{} }, ix.SetHTTPRoute, 1)
			},
			func() error {
				return add(mgr, "index-grpcroute", func() *gatewayv1.GRPCRoute { return &gatewayv1.GRPCRoute{} }, ix.SetGRPCRoute, 1)
			},
		)
	}
	if opts.Policies {
		steps = append(steps,
			func() error {
				return add(mgr, "index-authorizationpolicy", func() *securityv1.AuthorizationPolicy { return &securityv1.AuthorizationPolicy{} }, ix.SetAuthorizationPolicy, 1)
			},
			func() error {
				return add(mgr, "index-ratelimitpolicy", func() *policyv1alpha1.RateLimitPolicy { return &policyv1alpha1.RateLimitPolicy{} }, ix.SetRateLimitPolicy, 1)
			},
		)
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// Prime feeds the index everything in the informer cache, once it has
// synced, so that the first state clients see is complete rather than
// whatever the reconcilers have reached. The reconcilers then feed the same
// objects again, which changes nothing.
func Prime(ctx context.Context, r client.Reader, ix *index.Index, opts Options) error {
	var nss corev1.NamespaceList
	if err := r.List(ctx, &nss); err != nil {
		return fmt.Errorf("prime namespaces: %w", err)
	}
	for i := range nss.Items {
		ix.SetNamespace(nss.Items[i].Name, &nss.Items[i])
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods); err != nil {
		return fmt.Errorf("prime pods: %w", err)
	}
	for i := range pods.Items {
		ix.SetPod(pods.Items[i].Namespace, pods.Items[i].Name, &pods.Items[i])
	}
	var svcs corev1.ServiceList
	if err := r.List(ctx, &svcs); err != nil {
		return fmt.Errorf("prime services: %w", err)
	}
	for i := range svcs.Items {
		ix.SetService(svcs.Items[i].Namespace, svcs.Items[i].Name, &svcs.Items[i])
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices); err != nil {
		return fmt.Errorf("prime endpointslices: %w", err)
	}
	for i := range slices.Items {
		ix.SetEndpointSlice(slices.Items[i].Namespace, slices.Items[i].Name, &slices.Items[i])
	}
	if opts.GatewayAPI {
		var gws gatewayv1.GatewayList
		if err := r.List(ctx, &gws); err != nil {
			return fmt.Errorf("prime gateways: %w", err)
		}
		for i := range gws.Items {
			ix.SetGateway(gws.Items[i].Namespace, gws.Items[i].Name, &gws.Items[i])
		}
		var hr gatewayv1.HTTPRouteList
		if err := r.List(ctx, &hr); err != nil {
			return fmt.Errorf("prime httproutes: %w", err)
		}
		for i := range hr.Items {
			ix.SetHTTPRoute(hr.Items[i].Namespace, hr.Items[i].Name, &hr.Items[i])
		}
		var gr gatewayv1.GRPCRouteList
		if err := r.List(ctx, &gr); err != nil {
			return fmt.Errorf("prime grpcroutes: %w", err)
		}
		for i := range gr.Items {
			ix.SetGRPCRoute(gr.Items[i].Namespace, gr.Items[i].Name, &gr.Items[i])
		}
	}
	if opts.Policies {
		var aps securityv1.AuthorizationPolicyList
		if err := r.List(ctx, &aps); err != nil {
			return fmt.Errorf("prime authorizationpolicies: %w", err)
		}
		for i := range aps.Items {
			ix.SetAuthorizationPolicy(aps.Items[i].Namespace, aps.Items[i].Name, &aps.Items[i])
		}
		var rls policyv1alpha1.RateLimitPolicyList
		if err := r.List(ctx, &rls); err != nil {
			return fmt.Errorf("prime ratelimitpolicies: %w", err)
		}
		for i := range rls.Items {
			ix.SetRateLimitPolicy(rls.Items[i].Namespace, rls.Items[i].Name, &rls.Items[i])
		}
	}
	return nil
}

// TrimPod is a cache transform that drops what the index does not read
// from pods (volumes, env, annotations but the ones it reads, most of the
// status), so that a large cluster's pods cost little memory.
func TrimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	p.ManagedFields = nil
	p.Annotations = index.TrimAnnotations(p.Annotations)
	spec := corev1.PodSpec{
		NodeName:           p.Spec.NodeName,
		ServiceAccountName: p.Spec.ServiceAccountName,
		HostNetwork:        p.Spec.HostNetwork,
	}
	for _, c := range p.Spec.Containers {
		if len(c.Ports) > 0 {
			spec.Containers = append(spec.Containers, corev1.Container{Name: c.Name, Ports: c.Ports})
		}
	}
	p.Spec = spec
	p.Status = corev1.PodStatus{
		Phase:      p.Status.Phase,
		PodIP:      p.Status.PodIP,
		PodIPs:     p.Status.PodIPs,
		Conditions: readyOnly(p.Status.Conditions),
	}
	return p, nil
}

func readyOnly(cs []corev1.PodCondition) []corev1.PodCondition {
	for _, c := range cs {
		if c.Type == corev1.PodReady {
			return []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return nil
}
