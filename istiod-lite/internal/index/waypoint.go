package index

import (
	"cmp"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	securityv1 "github.com/skiffmesh/skiff/pkg/apis/security/v1"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// boundGateway is the waypoint key an object is bound to by its labels or
// its namespace's, whatever the waypoint serves.
func (ix *Index) boundGateway(ns string, labels map[string]string) key {
	name, wpNS := labels[LabelUseWaypoint], labels[LabelUseWaypointNS]
	if name == "" {
		name, wpNS = ix.nsLabel(ns, LabelUseWaypoint), ix.nsLabel(ns, LabelUseWaypointNS)
	}
	if name == "" || name == waypointNone {
		return ""
	}
	if wpNS == "" {
		wpNS = ns
	}
	return keyOf(wpNS, name)
}

// waypointInputs is what waypoint configurations are made of, grouped by
// what it attaches to, so that building every waypoint costs one pass over
// the services, routes and policies instead of one per service bound to a
// waypoint (with 5,000 services, 1,000 routes and 2,000 policies, the
// difference between milliseconds and seconds per push).
type waypointInputs struct {
	// services bound to each waypoint (by gateway key), whatever it serves.
	services map[key][]*serviceInfo
	// httpRoutes and grpcRoutes whose parentRefs name a Service (by service
	// key), in precedence order (sortedRoutes).
	httpRoutes map[key][]*gatewayv1.HTTPRoute
	grpcRoutes map[key][]*gatewayv1.GRPCRoute
	// policies whose targets name an object (by policyTarget), in key order.
	policies map[policyTarget][]*securityv1.AuthorizationPolicy
	// rateLimits holds the keys of each namespace's RateLimitPolicies, sorted.
	rateLimits map[string][]key
}

// policyTarget is a kind and name a policy in namespace ns targets.
type policyTarget struct{ ns, kind, name string }

func (ix *Index) waypointInputs() *waypointInputs {
	in := &waypointInputs{
		services:   map[key][]*serviceInfo{},
		httpRoutes: map[key][]*gatewayv1.HTTPRoute{},
		grpcRoutes: map[key][]*gatewayv1.GRPCRoute{},
		policies:   map[policyTarget][]*securityv1.AuthorizationPolicy{},
		rateLimits: map[string][]key{},
	}
	if len(ix.gateways) == 0 {
		return in // no waypoint to build
	}
	for _, s := range ix.services {
		if s.external || s.labels[LabelGatewayName] != "" {
			continue
		}
		if gk := ix.boundGateway(s.ns, s.labels); gk != "" {
			in.services[gk] = append(in.services[gk], s)
		}
	}
	for _, r := range sortedRoutes(ix.httpRoutes, func(r *gatewayv1.HTTPRoute) metaOf { return metaOf{r.Namespace, r.Name, r.CreationTimestamp.Time} }) {
		for _, sk := range serviceParents(r.Spec.ParentRefs, r.Namespace) {
			in.httpRoutes[sk] = append(in.httpRoutes[sk], r)
		}
	}
	for _, r := range sortedRoutes(ix.grpcRoutes, func(r *gatewayv1.GRPCRoute) metaOf { return metaOf{r.Namespace, r.Name, r.CreationTimestamp.Time} }) {
		for _, sk := range serviceParents(r.Spec.ParentRefs, r.Namespace) {
			in.grpcRoutes[sk] = append(in.grpcRoutes[sk], r)
		}
	}
	for _, p := range sortedPolicies(ix.authz) {
		refs := p.Spec.TargetRefs
		if p.Spec.TargetRef != nil {
			refs = append(slices.Clone(refs), *p.Spec.TargetRef)
		}
		var seen []policyTarget
		for _, r := range refs {
			t := policyTarget{ns: p.Namespace, kind: r.Kind, name: r.Name}
			if !slices.Contains(seen, t) {
				seen = append(seen, t)
				in.policies[t] = append(in.policies[t], p)
			}
		}
	}
	for k, p := range ix.rateLimits {
		in.rateLimits[p.Namespace] = append(in.rateLimits[p.Namespace], k)
	}
	for _, keys := range in.rateLimits {
		slices.Sort(keys)
	}
	return in
}

// serviceParents returns the keys of the Services that parentRefs of a
// route in routeNS name, each once.
func serviceParents(refs []gatewayv1.ParentReference, routeNS string) []key {
	var out []key
	for _, ref := range refs {
		if !isServiceRef(ref) {
			continue
		}
		if k := keyOf(parentNamespace(ref, routeNS), string(ref.Name)); !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// buildWaypoint builds g's configuration. To build more than one, group
// the inputs once (waypointInputs) and call buildWaypointFrom for each.
func (ix *Index) buildWaypoint(g *gatewayInfo) *waypointapi.Waypoint {
	return ix.buildWaypointFrom(g, ix.waypointInputs())
}

// buildWaypointFrom builds g's configuration from inputs in.
func (ix *Index) buildWaypointFrom(g *gatewayInfo, in *waypointInputs) *waypointapi.Waypoint {
	wp := &waypointapi.Waypoint{Name: g.name, Namespace: g.ns, TrustDomain: ix.opts.TrustDomain}
	if g.serves(WaypointForService) {
		for _, s := range in.services[keyOf(g.ns, g.name)] {
			wp.Services = append(wp.Services, ix.waypointService(s, in))
		}
	}
	slices.SortFunc(wp.Services, func(a, b *waypointapi.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Hostname, b.Hostname))
	})
	for _, p := range in.policies[policyTarget{ns: g.ns, kind: "Gateway", name: g.name}] {
		if targets(p, gatewayv1.GroupName, "Gateway", g.name) {
			wp.Policies = append(wp.Policies, ix.waypointPolicy(p))
		}
	}
	return wp
}

func sortedPolicies(m map[key]*securityv1.AuthorizationPolicy) []*securityv1.AuthorizationPolicy {
	keys := make([]key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*securityv1.AuthorizationPolicy, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func targets(p *securityv1.AuthorizationPolicy, group, kind, name string) bool {
	refs := p.Spec.TargetRefs
	if p.Spec.TargetRef != nil {
		refs = append(slices.Clone(refs), *p.Spec.TargetRef)
	}
	for _, r := range refs {
		if r.Kind == kind && r.Name == name && (r.Group == group || (group == "" && r.Group == "core")) && (r.Namespace == "" || r.Namespace == p.Namespace) {
			return true
		}
	}
	return false
}

func (ix *Index) waypointService(s *serviceInfo, in *waypointInputs) *waypointapi.Service {
	out := &waypointapi.Service{Name: s.name, Namespace: s.ns, Hostname: ix.hostname(s.ns, s.name)}
	for _, ip := range s.vips {
		out.Vips = append(out.Vips, ip.AsSlice())
	}
	for _, sp := range s.ports {
		p := &waypointapi.ServicePort{Name: sp.name, Port: sp.port, AppProtocol: sp.appProtocol}
		if sp.targetPort.Type == 0 {
			p.TargetPort = uint32(sp.targetPort.IntVal)
			if p.TargetPort == 0 {
				p.TargetPort = sp.port
			}
		}
		out.Ports = append(out.Ports, p)
	}
	sk := keyOf(s.ns, s.name)
	routeKeys := map[string]bool{}
	for _, r := range in.httpRoutes[sk] {
		for _, ref := range r.Spec.ParentRefs {
			port, ok := s.parentPort(ref, r.Namespace)
			if !ok {
				continue
			}
			out.HttpRoutes = append(out.HttpRoutes, ix.httpRoute(r, port, s))
			routeKeys[keyOf(r.Namespace, r.Name)] = true
		}
	}
	for _, r := range in.grpcRoutes[sk] {
		for _, ref := range r.Spec.ParentRefs {
			if port, ok := s.parentPort(ref, r.Namespace); ok {
				out.GrpcRoutes = append(out.GrpcRoutes, ix.grpcRoute(r, port, s))
			}
		}
	}
	out.RateLimits = ix.serviceRateLimits(s, routeKeys, in.rateLimits[s.ns])
	for _, p := range in.policies[policyTarget{ns: s.ns, kind: "Service", name: s.name}] {
		if targets(p, "", "Service", s.name) {
			out.Policies = append(out.Policies, ix.waypointPolicy(p))
		}
	}
	return out
}

type metaOf struct {
	ns, name string
	created  time.Time
}

// sortedRoutes orders routes as Gateway API precedence asks: oldest first,
// then by namespace/name.
func sortedRoutes[T any](m map[key]*T, meta func(*T) metaOf) []*T {
	out := make([]*T, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *T) int {
		ma, mb := meta(a), meta(b)
		return cmp.Or(ma.created.Compare(mb.created), cmp.Compare(ma.ns, mb.ns), cmp.Compare(ma.name, mb.name))
	})
	return out
}

// refersToService reports whether a parentRef of a route in routeNS names
// service s (GAMMA: group "" or "core", kind Service). The route is a
// producer route when routeNS is the service's namespace, and a consumer
// route otherwise (GEP-1294), which the waypoint applies to routeNS's
// clients only (consumerScope).
func refersToService(ref gatewayv1.ParentReference, routeNS string, s *serviceInfo) bool {
	return isServiceRef(ref) && parentNamespace(ref, routeNS) == s.ns && string(ref.Name) == s.name
}

// consumerScope returns, for a route in routeNS attached to service s,
// the namespace whose clients alone it applies to ("" for a producer
// route, which applies to every client) and what its backendRefs may
// name.
func consumerScope(routeNS string, s *serviceInfo) (consumerNS string, scope refScope) {
	if routeNS == s.ns {
		return "", refScope{routeNS: routeNS}
	}
	return routeNS, refScope{routeNS: routeNS, parents: []key{keyOf(s.ns, s.name)}}
}

// parentPort returns the port a route in routeNS attaches to through ref,
// when ref names s: 0 for every port, and ok false when ref does not
// name s or names no port of it.
func (s *serviceInfo) parentPort(ref gatewayv1.ParentReference, routeNS string) (port uint32, ok bool) {
	if !refersToService(ref, routeNS, s) {
		return 0, false
	}
	return attachedPort(ref, func(yield func(string, uint32) bool) {
		for _, p := range s.ports {
			if !yield(p.name, p.port) {
				return
			}
		}
	})
}

// ParentPort resolves the port a Service parentRef attaches a route to
// among the Service's ports: 0 means every port. ok is false when the ref
// names no port of the Service, or names two different ones, and the
// route then does not attach. For a Service parent, sectionName is a port
// name and port a port number; when both are set they must name the same
// port (ParentReference, GEP-1426).
func ParentPort(ref gatewayv1.ParentReference, ports []corev1.ServicePort) (port uint32, ok bool) {
	return attachedPort(ref, func(yield func(string, uint32) bool) {
		for _, p := range ports {
			if !yield(p.Name, uint32(p.Port)) {
				return
			}
		}
	})
}

func attachedPort(ref gatewayv1.ParentReference, ports iter.Seq2[string, uint32]) (uint32, bool) {
	if (ref.SectionName == nil || *ref.SectionName == "") && ref.Port == nil {
		return 0, true
	}
	for name, number := range ports {
		if ref.SectionName != nil && *ref.SectionName != "" && string(*ref.SectionName) != name {
			continue
		}
		if ref.Port != nil && uint32(*ref.Port) != number {
			continue
		}
		return number, true
	}
	return 0, false
}

// backend translates a backendRef, or returns nil for one the waypoint must
// not send to: a kind other than Service, or a Service in another namespace
// scope does not permit (Skiff has no ReferenceGrant, and the route's
// status says RefNotPermitted).
func (ix *Index) backend(scope refScope, ref gatewayv1.BackendRef) *waypointapi.BackendRef {
	if !scope.kept(ref) {
		return nil
	}
	ns := scope.namespace(ref.BackendObjectReference)
	b := &waypointapi.BackendRef{Name: string(ref.Name), Namespace: ns, Hostname: ix.hostname(ns, string(ref.Name)), Weight: 1}
	if ref.Port != nil {
		b.Port = uint32(*ref.Port)
	}
	if ref.Weight != nil {
		b.Weight = uint32(max(*ref.Weight, 0))
	}
	return b
}

// routeBackend translates a rule's backendRef with its own filters.
func (ix *Index) routeBackend(scope refScope, ref gatewayv1.BackendRef, filters []gatewayv1.HTTPRouteFilter) *waypointapi.BackendRef {
	b := ix.backend(scope, ref)
	if b == nil {
		return nil
	}
	for _, f := range filters {
		if hf := ix.httpFilter(scope, f); hf != nil {
			b.Filters = append(b.Filters, hf)
		}
	}
	return b
}

// httpRoute translates route r attached to port of service s.
func (ix *Index) httpRoute(r *gatewayv1.HTTPRoute, port uint32, s *serviceInfo) *waypointapi.HTTPRoute {
	consumerNS, scope := consumerScope(r.Namespace, s)
	out := &waypointapi.HTTPRoute{Name: r.Name, Namespace: r.Namespace, Port: port, ConsumerNamespace: consumerNS}
	for _, h := range r.Spec.Hostnames {
		out.Hostnames = append(out.Hostnames, string(h))
	}
	for _, rule := range r.Spec.Rules {
		rr := &waypointapi.HTTPRouteRule{}
		if rule.Name != nil {
			rr.Name = string(*rule.Name)
		}
		check := checkHTTPRule(rule, scope)
		for i, m := range rule.Matches {
			if !check.badMatches[i] {
				rr.Matches = append(rr.Matches, httpMatch(m))
			}
		}
		if !check.ok() {
			if failClosed(len(rule.Matches), len(rr.Matches)) {
				out.Rules = append(out.Rules, rr)
			}
			continue
		}
		for _, f := range rule.Filters {
			if hf := ix.httpFilter(scope, f); hf != nil {
				rr.Filters = append(rr.Filters, hf)
			}
		}
		for _, b := range rule.BackendRefs {
			if be := ix.routeBackend(scope, b.BackendRef, b.Filters); be != nil {
				rr.Backends = append(rr.Backends, be)
			}
		}
		if t := rule.Timeouts; t != nil {
			rr.RequestTimeoutMs = durationMs(t.Request)
			rr.BackendTimeoutMs = durationMs(t.BackendRequest)
		}
		if rt := rule.Retry; rt != nil {
			rr.Retry = &waypointapi.Retry{BackoffMs: durationMs(rt.Backoff)}
			if rt.Attempts != nil {
				rr.Retry.Attempts = uint32(max(*rt.Attempts, 0))
			}
			for _, c := range rt.Codes {
				rr.Retry.Codes = append(rr.Retry.Codes, uint32(c))
			}
		}
		out.Rules = append(out.Rules, rr)
	}
	return out
}

func durationMs(d *gatewayv1.Duration) uint32 {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v <= 0 {
		return 0
	}
	return uint32(min(v.Milliseconds(), 1<<31))
}

func httpMatch(m gatewayv1.HTTPRouteMatch) *waypointapi.HTTPRouteMatch {
	out := &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: waypointapi.MatchType_PREFIX, Value: "/"}}
	if p := m.Path; p != nil {
		if p.Value != nil {
			out.Path.Value = *p.Value
		}
		if p.Type != nil {
			out.Path.Type = matchType(string(*p.Type))
		}
	}
	for _, h := range m.Headers {
		t := waypointapi.MatchType_EXACT
		if h.Type != nil {
			t = matchType(string(*h.Type))
		}
		out.Headers = append(out.Headers, &waypointapi.HeaderMatch{Type: t, Name: strings.ToLower(string(h.Name)), Value: h.Value})
	}
	for _, q := range m.QueryParams {
		t := waypointapi.MatchType_EXACT
		if q.Type != nil {
			t = matchType(string(*q.Type))
		}
		out.QueryParams = append(out.QueryParams, &waypointapi.HeaderMatch{Type: t, Name: string(q.Name), Value: q.Value})
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	return out
}

func matchType(t string) waypointapi.MatchType {
	switch t {
	case "PathPrefix":
		return waypointapi.MatchType_PREFIX
	case "RegularExpression":
		return waypointapi.MatchType_REGULAR_EXPRESSION
	}
	return waypointapi.MatchType_EXACT
}

func headerMod(m *gatewayv1.HTTPHeaderFilter) *waypointapi.HeaderModifier {
	out := &waypointapi.HeaderModifier{Remove: m.Remove}
	for _, h := range m.Set {
		out.Set = append(out.Set, &waypointapi.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range m.Add {
		out.Add = append(out.Add, &waypointapi.Header{Name: string(h.Name), Value: h.Value})
	}
	return out
}

// filterProblem says why the waypoint cannot apply f ("" when it can). On
// a rule it applies header modifiers, redirects, rewrites and mirrors; on a
// backendRef only header modifiers, all the waypoint resource's
// BackendRef.filters carry. CORS, ExternalAuth and ExtensionRef have no
// form in the resource at all. The spec forbids skipping a filter that
// cannot be applied (HTTPRouteFilter.Type), so such a rule is answered with
// an error (see httpRoute).
func filterProblem(f gatewayv1.HTTPRouteFilter, onBackend bool) string {
	var present, ruleOnly bool
	switch f.Type {
	case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
		present = f.RequestHeaderModifier != nil
	case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
		present = f.ResponseHeaderModifier != nil
	case gatewayv1.HTTPRouteFilterRequestRedirect:
		present, ruleOnly = f.RequestRedirect != nil, true
	case gatewayv1.HTTPRouteFilterURLRewrite:
		present, ruleOnly = f.URLRewrite != nil, true
	case gatewayv1.HTTPRouteFilterRequestMirror:
		present, ruleOnly = f.RequestMirror != nil, true
	case gatewayv1.HTTPRouteFilterCORS, gatewayv1.HTTPRouteFilterExternalAuth, gatewayv1.HTTPRouteFilterExtensionRef:
		return fmt.Sprintf("filter %s is not supported", f.Type)
	default:
		return fmt.Sprintf("unknown filter type %q", f.Type)
	}
	switch {
	case ruleOnly && onBackend:
		return fmt.Sprintf("filter %s is not supported on a backendRef", f.Type)
	case !present:
		return fmt.Sprintf("filter %s has no configuration", f.Type)
	}
	return ""
}

// failClosed says how a rule the waypoint cannot carry out is translated,
// given how many matches it has and how many the waypoint can evaluate:
// true, as a rule that keeps those matches but has nothing to apply and
// nowhere to send, so that the waypoint answers their requests with 500
// instead of skipping a filter or letting them fall through to a rule
// written for other requests; false, left out, when it had matches and
// none can be evaluated: nothing then says which requests it was for, and
// a rule without matches would take every request.
func failClosed(matches, valid int) bool {
	return matches == 0 || valid > 0
}

// grpcFilter is f as the HTTPRouteFilter it is a subset of (same type
// names), so that one translation serves both route kinds.
func grpcFilter(f gatewayv1.GRPCRouteFilter) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{
		Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

func grpcFilters(fs []gatewayv1.GRPCRouteFilter) []gatewayv1.HTTPRouteFilter {
	out := make([]gatewayv1.HTTPRouteFilter, len(fs))
	for i, f := range fs {
		out[i] = grpcFilter(f)
	}
	return out
}

// UnsupportedRule is a route rule the waypoint cannot carry out as
// written.
type UnsupportedRule struct {
	// Index is the rule's position in spec.rules.
	Index int
	// Name is the rule's name, "" when unnamed.
	Name string
	// Reason says what the waypoint cannot do: each problem, starting
	// with the path of its field in the rule ("matches[0].path.value:
	// invalid regular expression: ..."), separated by "; ".
	Reason string
	// LeftOut: the rule had matches and the waypoint can evaluate none of
	// them, so it is left out of the waypoint's configuration and the
	// requests it was meant for go to the route's other rules. Otherwise
	// the waypoint answers the requests its valid matches select with
	// HTTP 500.
	LeftOut bool
}

// UnsupportedHTTPRules lists the rules of r the waypoint does not carry
// out, for the route's status.
func UnsupportedHTTPRules(r *gatewayv1.HTTPRoute) []UnsupportedRule {
	var out []UnsupportedRule
	for i, rule := range r.Spec.Rules {
		if c := checkHTTPRule(rule, routeScope(r.Namespace, r.Spec.ParentRefs)); !c.ok() {
			out = append(out, unsupported(i, rule.Name, c, len(rule.Matches)))
		}
	}
	return out
}

// UnsupportedGRPCRules lists the rules of r the waypoint does not carry
// out, for the route's status.
func UnsupportedGRPCRules(r *gatewayv1.GRPCRoute) []UnsupportedRule {
	var out []UnsupportedRule
	for i, rule := range r.Spec.Rules {
		if c := checkGRPCRule(rule, routeScope(r.Namespace, r.Spec.ParentRefs)); !c.ok() {
			out = append(out, unsupported(i, rule.Name, c, len(rule.Matches)))
		}
	}
	return out
}

func unsupported(i int, name *gatewayv1.SectionName, c ruleCheck, matches int) UnsupportedRule {
	return UnsupportedRule{
		Index:   i,
		Name:    sectionName(name),
		Reason:  strings.Join(c.problems, "; "),
		LeftOut: !failClosed(matches, matches-len(c.badMatches)),
	}
}

func sectionName(n *gatewayv1.SectionName) string {
	if n == nil {
		return ""
	}
	return string(*n)
}

// httpFilter translates a filter filterProblem accepts. It returns nil for
// a mirror whose backend the waypoint must not use (another kind, another
// namespace, or a Service that does not exist): the spec says to drop such
// a mirror, and the route's ResolvedRefs condition reports it.
func (ix *Index) httpFilter(scope refScope, f gatewayv1.HTTPRouteFilter) *waypointapi.HTTPFilter {
	switch {
	case f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
		return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestHeaderModifier{RequestHeaderModifier: headerMod(f.RequestHeaderModifier)}}
	case f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
		return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_ResponseHeaderModifier{ResponseHeaderModifier: headerMod(f.ResponseHeaderModifier)}}
	case f.Type == gatewayv1.HTTPRouteFilterRequestRedirect && f.RequestRedirect != nil:
		r := f.RequestRedirect
		out := &waypointapi.Redirect{}
		if r.Scheme != nil {
			out.Scheme = *r.Scheme
		}
		if r.Hostname != nil {
			out.Hostname = string(*r.Hostname)
		}
		if r.Port != nil {
			out.Port = uint32(*r.Port)
		}
		if r.StatusCode != nil {
			out.StatusCode = uint32(*r.StatusCode)
		}
		out.HasPath, out.PathType, out.Path = pathMod(r.Path)
		return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestRedirect{RequestRedirect: out}}
	case f.Type == gatewayv1.HTTPRouteFilterURLRewrite && f.URLRewrite != nil:
		out := &waypointapi.Rewrite{}
		if f.URLRewrite.Hostname != nil {
			out.Hostname = string(*f.URLRewrite.Hostname)
		}
		out.HasPath, out.PathType, out.Path = pathMod(f.URLRewrite.Path)
		return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_UrlRewrite{UrlRewrite: out}}
	case f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil:
		b := ix.backend(scope, gatewayv1.BackendRef{BackendObjectReference: f.RequestMirror.BackendRef})
		if b == nil || ix.services[keyOf(b.Namespace, b.Name)] == nil {
			return nil
		}
		m := &waypointapi.Mirror{Backend: b, Numerator: 100, Denominator: 100}
		switch rm := f.RequestMirror; {
		case rm.Percent != nil:
			m.Numerator = uint32(max(*rm.Percent, 0))
		case rm.Fraction != nil:
			m.Numerator = uint32(max(rm.Fraction.Numerator, 0))
			if rm.Fraction.Denominator != nil {
				m.Denominator = uint32(max(*rm.Fraction.Denominator, 1))
			}
		}
		return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestMirror{RequestMirror: m}}
	}
	return nil
}

