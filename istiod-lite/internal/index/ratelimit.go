package index

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1alpha1 "github.com/skiffmesh/skiff/pkg/apis/policy/v1alpha1"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// RateLimitPolicy translation. A policy becomes one waypointapi.RateLimit
// per target the waypoint of a service can enforce: the Service itself, an
// HTTPRoute attached to it, or one named rule of such a route. A target
// that does not exist, names no rule, or is of a kind the waypoint does
// not support is left out, and the policy's other targets are kept; the
// policy's status says why (RateLimitTargetSupported, HasRule).
//
// Admission (the CRD's schema and CEL rules) refuses malformed values, but
// the index never trusts that: a value that could only come from a
// schema that was bypassed or is out of date is read the strict way
// where there is one (a bucket of at least one token, the shortest
// interval, one bucket for all clients, Deny for an unknown failure
// mode), as the default otherwise (an unknown mode is Local), or left out
// when it names a client that cannot be identified (that client keeps the
// policy's own limit); RateLimitProblems says so. The waypoint never
// receives a limit it would refuse.

// Fill intervals of the units a Limit refills over.
const (
	fillSecondMs = 1000
	fillMinuteMs = 60_000
	fillHourMs   = 3_600_000
)

// RateLimitTargetSupported reports whether the waypoint can enforce a
// RateLimitPolicy through target t, whether or not it exists: a whole
// HTTPRoute (group gateway.networking.k8s.io), one rule of it named by
// sectionName, or a whole Service (group ""). When it cannot, message says
// why, for the policy's status (reason Invalid).
func RateLimitTargetSupported(t gatewayv1.LocalPolicyTargetReferenceWithSectionName) (ok bool, message string) {
	switch {
	case t.Group == gatewayv1.GroupName && t.Kind == "HTTPRoute":
		return true, ""
	case t.Group == "" && t.Kind == "Service":
		if sectionName(t.SectionName) != "" {
			return false, fmt.Sprintf("sectionName %q is not supported on a Service target: to limit one rule of an HTTPRoute, target the HTTPRoute with the rule's name", *t.SectionName)
		}
		return true, ""
	}
	return false, fmt.Sprintf("target kind %s in group %q is not supported: target an HTTPRoute (group %s) or a Service (group \"\")", t.Kind, t.Group, gatewayv1.GroupName)
}

// HasRule reports whether r has a rule named name, the rule a
// RateLimitPolicy target's sectionName selects. An empty name selects the
// whole route, which every route has.
func HasRule(r *gatewayv1.HTTPRoute, name string) bool {
	return name == "" || slices.ContainsFunc(r.Spec.Rules, func(rule gatewayv1.HTTPRouteRule) bool {
		return sectionName(rule.Name) == name
	})
}

// RateLimitProblems lists the values of p the waypoints cannot use as
// written, each starting with the path of its field in the spec, and
// what they do instead. It is empty for every policy admission accepts.
func RateLimitProblems(p *policyv1alpha1.RateLimitPolicy) []string {
	// The trust domain names service accounts but cannot make one valid
	// or invalid, so any valid one finds the same problems.
	_, problems := translateRateLimit(p, spiffeid.RequireTrustDomainFromString("cluster.local"))
	return problems
}

// serviceRateLimits returns the limits the waypoint applies to requests to
// s: those of the policies in s's namespace that target s, or a route in
// routes (the HTTPRoutes attached to s) or one of its rules, by policy
// namespace/name and then in the order of the policy's targets. keys are
// the keys of the RateLimitPolicies in s's namespace, sorted.
func (ix *Index) serviceRateLimits(s *serviceInfo, routes map[key]bool, keys []key) []*waypointapi.RateLimit {
	td, err := spiffeid.TrustDomainFromString(ix.opts.TrustDomain)
	if err != nil {
		// Service accounts cannot be named, and their overrides are left
		// out: the clients they list keep the policy's own limit.
		td = spiffeid.TrustDomain{}
	}
	var out []*waypointapi.RateLimit
	for _, k := range keys {
		p := ix.rateLimits[k]
		targets := ix.enforcedTargets(p, s, routes)
		if len(targets) == 0 {
			continue
		}
		base, _ := translateRateLimit(p, td)
		for _, t := range targets {
			rl := proto.CloneOf(base)
			rl.Route, rl.Rule = t.route, t.rule
			out = append(out, rl)
		}
	}
	return out
}

// limitScope is what one RateLimit applies to: route "" for every request
// to the service, rule "" for every request the route matches.
type limitScope struct{ route, rule string }

