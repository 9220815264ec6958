package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
)

// Condition types on AuthorizationPolicy status, as Istio reports them.
const (
	ConditionZtunnelAccepted  = "ZtunnelAccepted"
	ConditionWaypointAccepted = "WaypointAccepted"
)

// authzStatus tells users how their AuthorizationPolicy is enforced: by
// ztunnel, or by the waypoint of its targets, and whether exactly as
// written (index.ZtunnelSupport, index.WaypointSupport). A CUSTOM policy
// also gets a Warning event when its status is written, since it never
// does what it asks (Skiff has no external authorizer): ztunnel ignores
// it and a waypoint enforces it as DENY.
type authzStatus struct {
	c      client.Client
	events eventRecorder
}

// eventRecorder is the part of events.EventRecorder the controller uses.
type eventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Reasons of the events about CUSTOM policies.
const (
	ReasonCustomEnforcedAsDeny = "CustomEnforcedAsDeny"
	ReasonCustomIgnored        = "CustomIgnored"
)

// SetupPolicyStatus registers the (leader-elected) AuthorizationPolicy
// status controller.
func SetupPolicyStatus(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("authorizationpolicy-status").
		For(&securityv1.AuthorizationPolicy{}).
		Complete(&authzStatus{c: mgr.GetClient(), events: mgr.GetEventRecorder("istiod-lite")})
}

func (r *authzStatus) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var p securityv1.AuthorizationPolicy
	if err := r.c.Get(ctx, req.NamespacedName, &p); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	conds := append([]metav1.Condition(nil), p.Status.Conditions...)
	changed := false
	refs := slices.Clone(p.Spec.TargetRefs)
	if p.Spec.TargetRef != nil {
		refs = append(refs, *p.Spec.TargetRef)
	}
	if len(refs) == 0 {
		c := metav1.Condition{Type: ConditionZtunnelAccepted, Status: metav1.ConditionTrue, Reason: "Accepted", Message: "Enforced by ztunnel", ObservedGeneration: p.Generation}
		if ok, msg := index.ZtunnelSupport(&p); !ok {
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, "UnsupportedValue", msg
		}
		changed = meta.SetStatusCondition(&conds, c)
		changed = meta.RemoveStatusCondition(&conds, ConditionWaypointAccepted) || changed
	} else {
		c := metav1.Condition{Type: ConditionWaypointAccepted, Status: metav1.ConditionTrue, Reason: "Accepted", Message: "Enforced by the waypoint of its targets", ObservedGeneration: p.Generation}
		for _, ref := range refs {
			if msg, err := r.checkTarget(ctx, p.Namespace, ref); err != nil {
				return reconcile.Result{}, err
			} else if msg != "" {
				c.Status, c.Reason, c.Message = metav1.ConditionFalse, "TargetNotFound", msg
				break
			}
		}
		// A missing target means nothing is enforced: that comes first.
		if c.Status == metav1.ConditionTrue {
			if ok, msg := index.WaypointSupport(&p); !ok {
				c.Status, c.Reason, c.Message = metav1.ConditionFalse, "UnsupportedValue", msg
			}
		}
		changed = meta.SetStatusCondition(&conds, c)
		changed = meta.RemoveStatusCondition(&conds, ConditionZtunnelAccepted) || changed
	}
	if !changed && p.Status.ObservedGeneration == p.Generation {
		return reconcile.Result{}, nil
	}
	// Once per change of the policy or of its status, not per resync.
	if p.Spec.Action == securityv1.ActionCustom {
		if len(refs) > 0 {
			r.events.Eventf(&p, nil, corev1.EventTypeWarning, ReasonCustomEnforcedAsDeny, "Enforce",
				"Skiff has no external authorizer (provider %q): the waypoint denies the requests this CUSTOM policy's rules match", provider(&p))
		} else {
			r.events.Eventf(&p, nil, corev1.EventTypeWarning, ReasonCustomIgnored, "Enforce",
				"Skiff has no external authorizer (provider %q) and ztunnel ignores CUSTOM policies: this policy restricts nothing; attach it to a waypoint (targetRefs) to have it enforced as DENY", provider(&p))
		}
	}
	p.Status.Conditions, p.Status.ObservedGeneration = conds, p.Generation
	return reconcile.Result{}, r.c.Status().Update(ctx, &p)
}

func provider(p *securityv1.AuthorizationPolicy) string {
	if p.Spec.Provider == nil {
		return ""
	}
	return p.Spec.Provider.Name
}

// checkTarget returns why ref cannot be enforced ("" when it can).
func (r *authzStatus) checkTarget(ctx context.Context, ns string, ref securityv1.PolicyTargetReference) (string, error) {
	if ref.Namespace != "" && ref.Namespace != ns {
		return "targets must be in the policy's namespace", nil
	}
	key := client.ObjectKey{Namespace: ns, Name: ref.Name}
	switch {
	case ref.Kind == "Gateway" && ref.Group == gatewayv1.GroupName:
		var g gatewayv1.Gateway
		if err := r.c.Get(ctx, key, &g); apierrors.IsNotFound(err) || (err == nil && g.Spec.GatewayClassName != index.WaypointClass) {
			return fmt.Sprintf("no waypoint Gateway %s/%s", ns, ref.Name), nil
		} else if err != nil {
			return "", err
		}
	case ref.Kind == "Service" && (ref.Group == "" || ref.Group == "core"):
		var s corev1.Service
		if err := r.c.Get(ctx, key, &s); apierrors.IsNotFound(err) {
			return fmt.Sprintf("no Service %s/%s", ns, ref.Name), nil
		} else if err != nil {
			return "", err
		}
	default:
		return fmt.Sprintf("unsupported target kind %s.%s", ref.Kind, ref.Group), nil
	}
	return "", nil
}