func pathMod(p *gatewayv1.HTTPPathModifier) (bool, waypointapi.MatchType, string) {
	if p == nil {
		return false, 0, ""
	}
	if p.Type == gatewayv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil {
		return true, waypointapi.MatchType_PREFIX, *p.ReplacePrefixMatch
	}
	if p.ReplaceFullPath != nil {
		return true, waypointapi.MatchType_EXACT, *p.ReplaceFullPath
	}
	return false, 0, ""
}

// grpcRoute translates route r attached to port of service s.
func (ix *Index) grpcRoute(r *gatewayv1.GRPCRoute, port uint32, s *serviceInfo) *waypointapi.GRPCRoute {
	consumerNS, scope := consumerScope(r.Namespace, s)
	out := &waypointapi.GRPCRoute{Name: r.Name, Namespace: r.Namespace, Port: port, ConsumerNamespace: consumerNS}
	for _, h := range r.Spec.Hostnames {
		out.Hostnames = append(out.Hostnames, string(h))
	}
	for _, rule := range r.Spec.Rules {
		rr := &waypointapi.GRPCRouteRule{}
		if rule.Name != nil {
			rr.Name = string(*rule.Name)
		}
		check := checkGRPCRule(rule, scope)
		for i, m := range rule.Matches {
			gm := &waypointapi.GRPCRouteMatch{}
			if mm := m.Method; mm != nil {
				if mm.Type != nil {
					gm.Type = matchType(string(*mm.Type))
				}
				if mm.Service != nil {
					gm.Service = *mm.Service
				}
				if mm.Method != nil {
					gm.Method = *mm.Method
				}
			}
			for _, h := range m.Headers {
				t := waypointapi.MatchType_EXACT
				if h.Type != nil {
					t = matchType(string(*h.Type))
				}
				gm.Headers = append(gm.Headers, &waypointapi.HeaderMatch{Type: t, Name: strings.ToLower(string(h.Name)), Value: h.Value})
			}
			if !check.badMatches[i] {
				rr.Matches = append(rr.Matches, gm)
			}
		}
		if !check.ok() {
			if failClosed(len(rule.Matches), len(rr.Matches)) {
				out.Rules = append(out.Rules, rr)
			}
			continue
		}
		for _, f := range rule.Filters {
			if hf := ix.httpFilter(scope, grpcFilter(f)); hf != nil {
				rr.Filters = append(rr.Filters, hf)
			}
		}
		for _, b := range rule.BackendRefs {
			if be := ix.routeBackend(scope, b.BackendRef, grpcFilters(b.Filters)); be != nil {
				rr.Backends = append(rr.Backends, be)
			}
		}
		out.Rules = append(out.Rules, rr)
	}
	return out
}

