package route_test

import (
	"net/http"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

type candidate struct {
	name string
	m    *waypointapi.HTTPRouteMatch
}

// TestHTTPPrecedence takes HTTPRouteRule.Matches' precedence list one
// sentence at a time. Each case holds a request that several candidates
// match; the winner must not depend on how the candidates are declared:
// each in its own route or all as rules of one route, in either order.
func TestHTTPPrecedence(t *testing.T) {
	tests := []struct {
		sentence   string
		candidates []candidate
		req        *http.Request
		want       string
	}{
		{
			`"Exact" path match.`,
			[]candidate{{"prefix", match("prefix:/foo")}, {"exact", match("exact:/foo")}},
			request("GET", "/foo"), "exact",
		},
		{
			`"Exact" path match, over a longer prefix.`,
			[]candidate{{"prefix", match("prefix:/foo/bar/")}, {"exact", match("exact:/foo/bar")}},
			request("GET", "/foo/bar"), "exact",
		},
		{
			`"Exact" path match, over a prefix with a method and headers.`,
			[]candidate{{"prefix", match("prefix:/", "method:GET", "header:a=1")}, {"exact", match("exact:/x")}},
			request("GET", "/x", "A: 1"), "exact",
		},
		{
			`"Prefix" path match with largest number of characters.`,
			[]candidate{{"short", match("prefix:/foo")}, {"long", match("prefix:/foo/bar")}, {"root", match("prefix:/")}},
			request("GET", "/foo/bar/baz"), "long",
		},
		{
			`"Prefix" path match with largest number of characters, over a method.`,
			[]candidate{{"method", match("prefix:/foo", "method:GET")}, {"long", match("prefix:/foo/bar")}},
			request("GET", "/foo/bar"), "long",
		},
		{
			`Method match.`,
			[]candidate{{"any", match("prefix:/foo")}, {"get", match("prefix:/foo", "method:GET")}},
			request("GET", "/foo/x"), "get",
		},
		{
			`Method match, over header matches.`,
			[]candidate{{"headers", match("header:a=1", "header:b=2")}, {"get", match("method:GET")}},
			request("GET", "/", "A: 1", "B: 2"), "get",
		},
		{
			`Largest number of header matches.`,
			[]candidate{{"one", match("header:a=1")}, {"two", match("header:a=1", "header:b=2")}, {"none", match()}},
			request("GET", "/", "A: 1", "B: 2"), "two",
		},
		{
			`Largest number of header matches, over query param matches.`,
			[]candidate{{"query", match("query:x=1", "query:y=2")}, {"header", match("header:a=1")}},
			request("GET", "/?x=1&y=2", "A: 1"), "header",
		},
		{
			`Largest number of query param matches.`,
			[]candidate{{"one", match("query:x=1")}, {"two", match("query:x=1", "query:y=2")}, {"none", match()}},
			request("GET", "/?x=1&y=2"), "two",
		},
		{
			`A candidate that would win but does not match leaves the request to the next.`,
			[]candidate{{"exact", match("exact:/foo")}, {"root", match("prefix:/")}, {"get", match("prefix:/bar", "method:GET")}},
			request("POST", "/bar"), "root",
		},
		// "The precedence of RegularExpression path matches are
		// implementation-specific": Skiff ranks them as Istio does, after
		// every Exact and PathPrefix match, the longer expression first.
		{
			`RegularExpression: after PathPrefix, even "/".`,
			[]candidate{{"regex", match("regex:/foo/.*")}, {"root", match("prefix:/")}},
			request("GET", "/foo/x"), "root",
		},
		{
			`RegularExpression: after Exact.`,
			[]candidate{{"regex", match("regex:/foo", "method:GET")}, {"exact", match("exact:/foo")}},
			request("GET", "/foo"), "exact",
		},
		{
			`RegularExpression: the longer expression first.`,
			[]candidate{{"short", match("regex:/f.*")}, {"long", match("regex:/foo/[a-z]+")}},
			request("GET", "/foo/x"), "long",
		},
	}
	for _, tt := range tests {
		layouts := map[string]func([]candidate) ([]*waypointapi.HTTPRoute, func(string) string){
			"routes": func(cs []candidate) ([]*waypointapi.HTTPRoute, func(string) string) {
				var rs []*waypointapi.HTTPRoute
				for _, c := range cs {
					rs = append(rs, httpRoute(c.name, 0, rule(c.name, c.m)))
				}
				return rs, func(n string) string { return n + "/" + n }
			},
			"rules": func(cs []candidate) ([]*waypointapi.HTTPRoute, func(string) string) {
				var rules []*waypointapi.HTTPRouteRule
				for _, c := range cs {
					rules = append(rules, rule(c.name, c.m))
				}
				return []*waypointapi.HTTPRoute{httpRoute("r", 0, rules...)}, func(n string) string { return "r/" + n }
			},
		}
		for layout, build := range layouts {
			for _, order := range []string{"declared", "reversed"} {
				t.Run(tt.sentence+"/"+layout+"/"+order, func(t *testing.T) {
					cs := tt.candidates
					if order == "reversed" {
						cs = reversed(cs)
					}
					routes, want := build(cs)
					d := route.Resolve(service(t, routes, nil), nobody, 80, tt.req)
					if got := reached(d); got != want(tt.want) {
						t.Errorf("reached %s, want %s", got, want(tt.want))
					}
				})
			}
		}
	}
}

// TestHTTPPrecedenceTies covers the sentences that break ties by
// declaration: the resource lists routes oldest first, then by
// "{namespace}/{name}", so the first route wins; within a route, the
// first rule; within a rule, which match does not change the rule.
func TestHTTPPrecedenceTies(t *testing.T) {
	same := match("prefix:/foo", "header:a=1")
	req := request("GET", "/foo/x", "A: 1")
	tests := []struct {
		sentence string
		routes   []*waypointapi.HTTPRoute
		want     string
	}{
		{"The oldest Route, or first by namespace/name: the first route listed.",
			[]*waypointapi.HTTPRoute{httpRoute("a", 0, rule("1", same)), httpRoute("b", 0, rule("1", same))}, "a/1"},
		{"The oldest Route, or first by namespace/name: the first route listed, reversed.",
			[]*waypointapi.HTTPRoute{httpRoute("b", 0, rule("1", same)), httpRoute("a", 0, rule("1", same))}, "b/1"},
		{"The FIRST matching rule (in list order).",
			[]*waypointapi.HTTPRoute{httpRoute("r", 0, rule("first", same), rule("second", same))}, "r/first"},
		{"The FIRST matching rule (in list order), reversed.",
			[]*waypointapi.HTTPRoute{httpRoute("r", 0, rule("second", same), rule("first", same))}, "r/second"},
		{"Route order breaks ties only: a later route with a method match wins.",
			[]*waypointapi.HTTPRoute{httpRoute("a", 0, rule("1", same)), httpRoute("b", 0, rule("1", match("prefix:/foo", "header:a=1", "method:GET")))}, "b/1"},
		{"A later rule with a longer prefix wins over an earlier one.",
			[]*waypointapi.HTTPRoute{httpRoute("r", 0, rule("short", match("prefix:/")), rule("long", same))}, "r/long"},
		{"Matches are ORed: either match of one rule selects it.",
			[]*waypointapi.HTTPRoute{httpRoute("r", 0, rule("or", match("exact:/nope"), match("prefix:/foo")))}, "r/or"},
	}
	for _, tt := range tests {
		t.Run(tt.sentence, func(t *testing.T) {
			if got := reached(route.Resolve(service(t, tt.routes, nil), nobody, 80, req)); got != tt.want {
				t.Errorf("reached %s, want %s", got, tt.want)
			}
		})
	}
}

type grpcCandidate struct {
	name string
	m    *waypointapi.GRPCRouteMatch
}

func grpcMatch(typ waypointapi.MatchType, svc, method string, headers ...string) *waypointapi.GRPCRouteMatch {
	m := &waypointapi.GRPCRouteMatch{Type: typ, Service: svc, Method: method}
	for _, h := range headers {
		hm := match("header:" + h).Headers[0]
		m.Headers = append(m.Headers, hm)
	}
	return m
}

func grpcRoute(name string, port uint32, rules ...*waypointapi.GRPCRouteRule) *waypointapi.GRPCRoute {
	return &waypointapi.GRPCRoute{Name: name, Namespace: "ns", Port: port, Rules: rules}
}

func grpcRule(name string, matches ...*waypointapi.GRPCRouteMatch) *waypointapi.GRPCRouteRule {
	return &waypointapi.GRPCRouteRule{
		Name: name, Matches: matches,
		Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local", Weight: 1}},
	}
}

// TestGRPCPrecedence takes GRPCRouteRule.Matches' list (hostnames do not
// apply to mesh routes): characters in a matching service, then in a
// matching method, then header matches; in both declaration orders.
func TestGRPCPrecedence(t *testing.T) {
	tests := []struct {
		sentence   string
		candidates []grpcCandidate
		req        *http.Request
		want       string
	}{
		{"Characters in a matching service.",
			[]grpcCandidate{{"any", grpcMatch(exact, "", "")}, {"service", grpcMatch(exact, "pkg.Echo", "")}},
			grpcRequest("/pkg.Echo/Get"), "service"},
		{"Characters in a matching service, over a method.",
			[]grpcCandidate{{"method", grpcMatch(exact, "", "Get")}, {"service", grpcMatch(exact, "pkg.Echo", "")}},
			grpcRequest("/pkg.Echo/Get"), "service"},
		{"Characters in a matching service: an exact service over a regular expression.",
			[]grpcCandidate{{"regex", grpcMatch(regex, "pkg\\..*", "")}, {"exact", grpcMatch(exact, "pkg.Echo", "")}},
			grpcRequest("/pkg.Echo/Get"), "exact"},
		{"Characters in a matching service: a regular expression over no service.",
			[]grpcCandidate{{"any", grpcMatch(exact, "", "", "a=1")}, {"regex", grpcMatch(regex, "pkg\\..*", "")}},
			grpcRequest("/pkg.Echo/Get", "A: 1"), "regex"},
		{"Characters in a matching method.",
			[]grpcCandidate{{"service", grpcMatch(exact, "pkg.Echo", "")}, {"method", grpcMatch(exact, "pkg.Echo", "Get")}},
			grpcRequest("/pkg.Echo/Get"), "method"},
		{"Characters in a matching method, over headers.",
			[]grpcCandidate{{"headers", grpcMatch(exact, "pkg.Echo", "", "a=1", "b=2")}, {"method", grpcMatch(exact, "pkg.Echo", "Get")}},
			grpcRequest("/pkg.Echo/Get", "A: 1", "B: 2"), "method"},
		{"Header matches.",
			[]grpcCandidate{{"one", grpcMatch(exact, "pkg.Echo", "", "a=1")}, {"two", grpcMatch(exact, "pkg.Echo", "", "a=1", "b=2")}},
			grpcRequest("/pkg.Echo/Get", "A: 1", "B: 2"), "two"},
	}
	for _, tt := range tests {
		for _, order := range []string{"declared", "reversed"} {
			t.Run(tt.sentence+"/"+order, func(t *testing.T) {
				cs := tt.candidates
				if order == "reversed" {
					cs = reversed(cs)
				}
				var routes []*waypointapi.GRPCRoute
				for _, c := range cs {
					routes = append(routes, grpcRoute(c.name, 0, grpcRule(c.name, c.m)))
				}
				d := route.Resolve(service(t, nil, routes), nobody, 9090, tt.req)
				if got := reached(d); got != tt.want+"/"+tt.want {
					t.Errorf("reached %s, want %s", got, tt.want)
				}
			})
		}
	}
	// "If ties still exist within the Route ..., matching precedence MUST
	// be granted to the first matching rule."
	routes := []*waypointapi.GRPCRoute{grpcRoute("r", 0, grpcRule("first", grpcMatch(exact, "pkg.Echo", "")), grpcRule("second", grpcMatch(exact, "pkg.Echo", "")))}
	if got := reached(route.Resolve(service(t, nil, routes), nobody, 9090, grpcRequest("/pkg.Echo/Get"))); got != "r/first" {
		t.Errorf("tie within a route reached %s, want r/first", got)
	}
}
