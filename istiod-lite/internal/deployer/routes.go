package deployer

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
)

// routeStatus reports, for each Service parent of an HTTPRoute or
// GRPCRoute (GAMMA), Accepted and ResolvedRefs, and PartiallyInvalid when
// the waypoint cannot carry out some of the route's rules as written
// (index.UnsupportedHTTPRules): a filter it does not support, or a value it
// would refuse, such as a regular expression RE2 cannot compile.
type routeStatus struct {
	c    client.Client
	kind routeKind
}

// routeKind reads the parts of a route kind that status depends on.
type routeKind struct {
	newObj  func() client.Object
	parents func(client.Object) []gatewayv1.ParentReference
	// backends are the rules' backendRefs and their mirrors' backends.
	backends func(client.Object) []gatewayv1.BackendRef
	rules    func(client.Object) int
	// unsupported lists the rules the waypoint does not carry out.
	unsupported func(client.Object) []index.UnsupportedRule
	status      func(client.Object) *gatewayv1.RouteStatus
}

// mirrorBackend is the backend of a RequestMirror filter, nil for another
// filter: it must resolve like the rule's own backends.
func mirrorBackend(m *gatewayv1.HTTPRequestMirrorFilter) []gatewayv1.BackendRef {
	if m == nil {
		return nil
	}
	return []gatewayv1.BackendRef{{BackendObjectReference: m.BackendRef}}
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
			for _, f := range r.Filters {
				out = append(out, mirrorBackend(f.RequestMirror)...)
			}
		}
		return out
	},
	rules: func(o client.Object) int { return len(o.(*gatewayv1.HTTPRoute).Spec.Rules) },
	unsupported: func(o client.Object) []index.UnsupportedRule {
		return index.UnsupportedHTTPRules(o.(*gatewayv1.HTTPRoute))
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
			for _, f := range r.Filters {
				out = append(out, mirrorBackend(f.RequestMirror)...)
			}
		}
		return out
	},
	rules: func(o client.Object) int { return len(o.(*gatewayv1.GRPCRoute).Spec.Rules) },
	unsupported: func(o client.Object) []index.UnsupportedRule {
		return index.UnsupportedGRPCRules(o.(*gatewayv1.GRPCRoute))
	},
	status: func(o client.Object) *gatewayv1.RouteStatus { return &o.(*gatewayv1.GRPCRoute).Status.RouteStatus },
}

// unsupportedConditions say what the waypoint does with the rules it
// cannot carry out, with reason UnsupportedValue. When some rules are
// unsupported, PartiallyInvalid (whose message must start "Dropped Rule");
// when all are, the route is not Accepted. The message names each rule,
// each problem's field and what the waypoint does instead: it answers the
// rule's requests with HTTP 500 rather than letting them through
// unfiltered (fail closed), or, when no match of the rule is valid, leaves
// it out.
func unsupportedConditions(bad []index.UnsupportedRule, rules int, generation int64) (notAccepted, partial *metav1.Condition) {
	if len(bad) == 0 {
		return nil, nil
	}
	parts := make([]string, len(bad))
	for i, u := range bad {
		parts[i] = strconv.Itoa(u.Index)
		if u.Name != "" {
			parts[i] += fmt.Sprintf(" (%q)", u.Name)
		}
		parts[i] += ": " + u.Reason
		if u.LeftOut {
			parts[i] += "; no match of the rule is valid, so the waypoint leaves it out"
		} else {
			parts[i] += "; the waypoint answers its requests with HTTP 500"
		}
	}
	what := strings.Join(parts, ". Rule ") + "."
	if len(bad) == rules {
		return &metav1.Condition{Type: string(gatewayv1.RouteConditionAccepted), Status: metav1.ConditionFalse, Reason: string(gatewayv1.RouteReasonUnsupportedValue),
			Message: "No rule is supported: rule " + what, ObservedGeneration: generation}, nil
	}
	return nil, &metav1.Condition{Type: string(gatewayv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue, Reason: string(gatewayv1.RouteReasonUnsupportedValue),
		Message: "Dropped Rule " + what, ObservedGeneration: generation}
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
	notAccepted, partial := unsupportedConditions(r.kind.unsupported(route), r.kind.rules(route), generation)
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
		if notAccepted != nil {
			accepted = *notAccepted
		}
		ns := routeNS
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		var svc corev1.Service
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: string(ref.Name)}, &svc); apierrors.IsNotFound(err) {
			accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent), fmt.Sprintf("Service %s/%s not found", ns, ref.Name)
		} else if err != nil {
			return reconcile.Result{}, err
		} else if _, ok := index.ParentPort(ref, svc.Spec.Ports); !ok {
			accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent), fmt.Sprintf("Service %s/%s has no port %s", ns, ref.Name, portName(ref))
		}
		resolved, err := r.resolvedRefs(ctx, route, ref)
		if err != nil {
			return reconcile.Result{}, err
		}
		meta.SetStatusCondition(&ps.Conditions, accepted)
		meta.SetStatusCondition(&ps.Conditions, resolved)
		// PartiallyInvalid is only ever True, and only on an accepted route.
		if partial != nil && accepted.Status == metav1.ConditionTrue {
			meta.SetStatusCondition(&ps.Conditions, *partial)
		} else {
			meta.RemoveStatusCondition(&ps.Conditions, string(gatewayv1.RouteConditionPartiallyInvalid))
		}
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

