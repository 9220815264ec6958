package config_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

func pathMatch(t waypointapi.MatchType, v string) *waypointapi.HTTPRouteMatch {
	return &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: t, Value: v}}
}

func to(backend string, matches ...*waypointapi.HTTPRouteMatch) *waypointapi.HTTPRouteRule {
	return &waypointapi.HTTPRouteRule{Name: backend, Matches: matches, Backends: []*waypointapi.BackendRef{backendRef(backend)}}
}

func service(name string, vip byte, httpRoutes []*waypointapi.HTTPRoute, grpcRoutes []*waypointapi.GRPCRoute) *waypointapi.Service {
	return &waypointapi.Service{
		Name: name, Namespace: "ns", Hostname: name + ".ns.svc.cluster.local",
		Vips:       [][]byte{{10, 0, 0, vip}},
		Ports:      []*waypointapi.ServicePort{{Name: "http", Port: 80}, {Name: "http-alt", Port: 8080}, {Name: "grpc", Port: 9090}},
		HttpRoutes: httpRoutes, GrpcRoutes: grpcRoutes,
	}
}

func get(path string) *http.Request {
	return &http.Request{Method: "GET", URL: &url.URL{Path: path}, Header: http.Header{}}
}

func grpcCall(path string) *http.Request {
	r := get(path)
	r.Header.Set("Content-Type", "application/grpc")
	return r
}

// TestFailClosedRouting resolves requests against services holding broken
// rules and routes: the requests a broken rule still selects, and those
// nothing else takes, are answered with 500 (a rule without backends);
// every other request goes where its valid rule says; nothing reaches a
// service unrouted (Decision.Rule nil).
func TestFailClosedRouting(t *testing.T) {
	wp := &waypointapi.Waypoint{Name: "waypoint", Namespace: "ns", Services: []*waypointapi.Service{
		// Route a: its first rule has a bad regex beside a valid match.
		// Route z, another user's, is valid.
		service("mixed", 1, []*waypointapi.HTTPRoute{
			{Name: "a", Namespace: "ns", Rules: []*waypointapi.HTTPRouteRule{
				to("a", pathMatch(regex, "/(a"), pathMatch(prefix, "/b")),
				to("c", pathMatch(prefix, "/c")),
			}},
			{Name: "z", Namespace: "ns", Rules: []*waypointapi.HTTPRouteRule{to("z", pathMatch(regex, "/z.*"))}},
		}, nil),
		// The only rule's only match is bad: without a stand-in the
		// service would have no route and get requests unrouted.
		service("only", 2, []*waypointapi.HTTPRoute{
			{Name: "only", Namespace: "ns", Port: 80, Rules: []*waypointapi.HTTPRouteRule{to("x", pathMatch(regex, "a++"))}},
		}, nil),
		// The stand-in ranks after every valid rule, regexes included.
		service("beside", 3, []*waypointapi.HTTPRoute{
			{Name: "bad", Namespace: "ns", Rules: []*waypointapi.HTTPRouteRule{to("x", pathMatch(regex, "a++"))}},
			{Name: "ok", Namespace: "ns", Rules: []*waypointapi.HTTPRouteRule{to("ok", pathMatch(regex, "/ok.*"))}},
		}, []*waypointapi.GRPCRoute{
			{Name: "bad", Namespace: "ns", Rules: []*waypointapi.GRPCRouteRule{{
				Matches:  []*waypointapi.GRPCRouteMatch{{Type: regex, Method: "Get("}},
				Backends: []*waypointapi.BackendRef{backendRef("x")},
			}}},
			{Name: "ok", Namespace: "ns", Rules: []*waypointapi.GRPCRouteRule{{
				Matches:  []*waypointapi.GRPCRouteMatch{{Service: "pkg.Ok"}},
				Backends: []*waypointapi.BackendRef{backendRef("grpc-ok")},
			}}},
			// A newer route's catch-all still wins over the stand-in.
			{Name: "rest", Namespace: "ns", Port: 9090, Rules: []*waypointapi.GRPCRouteRule{{
				Backends: []*waypointapi.BackendRef{backendRef("grpc-rest")},
			}}},
		}),
		// A route whose port is not readable stands for every port.
		service("badport", 4, []*waypointapi.HTTPRoute{
			{Name: "r", Namespace: "ns", Port: 70000, Rules: []*waypointapi.HTTPRouteRule{to("x")}},
		}, nil),
	}}
	c, err := config.Compile(wp)
	if err != nil {
		t.Fatal(err)
	}
	const failed = "500"
	for _, tt := range []struct {
		svc  string
		port uint16
		req  *http.Request
		// want is the backend the rule sends to, or failed.
		want string
	}{
		{"mixed", 80, get("/b/1"), failed},
		{"mixed", 80, get("/c"), "c"},
		{"mixed", 80, get("/zz"), "z"},
		{"only", 80, get("/anything"), failed},
		{"beside", 80, get("/ok/1"), "ok"},
		{"beside", 80, get("/other"), failed},
		{"beside", 9090, grpcCall("/pkg.Ok/Get"), "grpc-ok"},
		{"beside", 9090, grpcCall("/pkg.Other/Get"), "grpc-rest"},
		{"beside", 8080, grpcCall("/pkg.Other/Get"), failed},
		{"badport", 80, get("/"), failed},
		{"badport", 9090, get("/"), failed},
	} {
		d := route.Resolve(c.Service("ns/"+tt.svc+".ns.svc.cluster.local"), nobody, tt.port, tt.req)
		got := failed
		switch {
		case d.Rule == nil:
			got = "unrouted"
			if d.NotFound {
				got = "not found"
			}
		case len(d.Rule.Backends) > 0:
			got = d.Rule.Backends[0].Name
		case !failedClosed(d.Rule):
			got = "a rule with filters"
		}
		if got != tt.want {
			t.Errorf("%s:%d %s: %s, want %s", tt.svc, tt.port, tt.req.URL.Path, got, tt.want)
		}
	}
	// "only" has a route on port 80 only: other ports still go to the
	// service, as they did before.
	if d := route.Resolve(c.Service("ns/only.ns.svc.cluster.local"), nobody, 9090, get("/")); d.Rule != nil || d.NotFound {
		t.Errorf("only:9090: %+v, want the service itself", d)
	}

	var fields []string
	for _, w := range c.Warnings() {
		fields = append(fields, w.Field)
	}
	want := []string{
		"services[0].http_routes[0].rules[0].matches[0].path",
		"services[1].http_routes[0].rules[0].matches[0].path",
		"services[2].http_routes[0].rules[0].matches[0].path",
		"services[2].grpc_routes[0].rules[0].matches[0].method",
		"services[3].http_routes[0].port",
	}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("warnings on\n%v, want\n%v", fields, want)
	}
}

