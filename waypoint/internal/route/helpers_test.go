package route_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

const (
	exact  = waypointapi.MatchType_EXACT
	prefix = waypointapi.MatchType_PREFIX
	regex  = waypointapi.MatchType_REGULAR_EXPRESSION
)

// nobody is a client without a workload identity: no consumer routes
// apply to it.
var nobody spiffeid.ID

// service compiles a service with the given routes; each rule is named so
// that a test can say which one a request must reach.
func service(t testing.TB, httpRoutes []*waypointapi.HTTPRoute, grpcRoutes []*waypointapi.GRPCRoute) *config.Service {
	t.Helper()
	wp := &waypointapi.Waypoint{Name: "waypoint", Namespace: "ns", Services: []*waypointapi.Service{{
		Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local",
		Vips:       [][]byte{{10, 0, 0, 1}},
		Ports:      []*waypointapi.ServicePort{{Name: "http", Port: 80}, {Name: "http-alt", Port: 8080}, {Name: "grpc", Port: 9090}},
		HttpRoutes: httpRoutes,
		GrpcRoutes: grpcRoutes,
	}}}
	c, err := config.Compile(wp)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c.Services[0]
}

// httpRoute is a route named name with one rule per element of rules.
func httpRoute(name string, port uint32, rules ...*waypointapi.HTTPRouteRule) *waypointapi.HTTPRoute {
	return &waypointapi.HTTPRoute{Name: name, Namespace: "ns", Port: port, Rules: rules}
}

// rule is a rule named name with the given matches, sending to echo.
func rule(name string, matches ...*waypointapi.HTTPRouteMatch) *waypointapi.HTTPRouteRule {
	return &waypointapi.HTTPRouteRule{
		Name: name, Matches: matches,
		Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local", Weight: 1}},
	}
}

// match builds an HTTPRouteMatch from a compact description: "exact:/a",
// "prefix:/a", "regex:/a.*", "method:GET", "header:name=value",
// "header~:name=regex", "query:name=value", "query~:name=regex". Without a
// path it is PathPrefix "/", as the control plane sends it.
func match(conds ...string) *waypointapi.HTTPRouteMatch {
	m := &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: prefix, Value: "/"}}
	for _, c := range conds {
		kind, v, _ := strings.Cut(c, ":")
		name, value, _ := strings.Cut(v, "=")
		switch kind {
		case "exact":
			m.Path = &waypointapi.PathMatch{Type: exact, Value: v}
		case "prefix":
			m.Path = &waypointapi.PathMatch{Type: prefix, Value: v}
		case "regex":
			m.Path = &waypointapi.PathMatch{Type: regex, Value: v}
		case "method":
			m.Method = v
		case "header":
			m.Headers = append(m.Headers, &waypointapi.HeaderMatch{Type: exact, Name: name, Value: value})
		case "header~":
			m.Headers = append(m.Headers, &waypointapi.HeaderMatch{Type: regex, Name: name, Value: value})
		case "query":
			m.QueryParams = append(m.QueryParams, &waypointapi.HeaderMatch{Type: exact, Name: name, Value: value})
		case "query~":
			m.QueryParams = append(m.QueryParams, &waypointapi.HeaderMatch{Type: regex, Name: name, Value: value})
		default:
			panic("unknown condition " + c)
		}
	}
	return m
}

// request builds a request for target ("/path?query") with headers given
// as "Name: value" strings.
func request(method, target string, headers ...string) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	r := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: "echo"}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Header.Add(name, strings.TrimSpace(value))
	}
	return r
}

func grpcRequest(path string, headers ...string) *http.Request {
	return request(http.MethodPost, path, append([]string{"Content-Type: application/grpc"}, headers...)...)
}

// reached names the rule a decision picked ("route/rule"), "404" for
// NotFound and "-" for no route at all.
func reached(d route.Decision) string {
	switch {
	case d.NotFound:
		if d.Rule != nil {
			return "404 with a rule"
		}
		return "404"
	case d.Rule == nil:
		return "-"
	}
	return d.Rule.Route.Name + "/" + d.Rule.Name
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