// resolvedRefs is the ResolvedRefs condition of route for its Service
// parent: every backend is a Service that exists and that the route may
// name without a ReferenceGrant, which Skiff does not implement
// (index.BackendPermitted): one in the route's namespace or, for a
// consumer route (GEP-1294), the parent Service itself. A consumer route
// is accepted like a producer route; a backend in another namespace than
// those is RefNotPermitted, and the waypoint leaves it out.
func (r *routeStatus) resolvedRefs(ctx context.Context, route client.Object, parent gatewayv1.ParentReference) (metav1.Condition, error) {
	routeNS := route.GetNamespace()
	resolved := metav1.Condition{Type: string(gatewayv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue, Reason: string(gatewayv1.RouteReasonResolvedRefs), ObservedGeneration: route.GetGeneration()}
	for _, b := range r.kind.backends(route) {
		if (b.Kind != nil && *b.Kind != "Service") || (b.Group != nil && *b.Group != "") {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonInvalidKind), "backendRefs must be Services"
			continue
		}
		ns := routeNS
		if b.Namespace != nil && *b.Namespace != "" {
			ns = string(*b.Namespace)
		}
		if !index.BackendPermitted(routeNS, parent, b.BackendObjectReference) {
			resolved.Status, resolved.Reason = metav1.ConditionFalse, string(gatewayv1.RouteReasonRefNotPermitted)
			resolved.Message = fmt.Sprintf("backendRef to Service %s/%s is not permitted: without a ReferenceGrant (which Skiff does not support), a route may name Services of its own namespace and, for a consumer route, the Service it is attached to", ns, b.Name)
			continue
		}
		var svc corev1.Service
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: string(b.Name)}, &svc); apierrors.IsNotFound(err) {
			resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s not found", ns, b.Name)
		} else if err != nil {
			return metav1.Condition{}, fmt.Errorf("backendRef Service %s/%s: %w", ns, b.Name, err)
		}
	}
	return resolved, nil
}

// portName describes the port a parentRef names, for a status message.
func portName(ref gatewayv1.ParentReference) string {
	var parts []string
	if ref.SectionName != nil && *ref.SectionName != "" {
		parts = append(parts, fmt.Sprintf("named %q", *ref.SectionName))
	}
	if ref.Port != nil {
		parts = append(parts, fmt.Sprintf("numbered %d", *ref.Port))
	}
	return strings.Join(parts, " and ")
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
	section := func(p *gatewayv1.SectionName) string {
		if p == nil {
			return ""
		}
		return string(*p)
	}
	return a.Name == b.Name && s(a.Namespace) == s(b.Namespace) && k(a.Kind) == k(b.Kind) && port(a.Port) == port(b.Port) && section(a.SectionName) == section(b.SectionName)
}