// enforcedTargets returns the scopes through which p applies to s, without
// repeats. A rule of a route the policy also targets whole is left out:
// with the same limit, the rule's bucket would never refuse a request the
// route's lets through, only cost the waypoint a bucket and a check.
func (ix *Index) enforcedTargets(p *policyv1alpha1.RateLimitPolicy, s *serviceInfo, routes map[key]bool) []limitScope {
	var out []limitScope
	for _, t := range p.Spec.TargetRefs {
		if ok, _ := RateLimitTargetSupported(t); !ok {
			continue
		}
		var sc limitScope
		switch t.Kind {
		case "Service":
			if string(t.Name) != s.name {
				continue
			}
		case "HTTPRoute":
			rk := keyOf(p.Namespace, string(t.Name))
			r := ix.httpRoutes[rk]
			if !routes[rk] || r == nil || !HasRule(r, sectionName(t.SectionName)) {
				continue
			}
			sc = limitScope{route: rk, rule: sectionName(t.SectionName)}
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return slices.DeleteFunc(out, func(sc limitScope) bool {
		return sc.rule != "" && slices.Contains(out, limitScope{route: sc.route})
	})
}

// translateRateLimit turns p into the limit every target of it shares
// (Route and Rule unset), with td the trust domain of the service
// accounts its overrides name. problems says what was read differently
// from what is written, or left out (see RateLimitProblems).
func translateRateLimit(p *policyv1alpha1.RateLimitPolicy, td spiffeid.TrustDomain) (rl *waypointapi.RateLimit, problems []string) {
	problem := func(field, format string, args ...any) {
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}
	rl = &waypointapi.RateLimit{Policy: keyOf(p.Namespace, p.Name), Key: &waypointapi.RateLimitKey{}}
	rl.Requests, rl.FillIntervalMs, rl.Burst = bucket(p.Spec.Limit, "limit", problem)
	if k := p.Spec.Key; k != nil {
		switch k.Type {
		case policyv1alpha1.KeySourceIdentity:
			rl.Key.Type = waypointapi.RateLimitKey_SOURCE_IDENTITY
		case policyv1alpha1.KeySourceIP:
			rl.Key.Type = waypointapi.RateLimitKey_SOURCE_IP
		case policyv1alpha1.KeyHeader:
			if err := waypointapi.CheckHeaderName(k.Header); err != nil {
				problem("key.header", "%v; all clients share one bucket", err)
				break
			}
			rl.Key.Type, rl.Key.Header = waypointapi.RateLimitKey_HEADER, strings.ToLower(k.Header)
		default:
			problem("key.type", "unknown type %q; all clients share one bucket", k.Type)
		}
	}
	for i, o := range p.Spec.Overrides {
		field := fmt.Sprintf("overrides[%d]", i)
		ro := &waypointapi.RateLimitOverride{}
		ro.Requests, ro.FillIntervalMs, ro.Burst = bucket(o.Limit, field+".limit", problem)
		for j, v := range o.Principals {
			id, err := principalID(string(v))
			if err != nil {
				problem(fmt.Sprintf("%s.principals[%d]", field, j), "%v; left out, so that client has the policy's limit", err)
				continue
			}
			ro.Principals = append(ro.Principals, id.String())
		}
		for j, sa := range o.ServiceAccounts {
			ns := cmp.Or(sa.Namespace, p.Namespace)
			id, err := identity.WorkloadID(td, ns, sa.Name)
			if err != nil {
				problem(fmt.Sprintf("%s.serviceAccounts[%d]", field, j), "%v; left out, so that client has the policy's limit", err)
				continue
			}
			ro.Principals = append(ro.Principals, id.String())
		}
		if len(ro.Principals) == 0 {
			problem(field, "lists no client the waypoint can identify; the override is left out")
			continue
		}
		rl.Overrides = append(rl.Overrides, ro)
	}
	switch p.Spec.Mode {
	case "", policyv1alpha1.ModeLocal:
	case policyv1alpha1.ModeGlobal:
		rl.Mode = waypointapi.RateLimit_GLOBAL
	default:
		problem("mode", "unknown mode %q; the limit is kept in each waypoint replica (Local)", p.Spec.Mode)
	}
	switch fm := p.Spec.FailureMode; {
	case fm != "" && rl.Mode != waypointapi.RateLimit_GLOBAL:
		problem("failureMode", "applies only to mode Global; ignored")
	case fm == "", fm == policyv1alpha1.FailureModeAllow:
	case fm == policyv1alpha1.FailureModeDeny:
		rl.FailureMode = waypointapi.RateLimit_DENY
	default:
		// A global limit that cannot be checked refuses requests rather
		// than let through what the policy was written to stop.
		problem("failureMode", "unknown failure mode %q; requests are refused when the rate-limit service cannot answer (Deny)", fm)
		rl.FailureMode = waypointapi.RateLimit_DENY
	}
	return rl, problems
}

// bucket converts a Limit: requests and burst of at least one token,
// burst defaulting to requests, and the unit's fill interval, a second for
// a unit this code does not know (the strictest). problem reports what is
// read differently, under field.
func bucket(l policyv1alpha1.Limit, field string, problem func(field, format string, args ...any)) (requests, fillIntervalMs, burst uint32) {
	requests = l.Requests
	if requests == 0 {
		problem(field+".requests", "must be at least 1; 1 is used")
		requests = 1
	}
	switch l.Unit {
	case policyv1alpha1.Second:
		fillIntervalMs = fillSecondMs
	case policyv1alpha1.Minute:
		fillIntervalMs = fillMinuteMs
	case policyv1alpha1.Hour:
		fillIntervalMs = fillHourMs
	default:
		problem(field+".unit", "unknown unit %q; Second is used", l.Unit)
		fillIntervalMs = fillSecondMs
	}
	burst = requests
	if l.Burst != nil {
		burst = *l.Burst
		if burst == 0 {
			problem(field+".burst", "must be at least 1; 1 is used")
			burst = 1
		}
	}
	return requests, fillIntervalMs, burst
}

// principalID reads a client named as Istio's AuthorizationPolicy names
// principals, "<trust domain>/ns/<namespace>/sa/<service account>", or as
// the SPIFFE ID itself. Only a workload identity is accepted: an override
// is matched against the identity of the client's certificate, exactly.
func principalID(v string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString("spiffe://" + strings.TrimPrefix(v, "spiffe://"))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("principal %q: %w", v, err)
	}
	if _, _, err := identity.ParseWorkloadID(id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("principal %q: %w", v, err)
	}
	return id, nil
}
