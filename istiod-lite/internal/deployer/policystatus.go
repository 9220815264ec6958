package deployer

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
)

// rateLimitStatus reports a RateLimitPolicy's status as Gateway API policy
// attachment does: one ancestor entry per target, Accepted when the target
// exists, TargetNotFound otherwise.
type rateLimitStatus struct {
	c client.Client
}

func (r *rateLimitStatus) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p policyv1alpha1.RateLimitPolicy
	if err := r.c.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var ancestors []gatewayv1.PolicyAncestorStatus
	for _, t := range p.Spec.TargetRefs {
		ref := gatewayv1.ParentReference{Group: ptr.To(t.Group), Kind: ptr.To(t.Kind), Name: t.Name, Namespace: ptr.To(gatewayv1.Namespace(p.Namespace))}
		st := gatewayv1.PolicyAncestorStatus{AncestorRef: ref, ControllerName: ControllerName}
		for _, old := range p.Status.Ancestors {
			if old.ControllerName == ControllerName && parentEqual(old.AncestorRef, ref) {
				st.Conditions = old.Conditions
			}
		}
		cond := metav1.Condition{Type: string(gatewayv1.PolicyConditionAccepted), Status: metav1.ConditionTrue,
			Reason: string(gatewayv1.PolicyReasonAccepted), Message: "Enforced by the waypoint of the target", ObservedGeneration: p.Generation}
		var target client.Object = &corev1.Service{}
		if t.Kind == "HTTPRoute" {
			target = &gatewayv1.HTTPRoute{}
		}
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: string(t.Name)}, target); apierrors.IsNotFound(err) {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, string(gatewayv1.PolicyReasonTargetNotFound), "target "+string(t.Kind)+" "+string(t.Name)+" not found"
		} else if err != nil {
			return reconcile.Result{}, err
		}
		meta.SetStatusCondition(&st.Conditions, cond)
		ancestors = append(ancestors, st)
	}
	for _, old := range p.Status.Ancestors {
		if old.ControllerName != ControllerName {
			ancestors = append(ancestors, old)
		}
	}
	p.Status.Ancestors = ancestors
	return reconcile.Result{}, r.c.Status().Update(ctx, &p)
}
