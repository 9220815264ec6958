package index

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Route rules the waypoint would not carry out
//
// The waypoint (waypoint/internal/config) validates every rule it
// receives and answers a rule it cannot compile with HTTP 500. A rule
// that reaches it that way is visible only in the waypoint's log, so the
// index checks rules for the same conditions first: a rule with a problem
// is translated as one the waypoint answers with 500 (no filters, no
// backends), and UnsupportedHTTPRules and UnsupportedGRPCRules tell the
// route's status why. The Gateway API CRDs already refuse many bad values
// at admission; these checks cover what they do not (regular expressions
// RE2 cannot compile or that are too costly, a header named in two
// modifier actions, a framing header in a modifier, too many retries, ...)
// and objects that were never admitted by those CRDs.
//
// The limits and the checks of single values are the waypoint's own
// (waypointapi.CompileRegex, CheckHostname, ...): both sides apply the
// same ones.

// checkRegex checks a RegularExpression value as the waypoint compiles it.
func checkRegex(expr string) error {
	_, err := waypointapi.CompileRegex(expr)
	return err
}

// checkPath checks an Exact or PathPrefix match value: absolute, RFC 3986
// pchar and "/" with well-formed escapes, no encoded NUL (which request
// path normalization refuses).
func checkPath(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("path %q does not start with /", v)
	}
	if len(v) > waypointapi.MaxPathLen {
		return fmt.Errorf("path longer than %d bytes", waypointapi.MaxPathLen)
	}
	if err := waypointapi.CheckPathChars(v); err != nil {
		return err
	}
	if strings.Contains(v, "%00") {
		return fmt.Errorf("path %q holds an encoded NUL", v)
	}
	return nil
}

// ruleCheck is what the waypoint would make of a route rule.
type ruleCheck struct {
	// problems say why the waypoint cannot carry the rule out, each
	// starting with the path of the field in the rule; none when it can.
	problems []string
	// badMatches are the positions of the matches the waypoint cannot
	// evaluate at all: they select nothing.
	badMatches map[int]bool
}

func (c *ruleCheck) add(field string, err error) {
	c.problems = append(c.problems, field+": "+err.Error())
}

func (c *ruleCheck) badMatch(i int, field string, err error) {
	c.add(field, err)
	if c.badMatches == nil {
		c.badMatches = map[int]bool{}
	}
	c.badMatches[i] = true
}

func (c *ruleCheck) ok() bool { return len(c.problems) == 0 }

// checkHTTPRule checks an HTTPRoute rule of a route whose references
// scope permits.
func checkHTTPRule(rule gatewayv1.HTTPRouteRule, scope refScope) ruleCheck {
	var c ruleCheck
	for i, m := range rule.Matches {
		f := fmt.Sprintf("matches[%d]", i)
		if field, err := httpMatchProblem(f, m); err != nil {
			c.badMatch(i, field, err)
		}
	}
	redirect, prefixModifier := checkFilters(&c, "", rule.Filters, false, scope)
	if prefixModifier {
		for i, m := range rule.Matches {
			if m.Path != nil && m.Path.Type != nil && *m.Path.Type != gatewayv1.PathMatchPathPrefix {
				c.add(fmt.Sprintf("matches[%d].path", i), errors.New("a ReplacePrefixMatch path modifier needs PathPrefix matches only"))
				break
			}
		}
	}
	kept := 0
	for i, b := range rule.BackendRefs {
		f := fmt.Sprintf("backendRefs[%d]", i)
		checkFilters(&c, f+".", b.Filters, true, scope)
		if checkBackend(&c, f, b.BackendRef, scope) {
			kept++
		}
	}
	if redirect && kept > 0 {
		c.add("backendRefs", errors.New("a rule with a RequestRedirect filter may not have backends"))
	}
	if t := rule.Timeouts; t != nil {
		request, ok1 := checkDuration(&c, "timeouts.request", t.Request)
		backend, ok2 := checkDuration(&c, "timeouts.backendRequest", t.BackendRequest)
		if ok1 && ok2 && request > 0 && backend > request {
			c.add("timeouts.backendRequest", fmt.Errorf("backend timeout %s longer than the request timeout %s", *t.BackendRequest, *t.Request))
		}
	}
	if rt := rule.Retry; rt != nil {
		if rt.Attempts != nil && *rt.Attempts > waypointapi.MaxRetryAttempts {
			c.add("retry.attempts", fmt.Errorf("%d attempts, at most %d", *rt.Attempts, waypointapi.MaxRetryAttempts))
		}
		for i, code := range rt.Codes {
			if code < 400 || code > 599 {
				c.add(fmt.Sprintf("retry.codes[%d]", i), fmt.Errorf("status code %d is not retryable (400 to 599)", code))
			}
		}
		checkDuration(&c, "retry.backoff", rt.Backoff)
	}
	return c
}