// translateL7 turns a policy attached to a waypoint or service into the
// waypoint's form.
//
// ALLOW and DENY keep their action. AUDIT becomes audit=true: the waypoint
// flags the requests it matches and neither allows nor denies them; its
// action is DENY, so that a waypoint reading the action alone would deny
// what it should flag rather than let through what other policies deny.
// CUSTOM asks an external authorizer, which Skiff does not have; a policy
// the waypoint cannot evaluate must deny, so CUSTOM becomes DENY over the
// same rules (fail closed), and an action this code does not know too.
//
// Conditions the waypoint cannot check (request principals, unknown
// condition keys, values that do not parse, path templates Istio would
// refuse, header conditions without values or with a name that is not a
// token) are handled as translateL4 handles L7 ones, never more
// permissively than written: in an ALLOW policy the rule using them is
// dropped (it can never match); in any other they are left out, so the
// rule matches more (Istio widens DENY and AUDIT policies the same way).
// Either way the waypoint receives nothing it would refuse, and
// WaypointSupport says what was left out.
func translateL7(p *securityv1.AuthorizationPolicy) *waypointapi.L7Authorization {
	out := &waypointapi.L7Authorization{Name: p.Name, Namespace: p.Namespace, Action: securityapi.Action_DENY}
	switch p.Spec.Action {
	case "", securityv1.ActionAllow:
		out.Action = securityapi.Action_ALLOW
	case securityv1.ActionAudit:
		out.Audit = true
	}
	for _, r := range p.Spec.Rules {
		g, problems := l7Group(r)
		if len(problems) > 0 && out.Action == securityapi.Action_ALLOW {
			continue
		}
		out.Groups = append(out.Groups, g)
	}
	return out
}

