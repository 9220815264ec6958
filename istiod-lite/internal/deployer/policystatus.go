package deployer

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
)

// rateLimitStatus reports a RateLimitPolicy's status as Gateway API policy
// attachment does: one ancestor entry per target (with its sectionName),
// whose Accepted condition says whether the waypoint enforces the policy
// through it. A policy partly valid keeps its valid targets, as the
// translation does (the index applies the same checks): Invalid for a
// target of a kind the waypoint does not support, or a sectionName on a
// Service; TargetNotFound for a target that does not exist, or a
// sectionName naming no rule of the HTTPRoute; Invalid on every target for
// values admission would have refused, which the waypoint reads another
// way (index.RateLimitProblems).
type rateLimitStatus struct {
	c client.Client
}

func (r *rateLimitStatus) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p policyv1alpha1.RateLimitPolicy
	if err := r.c.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	problems := index.RateLimitProblems(&p)
	var ancestors []gatewayv1.PolicyAncestorStatus
	for _, t := range p.Spec.TargetRefs {
		ref := ancestorRef(p.Namespace, t)
		if hasAncestor(ancestors, ref) {
			continue // a repeated target, which admission refuses
		}
		cond, err := r.accepted(ctx, &p, t, problems)
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("status of RateLimitPolicy %s: %w", req.NamespacedName, err)
		}
		st := gatewayv1.PolicyAncestorStatus{AncestorRef: ref, ControllerName: ControllerName}
		for _, old := range p.Status.Ancestors {
			if old.ControllerName == ControllerName && parentEqual(old.AncestorRef, ref) {
				// A copy: setting a condition edits the slice in place,
				// and the old status must stay as read to compare with.
				st.Conditions = slices.Clone(old.Conditions)
			}
		}
		meta.SetStatusCondition(&st.Conditions, cond)
		ancestors = append(ancestors, st)
	}
	for _, old := range p.Status.Ancestors {
		if old.ControllerName != ControllerName {
			ancestors = append(ancestors, old)
		}
	}
	if equality.Semantic.DeepEqual(p.Status.Ancestors, ancestors) {
		return reconcile.Result{}, nil
	}
	p.Status.Ancestors = ancestors
	return reconcile.Result{}, r.c.Status().Update(ctx, &p)
}

// accepted is the Accepted condition of target t of p. problems are the
// policy's own (index.RateLimitProblems); a problem of the target comes
// first, since the waypoint then enforces nothing through it.
func (r *rateLimitStatus) accepted(ctx context.Context, p *policyv1alpha1.RateLimitPolicy, t gatewayv1.LocalPolicyTargetReferenceWithSectionName, problems []string) (metav1.Condition, error) {
	cond := metav1.Condition{Type: string(gatewayv1.PolicyConditionAccepted), Status: metav1.ConditionTrue,
		Reason: string(gatewayv1.PolicyReasonAccepted), Message: "Enforced by the waypoint of the target", ObservedGeneration: p.Generation}
	refuse := func(reason gatewayv1.PolicyConditionReason, format string, args ...any) (metav1.Condition, error) {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, string(reason), fmt.Sprintf(format, args...)
		return cond, nil
	}
	if ok, msg := index.RateLimitTargetSupported(t); !ok {
		return refuse(gatewayv1.PolicyReasonInvalid, "%s", msg)
	}
	key := client.ObjectKey{Namespace: p.Namespace, Name: string(t.Name)}
	var target client.Object = &corev1.Service{}
	route := &gatewayv1.HTTPRoute{}
	if t.Kind == "HTTPRoute" {
		target = route
	}
	if err := r.c.Get(ctx, key, target); apierrors.IsNotFound(err) {
		return refuse(gatewayv1.PolicyReasonTargetNotFound, "%s %s not found", t.Kind, key)
	} else if err != nil {
		return cond, err
	}
	if section := ptr.Deref(t.SectionName, ""); t.Kind == "HTTPRoute" && !index.HasRule(route, string(section)) {
		return refuse(gatewayv1.PolicyReasonTargetNotFound, "HTTPRoute %s has no rule named %q (sectionName names a rule by its name)", key, section)
	}
	if len(problems) > 0 {
		return refuse(gatewayv1.PolicyReasonInvalid, "Values admission refuses, which the waypoint reads another way: %s", strings.Join(problems, "; "))
	}
	return cond, nil
}

// ancestorRef is the status entry's reference to target t of a policy in
// ns: the target itself, with its sectionName, so that two rules of one
// route have an entry each.
func ancestorRef(ns string, t gatewayv1.LocalPolicyTargetReferenceWithSectionName) gatewayv1.ParentReference {
	ref := gatewayv1.ParentReference{Group: ptr.To(t.Group), Kind: ptr.To(t.Kind), Name: t.Name, Namespace: ptr.To(gatewayv1.Namespace(ns))}
	if t.SectionName != nil && *t.SectionName != "" {
		ref.SectionName = ptr.To(*t.SectionName)
	}
	return ref
}

func hasAncestor(as []gatewayv1.PolicyAncestorStatus, ref gatewayv1.ParentReference) bool {
	for _, a := range as {
		if parentEqual(a.AncestorRef, ref) && ptr.Deref(a.AncestorRef.Group, "") == ptr.Deref(ref.Group, "") {
			return true
		}
	}
	return false
}

// rateLimitPoliciesTargeting maps an object of kind (HTTPRoute or Service)
// to the RateLimitPolicies in its namespace that target it, whose status
// changes when it appears, goes, or renames a rule.
func rateLimitPoliciesTargeting(c client.Client, kind gatewayv1.Kind) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list policyv1alpha1.RateLimitPolicyList
		if err := c.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		var reqs []reconcile.Request
		for _, p := range list.Items {
			for _, t := range p.Spec.TargetRefs {
				if t.Kind == kind && string(t.Name) == obj.GetName() {
					reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
					break
				}
			}
		}
		return reqs
	}
}