// checkGRPCRule checks a GRPCRoute rule of a route whose references
// scope permits.
func checkGRPCRule(rule gatewayv1.GRPCRouteRule, scope refScope) ruleCheck {
	var c ruleCheck
	for i, m := range rule.Matches {
		f := fmt.Sprintf("matches[%d]", i)
		if field, err := grpcMatchProblem(f, m); err != nil {
			c.badMatch(i, field, err)
		}
	}
	checkFilters(&c, "", grpcFilters(rule.Filters), false, scope)
	for i, b := range rule.BackendRefs {
		f := fmt.Sprintf("backendRefs[%d]", i)
		checkFilters(&c, f+".", grpcFilters(b.Filters), true, scope)
		checkBackend(&c, f, b.BackendRef, scope)
	}
	return c
}

// checkDuration checks a duration as translation reads it (durationMs):
// a value that does not parse would silently mean "no timeout".
func checkDuration(c *ruleCheck, field string, d *gatewayv1.Duration) (time.Duration, bool) {
	if d == nil {
		return 0, true
	}
	if _, err := time.ParseDuration(string(*d)); err != nil {
		c.add(field, fmt.Errorf("invalid duration %q", *d))
		return 0, false
	}
	return time.Duration(durationMs(d)) * time.Millisecond, true
}

// checkBackend checks the port and weight of a backendRef translation
// keeps (a Service scope permits), and reports whether it does.
func checkBackend(c *ruleCheck, field string, ref gatewayv1.BackendRef, scope refScope) bool {
	if !scope.kept(ref) {
		return false
	}
	if ref.Port != nil && (*ref.Port < 0 || *ref.Port > 65535) {
		c.add(field+".port", fmt.Errorf("invalid port %d", *ref.Port))
	}
	if ref.Weight != nil && *ref.Weight > waypointapi.MaxWeight {
		c.add(field+".weight", fmt.Errorf("weight %d larger than %d", *ref.Weight, waypointapi.MaxWeight))
	}
	return true
}

// refScope is what a route's backendRefs may name: Services in the
// route's own namespace and, for a consumer route, the Service it is
// attached to. Skiff implements no ReferenceGrant, so that is all.
//
// GEP-1294 ("Namespace boundaries") lets mesh routes send to backends in
// any namespace without a ReferenceGrant only where that reaches nothing
// the route's clients could not reach anyway, and asks for ReferenceGrant
// otherwise. A waypoint sends to a backend as itself, after checking the
// client against the policies of the Service the request was for, not
// the backend's: a consumer route to any other Service of another
// namespace would carry its clients past that Service's own policies. The
// Service the consumer route is attached to is the exception: its clients
// already reach it, through the same waypoint and its policies, so
// sending them there widens nothing.
type refScope struct {
	routeNS string
	// parents are the Services, in other namespaces than routeNS, the
	// route is attached to; none for a producer route.
	parents []key
}

// routeScope is the scope of a route in routeNS attached through parents
// (its Service parentRefs, or those of them to consider).
func routeScope(routeNS string, parents []gatewayv1.ParentReference) refScope {
	scope := refScope{routeNS: routeNS}
	for _, p := range parents {
		if ns := parentNamespace(p, routeNS); ns != routeNS && isServiceRef(p) {
			scope.parents = append(scope.parents, keyOf(ns, string(p.Name)))
		}
	}
	return scope
}

// namespace is the namespace ref names: the route's when it names none.
func (s refScope) namespace(ref gatewayv1.BackendObjectReference) string {
	if ref.Namespace == nil || *ref.Namespace == "" {
		return s.routeNS
	}
	return string(*ref.Namespace)
}

