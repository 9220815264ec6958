package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/pathnorm"
)

// Route tables
//
// Every (route, rule, match) becomes one Entry, and the entries are sorted
// once so that the first one that matches a request is the one Gateway API
// precedence picks. The resource lists routes oldest first, then by
// namespace/name, and rules and matches in their written order; a stable
// sort on the match criteria below therefore leaves ties in exactly the
// order the spec asks for.
//
// HTTPRoute (HTTPRouteRule.Matches in gateway-api v1.6 apis/v1/
// httproute_types.go): an Exact path, then the PathPrefix with the most
// characters, then a Method match, then the most header matches, then the
// most query parameter matches. The spec leaves RegularExpression paths'
// precedence to the implementation; Skiff ranks them as Istio does
// (getURIRank in Istio's Gateway API translation), so that routes behave
// the same after a move between the two: below every Exact and PathPrefix
// match, the longer expression first. A catch-all PathPrefix "/" therefore
// wins over any regular expression.
//
// GRPCRoute (GRPCRouteRule.Matches in grpcroute_types.go): the most
// characters in a matching service, then in a matching method, then the
// most header matches. A regular expression counts no characters (its
// precedence is again the implementation's); it ranks after every exact
// value of the same position and before an absent one.
//
// A route's port (its parentRef port) restricts its entries to that
// service port; a port the service does not have leaves them unused,
// which is harmless, so it is not an error.
//
// A rule that stands for one none of whose matches compiled (or for a
// whole route that did not) matches every request and ranks after every
// other entry (lastResort): it answers 500 only to what no valid rule
// takes, so that such requests neither go to the service unrouted nor
// take traffic from another route.
//
// Hostnames do not take part. GEP-1294 (xRoutes Mesh Binding, formerly
// GEP-1426) says GAMMA implementations SHOULD NOT infer any functionality
// from the hostnames field of routes attached to a Service: the Service's
// cluster IP selects the routes, so Skiff ignores route hostnames.

// ranked is an Entry with its precedence, compared position by position,
// larger first.
type ranked struct {
	entry Entry
	key   [5]int
}

