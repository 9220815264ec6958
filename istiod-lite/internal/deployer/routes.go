package deployer

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// routeStatus reports, for each Service parent of an HTTPRoute or
// GRPCRoute (GAMMA), Accepted and ResolvedRefs.
type routeStatus struct {
	c    client.Client
	kind routeKind
}

// routeKind reads the parts of a route kind that status depends on.
type routeKind struct {
	newObj   func() client.Object
	parents  func(client.Object) []gatewayv1.ParentReference
	backends func(client.Object) []gatewayv1.BackendRef
	status   func(client.Object) *gatewayv1.RouteStatus
}

var httpRoutes = routeKind{
	newObj:  func() client.Object { return &gatewayv1.HTTPRoute{} },
	parents: func(o client.Object) []gatewayv1.ParentReference { return o.(*gatewayv1.HTTPRoute).Spec.ParentRefs },
	backends: func(o client.Object) []gatewayv1.BackendRef {
		var out []gatewayv1.BackendRef
		for _, r := range o.(*gatewayv1.HTTPRoute).Spec.Rules {
			for _, b := range r.BackendRefs {
				out = append(out, b.BackendRef)
			}
		}
		return out
	},
	status: func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.HTTPRoute).Status.RouteStatus },
}

var grpcRoutes = routeKind{
	newObj:  func() client.Object { return &gatewayv1.GRPCRoute{} },
	parents: func(o client.Object) []gatewayv1.ParentReference { return o.(*gatewayv1.GRPCRoute).Spec.ParentRefs },
	backends: func(o client.Object) []gatewayv1.BackendRef {
		var out []gatewayv1.BackendRef
		for _, r := range o.(*gatewayv1.GRPCRoute).Spec.Rules {
			for _, b := range r.BackendRefs {
				out = append(out, b.BackendRef)
			}
		}
		return out
	},
	status: func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.GRPCRoute).Status.RouteStatus },
}

func isService(ref gatewayv1.ParentReference) bool {
	return ref.Kind != nil && *ref.Kind == "Service" && (ref.Group == nil || *ref.Group == "" || *ref.Group == "core")
}

func (r *routeStatus) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	route := r.kind.newObj()
	if err := r.c.Get(ctx, req.NamespacedName, route); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	st := r.kind.status(route)
	routeNS, generation := route.GetNamespace(), route.GetGeneration()
	// ResolvedRefs: every backend is a Service that exists.
	resolved := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue, Reason: string(gatewayv1.RouteReasonResolvedRefs), ObservedGeneration: generation}
	for _, b := range r.kind.backends(route) {
		if (b.Kind != nil && *b.Kind != "Service") || (b.Group != nil && *b.Group != "") {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonInvalidKind), "backendRefs must be Services"
			continue
		}
		ns := routeNS
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		if ns != routeNS {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonRefNotPermitted), "cross-namespace backends are not supported"
			continue
		}
		var svc corev1.Service
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: string(b.Name)}, &svc); apierrors.IsNotFound(err) {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s not found", ns, b.Name)
		} else if err != nil {
			return reconcile.Result{}, err
		}
	}
	var parents []gatewayv1.RouteParentStatus
	for _, ref := range r.kind.parents(route) {
		if !isService(ref) {
			continue
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName}
		for _, old := range st.Parents {
			if old.ControllerName == ControllerName && parentEqual(old.ParentRef, ref) {
				ps.Conditions = old.Conditions
			}
		}
		accepted := metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionTrue, Reason: string(gatewayv1.RouteReasonAccepted), ObservedGeneration: generation}
		ns := routeNS
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		var svc corev1.Service
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: string(ref.Name)}, &svc); apierrors.IsNotFound(err) {
			accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent), fmt.Sprintf("Service %s/%s not found", ns, ref.Name)
		} else if err != nil {
			return reconcile.Result{}, err
		} else if ns != routeNS {
			accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonNotAllowedByListeners), "consumer routes (in another namespace than the Service) are not supported"
		}
		meta.SetStatusCondition(&ps.Conditions, accepted)
		meta.SetStatusCondition(&ps.Conditions, resolved)
		parents = append(parents, ps)
	}
	// Keep other controllers' entries.
	for _, old := range st.Parents {
		if old.ControllerName != ControllerName {
			parents = append(parents, old)
		}
	}
	st.Parents = parents
	if err := r.c.Status().Update(ctx, route); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

func parentEqual(a, b gatewayv1.ParentReference) bool {
	s := func(p *gatewayv1.Namespace) string {
		if p == nil {
			return ""
		}
		return string(*p)
	}
	k := func(p *gatewayv1.Kind) string {
		if p == nil {
			return ""
		}
		return string(*p)
	}
	port := func(p *gatewayv1.PortNumber) int32 {
		if p == nil {
			return 0
		}
		return int32(*p)
	}
	return a.Name == b.Name && s(a.Namespace) == s(b.Namespace) && k(a.Kind) == k(b.Kind) && port(a.Port) == port(b.Port)
}