// l7Group translates a rule for the waypoint. problems say what the
// waypoint cannot check, each starting with the path of its field in the
// rule ("when[0]: ..."); those conditions are left out of g.
func l7Group(r securityv1.Rule) (g *waypointapi.L7Group, problems []string) {
	g = &waypointapi.L7Group{}
	problem := func(field, format string, args ...any) {
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}
	if len(r.From) > 0 {
		rules := &waypointapi.L7Rules{}
		for i, f := range r.From {
			// sourceMatch's own flag counts remote IPs, which the
			// waypoint does check; its bad values are re-checked here.
			m, _ := sourceMatch(f.Source)
			if s := f.Source; s != nil {
				field := fmt.Sprintf("from[%d].source.", i)
				if len(s.RequestPrincipals) > 0 {
					problem(field+"requestPrincipals", "JWT principals cannot be checked")
				}
				if len(s.NotRequestPrincipals) > 0 {
					problem(field+"notRequestPrincipals", "JWT principals cannot be checked")
				}
				for _, l := range []struct {
					name string
					vs   []string
				}{{"ipBlocks", s.IPBlocks}, {"notIpBlocks", s.NotIPBlocks}, {"remoteIpBlocks", s.RemoteIPBlocks}, {"notRemoteIpBlocks", s.NotRemoteIPBlocks}} {
					if v, bad := firstBad(l.vs, validCIDR); bad {
						problem(field+l.name, "%q is not an IP address or CIDR", v)
					}
				}
				rm := &securityapi.Match{}
				rm.SourceIps, _ = cidrs(s.RemoteIPBlocks)
				rm.NotSourceIps, _ = cidrs(s.NotRemoteIPBlocks)
				// remote IPs are the original client's; the waypoint sees them as the source.
				m.SourceIps = append(m.SourceIps, rm.SourceIps...)
				m.NotSourceIps = append(m.NotSourceIps, rm.NotSourceIps...)
			}
			rules.Matches = append(rules.Matches, &waypointapi.L7Match{L4: m})
		}
		g.Rules = append(g.Rules, rules)
	}
	if len(r.To) > 0 {
		rules := &waypointapi.L7Rules{}
		for i, t := range r.To {
			m := &waypointapi.L7Match{}
			if o := t.Operation; o != nil {
				field := fmt.Sprintf("to[%d].operation.", i)
				for _, l := range []struct {
					name string
					vs   []string
				}{{"ports", o.Ports}, {"notPorts", o.NotPorts}} {
					if v, bad := firstBad(l.vs, validPort); bad {
						problem(field+l.name, "%q is not a port number", v)
					}
				}
				m.L4 = &securityapi.Match{}
				m.L4.DestinationPorts, _ = ports(o.Ports)
				m.L4.NotDestinationPorts, _ = ports(o.NotPorts)
				m.Paths, m.NotPaths = stringMatches(o.Paths), stringMatches(o.NotPaths)
				// A template the waypoint cannot read leaves its whole
				// list unchecked there; leave the list out here, as
				// dropping only the value would narrow a positive list.
				for _, l := range []struct {
					name string
					vs   []string
					out  *[]*securityapi.StringMatch
				}{{"paths", o.Paths, &m.Paths}, {"notPaths", o.NotPaths, &m.NotPaths}} {
					for j, v := range l.vs {
						if _, err := policy.ParsePathMatch(v); err != nil {
							problem(fmt.Sprintf("%s%s[%d]", field, l.name, j), "%v", err)
							*l.out = nil
							break
						}
					}
				}
				m.Methods, m.NotMethods = stringMatches(o.Methods), stringMatches(o.NotMethods)
				m.Hosts, m.NotHosts = stringMatches(o.Hosts), stringMatches(o.NotHosts)
			}
			rules.Matches = append(rules.Matches, m)
		}
		g.Rules = append(g.Rules, rules)
	}
	for i, c := range r.When {
		field := fmt.Sprintf("when[%d]", i)
		if h, ok := strings.CutPrefix(c.Key, "request.headers["); ok && strings.HasSuffix(h, "]") {
			name := strings.ToLower(strings.TrimSuffix(h, "]"))
			if p := headerConditionProblem(name, c.Values, c.NotValues); p != "" {
				problem(field, "%s: %s", c.Key, p)
				continue
			}
			g.Rules = append(g.Rules, &waypointapi.L7Rules{Matches: []*waypointapi.L7Match{{Headers: []*waypointapi.HeaderCondition{{
				Name: name, Values: stringMatches(c.Values), NotValues: stringMatches(c.NotValues)}}}}})
			continue
		}
		m, bad := conditionMatch(c)
		switch {
		case len(c.Values)+len(c.NotValues) == 0:
			problem(field, "%s has no values and no notValues", c.Key)
			continue
		case bad:
			problem(field, "condition %s cannot be checked (unsupported key or a value that does not parse)", c.Key)
		}
		g.Rules = append(g.Rules, &waypointapi.L7Rules{Matches: []*waypointapi.L7Match{{L4: m}}})
	}
	return g, problems
}