// kept reports whether Index.backend translates ref: a Service the
// scope permits.
func (s refScope) kept(ref gatewayv1.BackendRef) bool {
	if ref.Kind != nil && *ref.Kind != "Service" || ref.Group != nil && *ref.Group != "" {
		return false
	}
	return s.permits(ref.BackendObjectReference)
}

// permits reports whether ref is in the route's namespace or names one
// of the route's parent Services.
func (s refScope) permits(ref gatewayv1.BackendObjectReference) bool {
	ns := s.namespace(ref)
	return ns == s.routeNS || slices.Contains(s.parents, keyOf(ns, string(ref.Name)))
}

// BackendPermitted reports whether a route in routeNS, attached to the
// Service parent (a parentRef of the route), may name ref without a
// ReferenceGrant: ref is in the route's namespace, or it is that parent
// Service (see refScope). Status reports RefNotPermitted for a ref it
// does not permit, and translation leaves such a ref out.
func BackendPermitted(routeNS string, parent gatewayv1.ParentReference, ref gatewayv1.BackendObjectReference) bool {
	return routeScope(routeNS, []gatewayv1.ParentReference{parent}).permits(ref)
}

// isServiceRef reports whether a parentRef names a Service (GAMMA: group
// "" or "core", kind Service).
func isServiceRef(ref gatewayv1.ParentReference) bool {
	if ref.Kind == nil || *ref.Kind != "Service" {
		return false
	}
	return ref.Group == nil || *ref.Group == "" || *ref.Group == "core"
}

// parentNamespace is the namespace of a parentRef of a route in routeNS.
func parentNamespace(ref gatewayv1.ParentReference, routeNS string) string {
	if ref.Namespace == nil || *ref.Namespace == "" {
		return routeNS
	}
	return string(*ref.Namespace)
}

// checkFilters checks a list of filters of a rule, or of a backendRef
// (onBackend), of a route whose references scope permits; parent is the
// list's field prefix.
// It reports whether the list redirects and whether it uses a
// ReplacePrefixMatch modifier.
func checkFilters(c *ruleCheck, parent string, fs []gatewayv1.HTTPRouteFilter, onBackend bool, scope refScope) (redirect, prefixModifier bool) {
	seen := map[gatewayv1.HTTPRouteFilterType]bool{}
	for i, fl := range fs {
		f := fmt.Sprintf("%sfilters[%d]", parent, i)
		if p := filterProblem(fl, onBackend); p != "" {
			c.add(f, errors.New(p))
			continue
		}
		if fl.Type != gatewayv1.HTTPRouteFilterRequestMirror && seen[fl.Type] {
			c.add(f, fmt.Errorf("filter %s repeated", fl.Type))
		}
		seen[fl.Type] = true
		switch fl.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			checkHeaderModifier(c, f+".requestHeaderModifier", fl.RequestHeaderModifier, true)
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			checkHeaderModifier(c, f+".responseHeaderModifier", fl.ResponseHeaderModifier, false)
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			redirect = true
			prefixModifier = checkRedirect(c, f+".requestRedirect", fl.RequestRedirect) || prefixModifier
		case gatewayv1.HTTPRouteFilterURLRewrite:
			prefixModifier = checkRewrite(c, f+".urlRewrite", fl.URLRewrite) || prefixModifier
		case gatewayv1.HTTPRouteFilterRequestMirror:
			ref := gatewayv1.BackendRef{BackendObjectReference: fl.RequestMirror.BackendRef}
			if p := ref.Port; p != nil && scope.kept(ref) && (*p < 0 || *p > 65535) {
				c.add(f+".requestMirror.backendRef.port", fmt.Errorf("invalid port %d", *p))
			}
		}
	}
	if seen[gatewayv1.HTTPRouteFilterRequestRedirect] && seen[gatewayv1.HTTPRouteFilterURLRewrite] {
		c.add(parent+"filters", errors.New("RequestRedirect may not be combined with URLRewrite"))
	}
	return redirect, prefixModifier
}