// TestFailClosedPolicy evaluates policies that do not compile: each denies
// every request and connection it applies to, and only those.
func TestFailClosedPolicy(t *testing.T) {
	noValues := &waypointapi.L7Authorization{Name: "team", Namespace: "ns", Groups: []*waypointapi.L7Group{{
		Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{{Headers: []*waypointapi.HeaderCondition{{Name: "x-team"}}}}}},
	}}}
	badName := &waypointapi.L7Authorization{Name: "audit", Namespace: "ns", Audit: true, Groups: []*waypointapi.L7Group{{
		Rules: []*waypointapi.L7Rules{{Matches: []*waypointapi.L7Match{{Headers: []*waypointapi.HeaderCondition{{Name: "x y", Values: nil}}}}}},
	}}}
	for _, tt := range []struct {
		name string
		// waypoint and service policies; the broken one is at field.
		waypoint, service []*waypointapi.L7Authorization
		field             string
		key               string
		// bystanderDenied: the broken policy is the waypoint's, so it
		// applies to the other service too.
		bystanderDenied bool
	}{
		{"ALLOW on a header without values", nil, []*waypointapi.L7Authorization{noValues}, "services[0].policies[0]", "ns/team", false},
		{"AUDIT with a bad header name", nil, []*waypointapi.L7Authorization{{Name: "ok", Namespace: "ns"}, badName}, "services[0].policies[1]", "ns/audit", false},
		{"unknown action on the waypoint", []*waypointapi.L7Authorization{{Name: "new", Namespace: "ns", Action: 9, Groups: []*waypointapi.L7Group{{}}}}, nil, "policies[0]", "ns/new", true},
		{"nameless", nil, []*waypointapi.L7Authorization{{Namespace: "ns", Action: 9}}, "services[0].policies[0]", "ns/services[0].policies[0]", false},
		{"missing", nil, []*waypointapi.L7Authorization{nil}, "services[0].policies[0]", "ns/services[0].policies[0]", false},
		{"names with slashes", nil, []*waypointapi.L7Authorization{{Name: "a/b", Namespace: "c/d", Action: 9}}, "services[0].policies[0]", "ns/services[0].policies[0]", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := valid()
			w.Policies = tt.waypoint
			svc0(w).Policies = tt.service
			w.Services = append(w.Services, bystander())
			c, err := config.Compile(w)
			if err != nil {
				t.Fatal(err)
			}
			ws := c.Warnings()
			if len(ws) != 1 || ws[0].Field != tt.field || ws[0].Effect != config.PolicyDeniesAll {
				t.Fatalf("warnings %v, want one on %s", ws, tt.field)
			}
			echo, other := c.Service(echoKey), c.Service("other/bystander.other.svc.cluster.local")
			if len(echo.Policies) != len(tt.service) || len(c.Policies) != len(tt.waypoint) {
				t.Fatalf("policies: waypoint %d, service %d; want %d and %d (none dropped)", len(c.Policies), len(echo.Policies), len(tt.waypoint), len(tt.service))
			}
			conns := []policy.Conn{
				{DstPort: 80, Request: &policy.Request{Method: "GET", Path: "/", Header: http.Header{"X-Team": {"blue"}}}},
				{DstPort: 80}, // TCP through the waypoint
			}
			for _, conn := range conns {
				if d := authz.Decide(c.Policies, echo.Policies, conn); d.Allowed || d.Policy != tt.key {
					t.Errorf("echo, request %v: %+v, want denied by %s", conn.Request != nil, d, tt.key)
				}
				d := authz.Decide(c.Policies, other.Policies, conn)
				if d.Allowed == tt.bystanderDenied {
					t.Errorf("bystander, request %v: %+v, denied should be %v", conn.Request != nil, d, tt.bystanderDenied)
				}
			}
		})
	}
}