// headerConditionProblem says why the waypoint cannot evaluate a
// request.headers[name] condition ("" when it can). pkg/policy's
// Policy.Validate, which the waypoint applies, requires a lower-case token
// and values or notValues; the waypoint reads ":authority" as "host" and
// cannot check other pseudo-headers.
func headerConditionProblem(name string, values, notValues []string) string {
	switch {
	case name == ":authority":
	case strings.HasPrefix(name, ":"):
		return "pseudo-headers other than :authority cannot be checked"
	case !httpguts.ValidHeaderFieldName(name):
		return fmt.Sprintf("header name %q is not a token", name)
	}
	if len(values)+len(notValues) == 0 {
		return "no values and no notValues"
	}
	return ""
}

// waypointPolicy translates p for a waypoint and logs when that changes
// what the policy means: a CUSTOM policy denies what its rules match. Only
// a policy changed since the last flush is logged (Flush builds the
// waypoints before it forgets which policies changed), so rebuilds for
// unrelated changes stay quiet; the policy's status says it for good.
func (ix *Index) waypointPolicy(p *securityv1.AuthorizationPolicy) *waypointapi.L7Authorization {
	if p.Spec.Action == securityv1.ActionCustom && ix.dirtyAuthz[keyOf(p.Namespace, p.Name)] {
		provider := ""
		if p.Spec.Provider != nil {
			provider = p.Spec.Provider.Name
		}
		ix.log.Warn("CUSTOM authorization policy enforced as DENY: Skiff has no external authorizer, so the waypoint denies the requests its rules match",
			"policy", keyOf(p.Namespace, p.Name), "provider", provider)
	}
	return translateL7(p)
}