// checkHeaderModifier checks a header modifier as the waypoint does: one
// action per header name ("Filters specifying multiple actions of the
// same or different type for any one header name are invalid"), names that
// are tokens and neither framing nor connection-specific (nor Host, for
// requests: a URLRewrite hostname changes it), values without control
// characters.
func checkHeaderModifier(c *ruleCheck, f string, m *gatewayv1.HTTPHeaderFilter, request bool) {
	seen := map[string]string{}
	use := func(field, name, action string) {
		if err := waypointapi.CheckHeaderName(name); err != nil {
			c.add(field, err)
			return
		}
		canon := http.CanonicalHeaderKey(name)
		if err := waypointapi.CheckModifiable(canon, request); err != nil {
			c.add(field, err)
			return
		}
		switch {
		case seen[canon] != "":
			c.add(field, fmt.Errorf("header %s already has an action (%s)", canon, seen[canon]))
		default:
			seen[canon] = action
		}
	}
	for _, list := range []struct {
		action string
		hs     []gatewayv1.HTTPHeader
	}{{"set", m.Set}, {"add", m.Add}} {
		for i, h := range list.hs {
			hf := fmt.Sprintf("%s.%s[%d]", f, list.action, i)
			use(hf+".name", string(h.Name), list.action)
			if err := waypointapi.CheckHeaderValue(h.Value); err != nil {
				c.add(hf+".value", err)
			}
		}
	}
	for i, name := range m.Remove {
		use(fmt.Sprintf("%s.remove[%d]", f, i), name, "remove")
	}
}

// redirectCodes are the redirect statuses the waypoint sends.
var redirectCodes = []int{301, 302, 303, 307, 308}

// checkRedirect checks a RequestRedirect and reports whether it replaces
// a matched prefix.
func checkRedirect(c *ruleCheck, f string, r *gatewayv1.HTTPRequestRedirectFilter) bool {
	if r.Scheme != nil && *r.Scheme != "" && *r.Scheme != "http" && *r.Scheme != "https" {
		c.add(f+".scheme", fmt.Errorf("unsupported scheme %q (http or https)", *r.Scheme))
	}
	if r.Hostname != nil && *r.Hostname != "" {
		if err := waypointapi.CheckHostname(string(*r.Hostname)); err != nil {
			c.add(f+".hostname", err)
		}
	}
	if r.Port != nil && (*r.Port < 0 || *r.Port > 65535) {
		c.add(f+".port", fmt.Errorf("invalid port %d", *r.Port))
	}
	if r.StatusCode != nil && *r.StatusCode != 0 && !slices.Contains(redirectCodes, *r.StatusCode) {
		c.add(f+".statusCode", fmt.Errorf("unsupported redirect status %d (301, 302, 303, 307 or 308)", *r.StatusCode))
	}
	return checkPathModifier(c, f+".path", r.Path)
}

// checkRewrite checks a URLRewrite and reports whether it replaces a
// matched prefix.
func checkRewrite(c *ruleCheck, f string, r *gatewayv1.HTTPURLRewriteFilter) bool {
	if r.Hostname != nil && *r.Hostname != "" {
		if err := waypointapi.CheckHostname(string(*r.Hostname)); err != nil {
			c.add(f+".hostname", err)
		}
	}
	return checkPathModifier(c, f+".path", r.Path)
}

// checkPathModifier checks a path modifier as translated (pathMod) and
// reports whether it replaces a matched prefix.
func checkPathModifier(c *ruleCheck, f string, p *gatewayv1.HTTPPathModifier) bool {
	has, typ, v := pathMod(p)
	if !has {
		return false
	}
	prefix := typ == waypointapi.MatchType_PREFIX
	switch {
	case prefix && v != "" && !strings.HasPrefix(v, "/"):
		c.add(f+".replacePrefixMatch", fmt.Errorf("replacement prefix %q does not start with /", v))
	case !prefix && !strings.HasPrefix(v, "/"):
		c.add(f+".replaceFullPath", fmt.Errorf("replacement path %q does not start with /", v))
	case len(v) > waypointapi.MaxPathLen:
		c.add(f, fmt.Errorf("path longer than %d bytes", waypointapi.MaxPathLen))
	default:
		if err := waypointapi.CheckPathChars(v); err != nil {
			c.add(f, err)
		}
	}
	return prefix
}