// Problems everywhere at once: each is reported, in resource order, and
// everything else compiles.
func TestWarningsInOrder(t *testing.T) {
	w := valid()
	w.Policies = []*waypointapi.L7Authorization{{Name: "p", Namespace: "ns", Action: 7}}
	rule0(w).Matches = append(rule0(w).Matches, pathMatch(regex, "("), pathMatch(regex, "/ok"), pathMatch(exact, "x"))
	rule0(w).Retry.Attempts = 101
	broken := bystander()
	broken.Vips = [][]byte{{1}}
	w.Services = append(w.Services, broken, bystander())
	c, err := config.Compile(w)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, warn := range c.Warnings() {
		got = append(got, warn.Field+" "+warn.Effect.String())
	}
	const r = "services[0].http_routes[0].rules[0]"
	want := []string{
		"policies[0] " + config.PolicyDeniesAll.String(),
		r + ".matches[1].path " + config.RuleFailsClosed.String(),
		r + ".matches[3].path " + config.RuleFailsClosed.String(),
		r + ".retry.attempts " + config.RuleFailsClosed.String(),
		"services[1].vips[0] " + config.ServiceDropped.String(),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkBystander(t, c)
	if len(c.Services) != 2 {
		t.Errorf("%d services, want echo and the second bystander", len(c.Services))
	}
	// The broken rule keeps its two valid matches, answered with 500; the
	// gRPC route is untouched.
	echo := c.Service(echoKey)
	if len(echo.HTTP.Entries) != 2 || !failedClosed(echo.HTTP.Entries[0].Rule) || len(echo.GRPC.Entries[0].Rule.Backends) != 1 {
		t.Errorf("echo: HTTP %+v, GRPC %+v", echo.HTTP.Entries, echo.GRPC.Entries)
	}
	// Warnings returns a copy.
	c.Warnings()[0] = nil
	if c.Warnings()[0] == nil {
		t.Error("Warnings returned the configuration's own slice")
	}
	var fe *config.Warning
	if !errors.As(error(c.Warnings()[0]), &fe) || errors.Unwrap(fe) == nil {
		t.Error("a Warning does not unwrap to its problem")
	}
}

func TestEffectString(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range []config.Effect{config.RuleFailsClosed, config.RouteFailsClosed, config.ServiceDropped, config.PolicyDeniesAll} {
		s := e.String()
		if s == "" || strings.HasPrefix(s, "Effect(") || seen[s] {
			t.Errorf("%d: %q", int(e), s)
		}
		seen[s] = true
	}
	if got := config.Effect(0).String(); got != "Effect(0)" {
		t.Errorf("Effect(0) = %q", got)
	}
}