// sortTable sorts entries by precedence; the sort is stable so ties keep
// their route, rule and match order.
func sortTable(entries []ranked) *RouteTable {
	if len(entries) == 0 {
		return nil
	}
	slices.SortStableFunc(entries, func(a, b ranked) int {
		for i := range a.key {
			if c := cmp.Compare(b.key[i], a.key[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	t := &RouteTable{Entries: make([]Entry, len(entries))}
	for i := range entries {
		t.Entries[i] = entries[i].entry
	}
	return t
}

// Path ranks, larger first.
const (
	rankRegex  = 1
	rankPrefix = 2
	rankExact  = 3
)

func httpKey(m *Match) [5]int {
	var k [5]int
	switch m.Path.Type {
	case PathExact:
		k[0] = rankExact
	case PathPrefix:
		k[0] = rankPrefix
	case PathRegex:
		k[0] = rankRegex
	}
	k[1] = len(m.Path.Value)
	if m.Method != "" {
		k[2] = 1
	}
	k[3] = len(m.Headers)
	k[4] = len(m.Query)
	return k
}

func grpcKey(m *Match) [5]int {
	var k [5]int
	if g := m.GRPC; g != nil {
		k[0], k[1] = valueRank(g.Service, g.ServiceRegex != nil)
		k[2], k[3] = valueRank(g.Method, g.MethodRegex != nil)
	}
	k[4] = len(m.Headers)
	return k
}

// valueRank ranks a gRPC service or method: its length when exact, and
// whether it is at least a regular expression.
func valueRank(v string, regex bool) (chars, present int) {
	switch {
	case regex:
		return 0, 1
	case v != "":
		return len(v), 2
	}
	return 0, 0
}

// compileRoute checks what identifies a route and where it applies.
func compileRoute(f field, kind, name, namespace string, port uint32) (RouteRef, uint16, error) {
	ref := RouteRef{Kind: kind, Namespace: namespace, Name: name}
	if ref.Name == "" || ref.Namespace == "" {
		return ref, 0, f.errorf("route without a name or namespace")
	}
	p, err := portNumber(f.child("port"), port, true)
	if err != nil {
		return ref, 0, err
	}
	return ref, p, nil
}

// lastResort is the entry of a rule that stands for one whose matches
// (or whose whole route) did not compile: it matches every request, on
// port (0: every port), and ranks after every other entry, so it never
// takes a request a valid rule matches.
func lastResort(port uint16, m Match, r *Rule) ranked {
	return ranked{Entry{Port: port, Match: m, Rule: r}, [5]int{-1}}
}

// catchAllHTTP and catchAllGRPC match every request of their kind.
func catchAllHTTP() Match { return Match{Path: &PathMatch{Type: PathPrefix, Value: "/"}} }
func catchAllGRPC() Match { return Match{} }

// routeProto is what compileRoutes reads of an HTTPRoute or GRPCRoute.
type routeProto[R comparable] interface {
	comparable
	GetName() string
	GetNamespace() string
	GetConsumerNamespace() string
	GetPort() uint32
	GetRules() []R
}

// routeKind is how compileRoutes handles one kind of route.
type routeKind[R comparable] struct {
	list, kind string // the resource's list field, the route's kind
	catchAll   func() Match
	key        func(*Match) [5]int
	rule       func(f field, ref RouteRef, index int, r R) (*Rule, []Match, []error)
}

var (
	httpRoutes = routeKind[*waypointapi.HTTPRouteRule]{"http_routes", "HTTPRoute", catchAllHTTP, httpKey, compileHTTPRule}
	grpcRoutes = routeKind[*waypointapi.GRPCRouteRule]{"grpc_routes", "GRPCRoute", catchAllGRPC, grpcKey, compileGRPCRule}
)

// compileRoutes flattens the routes of one kind and one group of a
// service in namespace svcNS into a table: group "" is the producer's
// routes, any other a consumer namespace's (routeGroup). A route that
// cannot be read fails closed on its port; a rule that cannot be compiled
// fails closed on the matches that compiled (or, with none, on its port,
// ranked last).
func compileRoutes[T routeProto[R], R comparable](f field, svcNS, group string, routes []T, k routeKind[R], warn *warnings) *RouteTable {
	var entries []ranked
	var nilRoute T
	var nilRule R
	for i, r := range routes {
		rf := f.index(k.list, i)
		g, err := routeGroup(rf, svcNS, r.GetNamespace(), r.GetConsumerNamespace())
		if g != group {
			continue
		}
		if r == nilRoute {
			err = rf.wrap(errMissing)
		}
		ref, port, rerr := compileRoute(rf, k.kind, r.GetName(), r.GetNamespace(), r.GetPort())
		if err == nil {
			err = rerr
		}
		if err != nil {
			warn.add(err, RouteFailsClosed)
			entries = append(entries, lastResort(port, k.catchAll(), failClosed(ref, "", -1)))
			continue
		}
		for j, rule := range r.GetRules() {
			kf := rf.index("rules", j)
			var cr *Rule
			var matches []Match
			var problems []error
			if rule == nilRule {
				cr, problems = failClosed(ref, "", j), []error{kf.wrap(errMissing)}
			} else {
				cr, matches, problems = k.rule(kf, ref, j, rule)
			}
			for _, err := range problems {
				warn.add(err, RuleFailsClosed)
			}
			for _, m := range matches {
				entries = append(entries, ranked{Entry{Port: port, Match: m, Rule: cr}, k.key(&m)})
			}
			if len(matches) == 0 {
				entries = append(entries, lastResort(port, k.catchAll(), cr))
			}
		}
	}
	return sortTable(entries)
}

// routeGroup says whose clients a route of a service in namespace svcNS
// applies to: "" for a producer route (every client), the namespace for
// a consumer route (that namespace's clients only). A consumer route must
// be in the namespace it names, and that namespace must not be the
// service's; a producer route must be in the service's namespace. A route
// that breaks this does not say reliably whose it is, so err is set and
// the route fails closed in the group returned: the consumer namespace it
// names when that is another namespace than the service's, which keeps it
// away from every other client, and the producer's otherwise.
func routeGroup(f field, svcNS, namespace, consumerNS string) (group string, err error) {
	switch {
	case consumerNS == "":
		if namespace != "" && namespace != svcNS {
			return "", f.child("namespace").errorf("route in %q, not the service's namespace %q, without a consumer_namespace", namespace, svcNS)
		}
		return "", nil
	case consumerNS == svcNS:
		return "", f.child("consumer_namespace").errorf("%q is the service's own namespace", consumerNS)
	case consumerNS != namespace:
		return consumerNS, f.child("consumer_namespace").errorf("%q is not the route's namespace %q", consumerNS, namespace)
	}
	return consumerNS, nil
}

// compileConsumers compiles the consumer routes of service s (in
// namespace svcNS) by namespace; nil when it has none.
func compileConsumers(f field, svcNS string, s *waypointapi.Service, warn *warnings) map[string]*ConsumerRoutes {
	var groups []string
	add := func(namespace, consumerNS string) {
		if g, _ := routeGroup(f, svcNS, namespace, consumerNS); g != "" && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	for _, r := range s.GetHttpRoutes() {
		add(r.GetNamespace(), r.GetConsumerNamespace())
	}
	for _, r := range s.GetGrpcRoutes() {
		add(r.GetNamespace(), r.GetConsumerNamespace())
	}
	if len(groups) == 0 {
		return nil
	}
	out := make(map[string]*ConsumerRoutes, len(groups))
	for _, g := range groups {
		out[g] = &ConsumerRoutes{
			HTTP: compileRoutes(f, svcNS, g, s.GetHttpRoutes(), httpRoutes, warn),
			GRPC: compileRoutes(f, svcNS, g, s.GetGrpcRoutes(), grpcRoutes, warn),
		}
	}
	return out
}

// compileHTTPRule compiles a rule and its matches. Each problem found is
// returned; with any, rule is failClosed's and matches holds only the
// matches that compiled, which may be none.
func compileHTTPRule(f field, ref RouteRef, index int, r *waypointapi.HTTPRouteRule) (rule *Rule, matches []Match, problems []error) {
	for i, m := range r.GetMatches() {
		cm, err := compileHTTPMatch(f.index("matches", i), m)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		matches = append(matches, cm)
	}
	if len(r.GetMatches()) == 0 {
		// "If no matches are specified, the default is a prefix path match
		// on "/", which has the effect of matching every HTTP request."
		matches = []Match{catchAllHTTP()}
	}
	rule, err := compileHTTPAction(f, ref, index, r)
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return failClosed(ref, r.GetName(), index), matches, problems
	}
	return rule, matches, nil
}

// failClosed is the rule that stands for one that does not compile: it
// has no filters and no backends, so its requests are answered with 500
// rather than forwarded unfiltered or left to a rule written for others.
func failClosed(ref RouteRef, name string, index int) *Rule {
	return &Rule{Route: ref, Name: name, Index: index}
}

// compileHTTPAction compiles what a rule does with its requests: filters,
// backends, timeouts and retries.
func compileHTTPAction(f field, ref RouteRef, index int, r *waypointapi.HTTPRouteRule) (*Rule, error) {
	rule := &Rule{Route: ref, Name: r.GetName(), Index: index}
	var err error
	if rule.Filters, err = compileFilters(f, r.GetFilters(), httpRuleFilters); err != nil {
		return nil, err
	}
	if usesPrefixModifier(&rule.Filters) {
		for i, m := range r.GetMatches() {
			if p := m.GetPath(); p != nil && p.GetType() != waypointapi.MatchType_PREFIX {
				return nil, f.index("matches", i).child("path").errorf(
					"a ReplacePrefixMatch path modifier needs PathPrefix matches only")
			}
		}
	}
	if rule.Backends, err = compileBackends(f, r.GetBackends()); err != nil {
		return nil, err
	}
	if rule.Filters.Redirect != nil && len(rule.Backends) > 0 {
		return nil, f.child("backends").errorf("a rule with a RequestRedirect filter may not have backends")
	}
	rule.RequestTimeout = time.Duration(r.GetRequestTimeoutMs()) * time.Millisecond
	rule.BackendTimeout = time.Duration(r.GetBackendTimeoutMs()) * time.Millisecond
	if rule.RequestTimeout > 0 && rule.BackendTimeout > rule.RequestTimeout {
		return nil, f.child("backend_timeout_ms").errorf(
			"backend timeout %v longer than the request timeout %v", rule.BackendTimeout, rule.RequestTimeout)
	}
	if rt := r.GetRetry(); rt != nil {
		if rule.Retry, err = compileRetry(f.child("retry"), rt); err != nil {
			return nil, err
		}
	}
	return rule, nil
}

func usesPrefixModifier(fs *Filters) bool {
	if fs.Redirect != nil && fs.Redirect.Path != nil && fs.Redirect.Path.Prefix {
		return true
	}
	return fs.Rewrite != nil && fs.Rewrite.Path != nil && fs.Rewrite.Path.Prefix
}

func compileHTTPMatch(f field, m *waypointapi.HTTPRouteMatch) (Match, error) {
	if m == nil {
		return Match{}, f.wrap(errMissing)
	}
	path, err := compilePathMatch(f.child("path"), m.GetPath())
	if err != nil {
		return Match{}, err
	}
	out := Match{Path: path, Method: m.GetMethod()}
	if out.Method != "" {
		if err := checkMethod(out.Method); err != nil {
			return Match{}, f.child("method").wrap(err)
		}
	}
	if out.Headers, err = compileHeaderMatches(f, m.GetHeaders()); err != nil {
		return Match{}, err
	}
	if out.Query, err = compileQueryMatches(f, m.GetQueryParams()); err != nil {
		return Match{}, err
	}
	return out, nil
}

// compilePathMatch compiles a path match; an absent one is Gateway API's
// default, PathPrefix "/". Exact and PathPrefix values are normalized as
// request paths are (pathnorm), so that "/%7Efoo" in a route matches the
// request path "/~foo".
func compilePathMatch(f field, p *waypointapi.PathMatch) (*PathMatch, error) {
	if p == nil {
		return &PathMatch{Type: PathPrefix, Value: "/"}, nil
	}
	v := p.GetValue()
	switch t := p.GetType(); t {
	case waypointapi.MatchType_EXACT, waypointapi.MatchType_PREFIX:
		if !strings.HasPrefix(v, "/") {
			return nil, f.errorf("path %q does not start with /", v)
		}
		if len(v) > waypointapi.MaxPathLen {
			return nil, f.errorf("path longer than %d bytes", waypointapi.MaxPathLen)
		}
		if err := waypointapi.CheckPathChars(v); err != nil {
			return nil, f.wrap(err)
		}
		norm, err := pathnorm.Normalize(v)
		if err != nil {
			return nil, f.wrap(fmt.Errorf("path %q: %w", v, err))
		}
		typ := PathExact
		if t == waypointapi.MatchType_PREFIX {
			typ = PathPrefix
		}
		return &PathMatch{Type: typ, Value: norm}, nil
	case waypointapi.MatchType_REGULAR_EXPRESSION:
		re, err := waypointapi.CompileRegex(v)
		if err != nil {
			return nil, f.wrap(err)
		}
		return &PathMatch{Type: PathRegex, Value: v, Regex: re}, nil
	default:
		return nil, f.errorf("unknown match type %d", t)
	}
}

// compileHeaderMatches compiles header matches. Of several matches on one
// name only the first counts: "If multiple entries specify equivalent
// header names, only the first entry with an equivalent name MUST be
// considered for a match. Subsequent entries ... MUST be ignored."
func compileHeaderMatches(parent field, hs []*waypointapi.HeaderMatch) ([]ValueMatch, error) {
	var out []ValueMatch
	for i, h := range hs {
		f := parent.index("headers", i)
		if h == nil {
			return nil, f.wrap(errMissing)
		}
		name := strings.ToLower(h.GetName())
		if err := waypointapi.CheckHeaderName(name); err != nil {
			return nil, f.child("name").wrap(err)
		}
		if slices.ContainsFunc(out, func(v ValueMatch) bool { return v.Name == name }) {
			continue
		}
		vm, err := compileValueMatch(f, h, waypointapi.MaxHeaderValueLen)
		if err != nil {
			return nil, err
		}
		vm.Name, vm.Key = name, canonical(name)
		if vm.Regex == nil {
			if err := waypointapi.CheckHeaderValue(vm.Value); err != nil {
				return nil, f.child("value").wrap(err)
			}
		}
		out = append(out, vm)
	}
	return out, nil
}

// compileQueryMatches compiles query parameter matches; names are exact
// and, as for headers, only the first match on a name counts.
func compileQueryMatches(parent field, qs []*waypointapi.HeaderMatch) ([]ValueMatch, error) {
	var out []ValueMatch
	for i, q := range qs {
		f := parent.index("query_params", i)
		if q == nil {
			return nil, f.wrap(errMissing)
		}
		name := q.GetName()
		if name == "" {
			return nil, f.child("name").errorf("empty query parameter name")
		}
		if slices.ContainsFunc(out, func(v ValueMatch) bool { return v.Name == name }) {
			continue
		}
		vm, err := compileValueMatch(f, q, waypointapi.MaxQueryValueLen)
		if err != nil {
			return nil, err
		}
		vm.Name = name
		out = append(out, vm)
	}
	return out, nil
}

// compileValueMatch compiles the value of a header or query match.
func compileValueMatch(f field, m *waypointapi.HeaderMatch, maxLen int) (ValueMatch, error) {
	v := m.GetValue()
	switch t := m.GetType(); t {
	case waypointapi.MatchType_EXACT:
		if v == "" {
			return ValueMatch{}, f.child("value").errorf("empty value")
		}
		if len(v) > maxLen {
			return ValueMatch{}, f.child("value").errorf("value longer than %d bytes", maxLen)
		}
		return ValueMatch{Value: v}, nil
	case waypointapi.MatchType_REGULAR_EXPRESSION:
		re, err := waypointapi.CompileRegex(v)
		if err != nil {
			return ValueMatch{}, f.child("value").wrap(err)
		}
		return ValueMatch{Value: v, Regex: re}, nil
	default:
		return ValueMatch{}, f.child("type").errorf("unsupported match type %s", matchTypeName(t))
	}
}

func matchTypeName(t waypointapi.MatchType) string {
	if n, ok := waypointapi.MatchType_name[int32(t)]; ok {
		return n
	}
	return fmt.Sprint(int32(t))
}

// compileGRPCRule is compileHTTPRule for a GRPCRoute rule.
func compileGRPCRule(f field, ref RouteRef, index int, r *waypointapi.GRPCRouteRule) (rule *Rule, matches []Match, problems []error) {
	for j, m := range r.GetMatches() {
		cm, err := compileGRPCMatch(f.index("matches", j), m)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		matches = append(matches, cm)
	}
	if len(r.GetMatches()) == 0 {
		// "If no matches are specified, the implementation MUST match
		// every gRPC request."
		matches = []Match{catchAllGRPC()}
	}
	rule = &Rule{Route: ref, Name: r.GetName(), Index: index}
	var err error
	if rule.Filters, err = compileFilters(f, r.GetFilters(), grpcRuleFilters); err == nil {
		rule.Backends, err = compileBackends(f, r.GetBackends())
	}
	if err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return failClosed(ref, r.GetName(), index), matches, problems
	}
	return rule, matches, nil
}

func compileGRPCMatch(f field, m *waypointapi.GRPCRouteMatch) (Match, error) {
	if m == nil {
		return Match{}, f.wrap(errMissing)
	}
	var out Match
	svc, method := m.GetService(), m.GetMethod()
	if svc != "" || method != "" {
		g := &GRPCMethodMatch{Service: svc, Method: method}
		switch t := m.GetType(); t {
		case waypointapi.MatchType_EXACT:
			// "Exact methods MUST be syntactically valid: Must not contain
			// `/` character"; the request's :path splits on it.
			if strings.Contains(svc, "/") {
				return Match{}, f.child("service").errorf("service %q contains /", svc)
			}
			if strings.Contains(method, "/") {
				return Match{}, f.child("method").errorf("method %q contains /", method)
			}
		case waypointapi.MatchType_REGULAR_EXPRESSION:
			var err error
			if svc != "" {
				if g.ServiceRegex, err = waypointapi.CompileRegex(svc); err != nil {
					return Match{}, f.child("service").wrap(err)
				}
			}
			if method != "" {
				if g.MethodRegex, err = waypointapi.CompileRegex(method); err != nil {
					return Match{}, f.child("method").wrap(err)
				}
			}
		default:
			return Match{}, f.child("type").errorf("unsupported match type %s", matchTypeName(t))
		}
		out.GRPC = g
	}
	var err error
	if out.Headers, err = compileHeaderMatches(f, m.GetHeaders()); err != nil {
		return Match{}, err
	}
	return out, nil
}

func compileRetry(f field, r *waypointapi.Retry) (*Retry, error) {
	if r.GetAttempts() > waypointapi.MaxRetryAttempts {
		return nil, f.child("attempts").errorf("%d attempts, at most %d", r.GetAttempts(), waypointapi.MaxRetryAttempts)
	}
	out := &Retry{Attempts: int(r.GetAttempts()), Backoff: time.Duration(r.GetBackoffMs()) * time.Millisecond}
	for i, c := range r.GetCodes() {
		// HTTPRouteRetryStatusCode: Minimum 400, Maximum 599.
		if c < 400 || c > 599 {
			return nil, f.index("codes", i).errorf("status code %d is not retryable (400 to 599)", c)
		}
		if !slices.Contains(out.Codes, int(c)) {
			out.Codes = append(out.Codes, int(c))
		}
	}
	return out, nil
}

var errNoHostname = errors.New("empty hostname")

func compileBackends(f field, bs []*waypointapi.BackendRef) ([]Backend, error) {
	var out []Backend
	for i, b := range bs {
		cb, err := compileBackend(f.index("backends", i), b, true)
		if err != nil {
			return nil, err
		}
		out = append(out, cb)
	}
	return out, nil
}

// compileBackend compiles a backend; withFilters says whether it may carry
// filters of its own (a mirror's may not).
func compileBackend(f field, b *waypointapi.BackendRef, withFilters bool) (Backend, error) {
	if b == nil {
		return Backend{}, f.wrap(errMissing)
	}
	out := Backend{Name: b.GetName(), Namespace: b.GetNamespace(), Hostname: b.GetHostname(), Weight: b.GetWeight()}
	out.key = out.Namespace + "/" + out.Hostname
	if out.Hostname == "" {
		return Backend{}, f.child("hostname").wrap(errNoHostname)
	}
	var err error
	if out.Port, err = portNumber(f.child("port"), b.GetPort(), true); err != nil {
		return Backend{}, err
	}
	if out.Weight > waypointapi.MaxWeight {
		return Backend{}, f.child("weight").errorf("weight %d larger than %d", out.Weight, waypointapi.MaxWeight)
	}
	if len(b.GetFilters()) > 0 {
		if !withFilters {
			return Backend{}, f.child("filters").errorf("a mirror backend may not have filters")
		}
		if out.Filters, err = compileFilters(f, b.GetFilters(), backendFilters); err != nil {
			return Backend{}, err
		}
	}
	return out, nil
}