// httpMatchProblem returns the first problem of an HTTPRouteMatch and the
// field that holds it.
func httpMatchProblem(f string, m gatewayv1.HTTPRouteMatch) (string, error) {
	if p := m.Path; p != nil {
		v := "/"
		if p.Value != nil {
			v = *p.Value
		}
		t := gatewayv1.PathMatchPathPrefix
		if p.Type != nil {
			t = *p.Type
		}
		var err error
		switch t {
		case gatewayv1.PathMatchExact, gatewayv1.PathMatchPathPrefix:
			err = checkPath(v)
		case gatewayv1.PathMatchRegularExpression:
			err = checkRegex(v)
		default:
			return f + ".path.type", fmt.Errorf("unsupported path match type %q", t)
		}
		if err != nil {
			return f + ".path.value", err
		}
	}
	if m.Method != nil && !httpguts.ValidHeaderFieldName(string(*m.Method)) {
		return f + ".method", fmt.Errorf("invalid method %q: not a token", *m.Method)
	}
	var headers []valueMatch
	for _, h := range m.Headers {
		headers = append(headers, valueMatch{strings.ToLower(string(h.Name)), (*string)(h.Type), h.Value})
	}
	if field, err := checkValueMatches(f+".headers", headers, true); err != nil {
		return field, err
	}
	var query []valueMatch
	for _, q := range m.QueryParams {
		query = append(query, valueMatch{string(q.Name), (*string)(q.Type), q.Value})
	}
	return checkValueMatches(f+".queryParams", query, false)
}

// grpcMatchProblem returns the first problem of a GRPCRouteMatch and the
// field that holds it.
func grpcMatchProblem(f string, m gatewayv1.GRPCRouteMatch) (string, error) {
	if mm := m.Method; mm != nil {
		var service, method string
		if mm.Service != nil {
			service = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		t := gatewayv1.GRPCMethodMatchExact
		if mm.Type != nil {
			t = *mm.Type
		}
		for _, part := range []struct{ name, value string }{{"service", service}, {"method", method}} {
			if part.value == "" {
				continue
			}
			switch t {
			case gatewayv1.GRPCMethodMatchExact:
				if strings.Contains(part.value, "/") {
					return f + ".method." + part.name, fmt.Errorf("%s %q contains /", part.name, part.value)
				}
			case gatewayv1.GRPCMethodMatchRegularExpression:
				if err := checkRegex(part.value); err != nil {
					return f + ".method." + part.name, err
				}
			default:
				return f + ".method.type", fmt.Errorf("unsupported method match type %q", t)
			}
		}
	}
	var headers []valueMatch
	for _, h := range m.Headers {
		headers = append(headers, valueMatch{strings.ToLower(string(h.Name)), (*string)(h.Type), h.Value})
	}
	return checkValueMatches(f+".headers", headers, true)
}

// valueMatch is a header or query parameter match.
type valueMatch struct {
	name string
	typ  *string
	val  string
}

// checkValueMatches checks header (headers true) or query parameter
// matches. Only the first match on a name counts, as Gateway API says, so
// later ones are checked for their name only.
func checkValueMatches(f string, ms []valueMatch, headers bool) (string, error) {
	maxLen := waypointapi.MaxQueryValueLen
	if headers {
		maxLen = waypointapi.MaxHeaderValueLen
	}
	seen := map[string]bool{}
	for i, m := range ms {
		mf := fmt.Sprintf("%s[%d]", f, i)
		switch {
		case headers && !httpguts.ValidHeaderFieldName(m.name):
			return mf + ".name", fmt.Errorf("invalid header name %q: not a token", m.name)
		case !headers && m.name == "":
			return mf + ".name", errors.New("empty query parameter name")
		}
		if seen[m.name] {
			continue
		}
		seen[m.name] = true
		t := "Exact"
		if m.typ != nil {
			t = *m.typ
		}
		switch t {
		case "Exact":
			switch {
			case m.val == "":
				return mf + ".value", errors.New("empty value")
			case len(m.val) > maxLen:
				return mf + ".value", fmt.Errorf("value longer than %d bytes", maxLen)
			case headers && !httpguts.ValidHeaderFieldValue(m.val):
				return mf + ".value", fmt.Errorf("invalid header value %q: control character", m.val)
			}
		case "RegularExpression":
			if err := checkRegex(m.val); err != nil {
				return mf + ".value", err
			}
		default:
			return mf + ".type", fmt.Errorf("unsupported match type %q", t)
		}
	}
	return "", nil
}
