package route_test

import (
	"net/http"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

// TestMatchConditions checks each kind of condition alone: one route with
// one rule "r/hit", and whether a request reaches it or gets 404.
func TestMatchConditions(t *testing.T) {
	tests := []struct {
		name string
		m    *waypointapi.HTTPRouteMatch
		req  *http.Request
		hit  bool
	}{
		// PathMatchExact: "an exact path match on `/abc` will only match
		// requests to `/abc`, NOT `/abc/`, `/Abc`, or `/abcd`."
		{"exact /abc: /abc", match("exact:/abc"), request("GET", "/abc"), true},
		{"exact /abc: /abc/", match("exact:/abc"), request("GET", "/abc/"), false},
		{"exact /abc: /Abc", match("exact:/abc"), request("GET", "/Abc"), false},
		{"exact /abc: /abcd", match("exact:/abc"), request("GET", "/abcd"), false},
		{"exact /abc: query ignored", match("exact:/abc"), request("GET", "/abc?x=1"), true},
		// PathMatchPathPrefix: "the paths `/abc`, `/abc/`, and `/abc/def`
		// would all match the prefix `/abc`, but the path `/abcd` would
		// not", and "a trailing `/` is ignored".
		{"prefix /abc: /abc", match("prefix:/abc"), request("GET", "/abc"), true},
		{"prefix /abc: /abc/", match("prefix:/abc"), request("GET", "/abc/"), true},
		{"prefix /abc: /abc/def", match("prefix:/abc"), request("GET", "/abc/def"), true},
		{"prefix /abc: /abcd", match("prefix:/abc"), request("GET", "/abcd"), false},
		{"prefix /abc: /ab", match("prefix:/abc"), request("GET", "/ab"), false},
		{"prefix /abc: /ABC", match("prefix:/abc"), request("GET", "/ABC"), false},
		{"prefix /abc/: /abc", match("prefix:/abc/"), request("GET", "/abc"), true},
		{"prefix /abc/: /abc/def", match("prefix:/abc/"), request("GET", "/abc/def"), true},
		{"prefix /abc/: /abcd", match("prefix:/abc/"), request("GET", "/abcd"), false},
		{"prefix /foo: /foobar", match("prefix:/foo"), request("GET", "/foobar"), false},
		{"prefix /: /", match("prefix:/"), request("GET", "/"), true},
		{"prefix /: /anything", match("prefix:/"), request("GET", "/any/thing"), true},
		{"prefix /a/b: /a/b/c", match("prefix:/a/b"), request("GET", "/a/b/c"), true},
		{"prefix /a/b: /a/bc", match("prefix:/a/b"), request("GET", "/a/bc"), false},
		// Paths compare in escaped form, as Gateway API writes them.
		{"exact /a%20b: /a b", match("exact:/a%20b"), request("GET", "/a%20b"), true},
		{"prefix /a%3Fb: /a%3Fb/c", match("prefix:/a%3Fb"), request("GET", "/a%3Fb/c"), true},
		// Regular expressions match the whole path, case-sensitively.
		{"regex: whole path", match("regex:/abc/[0-9]+"), request("GET", "/abc/12"), true},
		{"regex: not a prefix", match("regex:/abc/[0-9]+"), request("GET", "/abc/12/x"), false},
		{"regex: not a suffix", match("regex:/abc/[0-9]+"), request("GET", "/x/abc/12"), false},
		{"regex: alternation anchored", match("regex:/a|/b"), request("GET", "/bc"), false},
		{"regex: case-sensitive", match("regex:/abc"), request("GET", "/ABC"), false},
		// Methods are exact.
		{"method GET: GET", match("method:GET"), request("GET", "/"), true},
		{"method GET: POST", match("method:GET"), request("POST", "/"), false},
		{"method GET: get", match("method:GET"), request("get", "/"), false},
		// Header names are case-insensitive, values are not; every header
		// match must hold.
		{"header: present", match("header:Version=v1"), request("GET", "/", "version: v1"), true},
		{"header: name in any case", match("header:VERSION=v1"), request("GET", "/", "Version: v1"), true},
		{"header: other value", match("header:version=v1"), request("GET", "/", "Version: v2"), false},
		{"header: value case", match("header:version=v1"), request("GET", "/", "Version: V1"), false},
		{"header: absent", match("header:version=v1"), request("GET", "/"), false},
		{"header: ANDed", match("header:a=1", "header:b=2"), request("GET", "/", "A: 1"), false},
		{"header: ANDed, both", match("header:a=1", "header:b=2"), request("GET", "/", "A: 1", "B: 2"), true},
		{"header: regex", match("header~:version=v[0-9]+"), request("GET", "/", "Version: v12"), true},
		{"header: regex whole value", match("header~:version=v[0-9]+"), request("GET", "/", "Version: v12-beta"), false},
		{"header: regex on an absent header", match("header~:version=.*"), request("GET", "/"), false},
		// A repeated header is matched on its values joined with ",".
		{"header: repeated, joined", match("header:x=a,b"), request("GET", "/", "X: a", "X: b"), true},
		{"header: repeated, first only", match("header:x=a"), request("GET", "/", "X: a", "X: b"), false},
		{"header: repeated, regex", match("header~:x=(^|.*,)b(,.*|$)"), request("GET", "/", "X: a", "X: b", "X: c"), true},
		{"header: split cookie", match("header:cookie=a=1; b=2"), request("GET", "/", "Cookie: a=1", "Cookie: b=2"), true},
		// Query parameters: exact names, the first value, decoded.
		{"query: present", match("query:animal=whale"), request("GET", "/?animal=whale"), true},
		{"query: among others", match("query:animal=whale"), request("GET", "/?a=1&animal=whale&b"), true},
		{"query: other value", match("query:animal=whale"), request("GET", "/?animal=whaledolphin"), false},
		{"query: name is case-sensitive", match("query:animal=whale"), request("GET", "/?Animal=whale"), false},
		{"query: absent", match("query:animal=whale"), request("GET", "/"), false},
		{"query: first value", match("query:q=1"), request("GET", "/?q=1&q=2"), true},
		{"query: not the second value", match("query:q=2"), request("GET", "/?q=1&q=2"), false},
		{"query: decoded", match("query:q=a b&c"), request("GET", "/?q=a+b%26c"), true},
		{"query: decoded name", match("query:a b=1"), request("GET", "/?a%20b=1"), true},
		{"query: empty value", match("query~:q=.*"), request("GET", "/?q"), true},
		{"query: bad escape skipped", match("query:q=2"), request("GET", "/?q=%zz&q=2"), true},
		{"query: semicolon pair skipped", match("query:q=2"), request("GET", "/?q=1;x=y&q=2"), true},
		{"query: regex", match("query~:q=[0-9]+"), request("GET", "/?q=123"), true},
		{"query: ANDed", match("query:x=1", "query:y=2"), request("GET", "/?x=1"), false},
		// All of a match's conditions must hold.
		{"all: path, method, header, query", match("prefix:/api", "method:POST", "header:a=1", "query:q=1"),
			request("POST", "/api/x?q=1", "A: 1"), true},
		{"all: one missing", match("prefix:/api", "method:POST", "header:a=1", "query:q=1"),
			request("POST", "/api/x?q=1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, []*waypointapi.HTTPRoute{httpRoute("r", 0, rule("hit", tt.m))}, nil)
			want := "404"
			if tt.hit {
				want = "r/hit"
			}
			if got := reached(route.Resolve(svc, nobody, 80, tt.req)); got != want {
				t.Errorf("reached %s, want %s", got, want)
			}
		})
	}
}

func TestPrefix(t *testing.T) {
	svc := service(t, []*waypointapi.HTTPRoute{httpRoute("r", 0,
		rule("exact", match("exact:/e")),
		rule("regex", match("regex:/r.*")),
		rule("slash", match("prefix:/s/")),
		rule("prefix", match("prefix:/p")),
		rule("other", match("prefix:/other")),
	)}, nil)
	tests := []struct{ path, rule, prefix string }{
		{"/e", "r/exact", ""},
		{"/rx", "r/regex", ""},
		{"/s", "r/slash", "/s/"},
		{"/s/x", "r/slash", "/s/"},
		{"/p/x", "r/prefix", "/p"},
		{"/other", "r/other", "/other"},
	}
	for _, tt := range tests {
		d := route.Resolve(svc, nobody, 80, request("GET", tt.path))
		if reached(d) != tt.rule || d.Prefix != tt.prefix {
			t.Errorf("%s: reached %s with prefix %q, want %s with %q", tt.path, reached(d), d.Prefix, tt.rule, tt.prefix)
		}
	}
	// A rule without matches is PathPrefix "/".
	svc = service(t, []*waypointapi.HTTPRoute{httpRoute("r", 0, rule("all"))}, nil)
	if d := route.Resolve(svc, nobody, 80, request("GET", "/x/y")); reached(d) != "r/all" || d.Prefix != "/" {
		t.Errorf("rule without matches: reached %s with prefix %q, want r/all with /", reached(d), d.Prefix)
	}
}

// TestPorts: a route with a parentRef port applies to that service port
// only; a port no route attaches to goes to the service unrouted (Rule
// nil), while a port with routes that none matches is NotFound.
func TestPorts(t *testing.T) {
	svc := service(t, []*waypointapi.HTTPRoute{
		httpRoute("on80", 80, rule("a", match("prefix:/a"))),
		httpRoute("on8080", 8080, rule("b", match("prefix:/b"))),
	}, nil)
	tests := []struct {
		port uint16
		path string
		want string
	}{
		{80, "/a", "on80/a"},
		{80, "/b", "404"},
		{8080, "/b", "on8080/b"},
		{8080, "/a", "404"},
		{9090, "/a", "-"},
	}
	for _, tt := range tests {
		if got := reached(route.Resolve(svc, nobody, tt.port, request("GET", tt.path))); got != tt.want {
			t.Errorf("port %d %s: reached %s, want %s", tt.port, tt.path, got, tt.want)
		}
	}

	// A route without a port applies to every port.
	svc = service(t, []*waypointapi.HTTPRoute{
		httpRoute("on80", 80, rule("a", match("exact:/a"))),
		httpRoute("all", 0, rule("b", match("prefix:/b"))),
	}, nil)
	for _, tt := range []struct {
		port uint16
		path string
		want string
	}{{80, "/a", "on80/a"}, {80, "/b", "all/b"}, {8080, "/b", "all/b"}, {8080, "/a", "404"}, {80, "/c", "404"}} {
		if got := reached(route.Resolve(svc, nobody, tt.port, request("GET", tt.path))); got != tt.want {
			t.Errorf("port %d %s: reached %s, want %s", tt.port, tt.path, got, tt.want)
		}
	}
}

func TestNoRoutes(t *testing.T) {
	svc := service(t, nil, nil)
	if d := route.Resolve(svc, nobody, 80, request("GET", "/")); d != (route.Decision{}) {
		t.Errorf("service without routes: %+v, want the zero Decision", d)
	}
	if d := route.Resolve(nil, nobody, 80, request("GET", "/")); d != (route.Decision{}) {
		t.Errorf("nil service: %+v, want the zero Decision", d)
	}
	// A hand-built, empty table has no entry for any port.
	if d := route.Resolve(&config.Service{HTTP: &config.RouteTable{}}, nobody, 80, request("GET", "/")); d != (route.Decision{}) {
		t.Errorf("empty table: %+v", d)
	}
}

// TestHandBuilt: a table built without Compile (no header keys computed)
// still matches header names case-insensitively.
func TestHandBuilt(t *testing.T) {
	r := &config.Rule{Name: "h"}
	svc := &config.Service{HTTP: &config.RouteTable{Entries: []config.Entry{{
		Match: config.Match{Path: &config.PathMatch{Type: config.PathPrefix, Value: "/"}, Headers: []config.ValueMatch{{Name: "x-a", Value: "1"}}},
		Rule:  r,
	}}}}
	if d := route.Resolve(svc, nobody, 80, request("GET", "/", "X-A: 1")); d.Rule != r {
		t.Errorf("hand-built header match: %+v", d)
	}
	// A regex path without its compiled expression never matches.
	svc.HTTP.Entries[0].Match = config.Match{Path: &config.PathMatch{Type: config.PathRegex, Value: ".*"}}
	if d := route.Resolve(svc, nobody, 80, request("GET", "/")); !d.NotFound {
		t.Errorf("regex without Regex: %+v, want NotFound", d)
	}
}

func TestGRPC(t *testing.T) {
	httpRoutes := []*waypointapi.HTTPRoute{httpRoute("web", 0, rule("any", match()))}
	grpcRoutes := []*waypointapi.GRPCRoute{grpcRoute("rpc", 9090,
		grpcRule("echo", grpcMatch(exact, "pkg.Echo", "Echo")),
		grpcRule("echotwo", grpcMatch(exact, "pkg.Echo", "EchoTwo")),
		grpcRule("method", grpcMatch(exact, "", "Ping")),
		grpcRule("regex", grpcMatch(regex, "pkg\\.v[0-9]+\\.Store", "(Get|List)[A-Z][a-z]*")),
		grpcRule("header", grpcMatch(exact, "pkg.Hdr", "", "x-tenant=a")),
	)}
	svc := service(t, httpRoutes, grpcRoutes)
	tests := []struct {
		name string
		port uint16
		req  *http.Request
		want string
	}{
		{"exact service and method", 9090, grpcRequest("/pkg.Echo/Echo"), "rpc/echo"},
		{"another method", 9090, grpcRequest("/pkg.Echo/EchoTwo"), "rpc/echotwo"},
		// GRPCExactMethodMatching: an unknown method gets UNIMPLEMENTED,
		// which is how gRPC clients read a 404.
		{"unknown method", 9090, grpcRequest("/pkg.Echo/EchoThree"), "404"},
		{"method of any service", 9090, grpcRequest("/other.Svc/Ping"), "rpc/method"},
		{"regex service and method", 9090, grpcRequest("/pkg.v2.Store/ListItems"), "rpc/regex"},
		{"regex is anchored", 9090, grpcRequest("/pkg.v2.Store/ListItems2"), "404"},
		{"regex service mismatch", 9090, grpcRequest("/pkg.vx.Store/GetItem"), "404"},
		{"header", 9090, grpcRequest("/pkg.Hdr/Do", "X-Tenant: a"), "rpc/header"},
		{"header missing", 9090, grpcRequest("/pkg.Hdr/Do"), "404"},
		{"not a method path", 9090, grpcRequest("/pkg.Echo"), "404"},
		{"method path too deep", 9090, grpcRequest("/pkg.Echo/Echo/x"), "404"},
		{"empty method", 9090, grpcRequest("/pkg.Echo/"), "404"},
		{"content type with codec", 9090, request("POST", "/pkg.Echo/Echo", "Content-Type: application/grpc+proto"), "rpc/echo"},
		{"content type in upper case", 9090, request("POST", "/pkg.Echo/Echo", "Content-Type: Application/GRPC"), "rpc/echo"},
		{"gRPC-Web", 9090, request("POST", "/pkg.Echo/Echo", "Content-Type: application/grpc-web+proto"), "rpc/echo"},
		// Requests that are not gRPC use the HTTP table only.
		{"not gRPC", 9090, request("POST", "/pkg.Echo/Echo", "Content-Type: application/json"), "web/any"},
		{"no content type", 9090, request("POST", "/pkg.Echo/Echo"), "web/any"},
		// gRPC requests use the HTTP table on a port without GRPCRoutes.
		{"gRPC on a port without GRPCRoutes", 80, grpcRequest("/pkg.Echo/Echo"), "web/any"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reached(route.Resolve(svc, nobody, tt.port, tt.req)); got != tt.want {
				t.Errorf("reached %s, want %s", got, tt.want)
			}
		})
	}

	// Without HTTPRoutes, a request that is not gRPC is not routed.
	svc = service(t, nil, grpcRoutes)
	if got := reached(route.Resolve(svc, nobody, 9090, request("GET", "/"))); got != "-" {
		t.Errorf("HTTP request to a service with GRPCRoutes only: reached %s, want -", got)
	}
	// A GRPCRoute rule without matches takes every gRPC request.
	svc = service(t, nil, []*waypointapi.GRPCRoute{grpcRoute("all", 0, grpcRule("any"))})
	if got := reached(route.Resolve(svc, nobody, 9090, grpcRequest("/x"))); got != "all/any" {
		t.Errorf("GRPCRoute rule without matches: reached %s, want all/any", got)
	}
}

// TestMeshConformance replays the request tables of the mesh conformance
// tests whose outcome is a routing decision (gateway-api v1.6
// conformance/tests/mesh), with each test's route.
func TestMeshConformance(t *testing.T) {
	backend := func(name string) func(*waypointapi.HTTPRouteRule) {
		return func(r *waypointapi.HTTPRouteRule) { r.Name = name }
	}
	named := func(r *waypointapi.HTTPRouteRule, f func(*waypointapi.HTTPRouteRule)) *waypointapi.HTTPRouteRule {
		f(r)
		return r
	}
	v1, v2 := backend("echo-v1"), backend("echo-v2")

	// mesh/httproute-matching.yaml
	matching := service(t, []*waypointapi.HTTPRoute{httpRoute("mesh-matching", 80,
		named(rule("", match("prefix:/"), match("header:version=one")), v1),
		named(rule("", match("prefix:/v2"), match("header:version=two")), v2),
	)}, nil)
	// mesh/httproute-query-param-matching.yaml
	query := service(t, []*waypointapi.HTTPRoute{httpRoute("mesh-query-param-matching", 80,
		named(rule("", match("query:animal=whale")), v1),
		named(rule("", match("query:animal=dolphin")), v2),
		named(rule("", match("prefix:/path1", "query:animal=whale")), v1),
		named(rule("", match("header:version=one", "query:animal=whale")), v2),
		named(rule("", match("prefix:/path3", "query:animal=shark"), match("prefix:/path4", "header:version=three", "query:animal=kraken")), v1),
		named(rule("", match("prefix:/path5")), v1),
		named(rule("", match("query:animal=hydra")), v2),
	)}, nil)
	// mesh/mesh-split.yaml
	split := service(t, []*waypointapi.HTTPRoute{httpRoute("mesh-split", 0,
		named(rule("", match("exact:/v1")), v1),
		named(rule("", match("exact:/v2")), v2),
	)}, nil)

	tests := []struct {
		test string
		svc  *config.Service
		req  *http.Request
		want string // backend, or 404
	}{
		{"MeshHTTPRouteMatching", matching, request("GET", "/"), "echo-v1"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/example"), "echo-v1"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/", "Version: one"), "echo-v1"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/v2"), "echo-v2"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/v2/example"), "echo-v2"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/", "Version: two"), "echo-v2"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/v2/"), "echo-v2"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/v2example"), "echo-v1"},
		{"MeshHTTPRouteMatching", matching, request("GET", "/foo/v2/example"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=whale"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=dolphin"), "echo-v2"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=whale&otherparam=irrelevant"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=dolphin&color=yellow"), "echo-v2"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?color=blue"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=dog"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=whaledolphin"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/path1?animal=whale"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=whale", "version: one"), "echo-v2"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/path3?animal=shark"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/path4?animal=kraken", "version: three"), "echo-v1"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/?animal=shark"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/path4?animal=kraken"), "404"},
		{"MeshHTTPRouteQueryParamMatching", query, request("GET", "/path5?animal=hydra"), "echo-v1"},
		{"MeshSplit", split, request("GET", "/v1"), "echo-v1"},
		{"MeshSplit", split, request("GET", "/v2"), "echo-v2"},
	}
	for _, tt := range tests {
		t.Run(tt.test+" "+tt.req.URL.String(), func(t *testing.T) {
			d := route.Resolve(tt.svc, nobody, 80, tt.req)
			got := "404"
			if !d.NotFound {
				got = d.Rule.Name
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestNoAllocations: resolving a request on the common paths allocates
// nothing.
func TestNoAllocations(t *testing.T) {
	svc := benchService(t)
	none := service(t, nil, nil)
	reqs := map[string]*http.Request{
		"prefix": request("GET", "/api/v1/items?page=2", "X-Version: v1"),
		"exact":  request("GET", "/healthz"),
		"query":  request("GET", "/search?q=skiff&lang=en"),
	}
	for name, r := range reqs {
		if n := testing.AllocsPerRun(100, func() { route.Resolve(svc, nobody, 80, r) }); n != 0 {
			t.Errorf("%s: %v allocations per Resolve, want 0", name, n)
		}
	}
	r := request("GET", "/x")
	if n := testing.AllocsPerRun(100, func() { route.Resolve(none, nobody, 80, r) }); n != 0 {
		t.Errorf("no routes: %v allocations per Resolve, want 0", n)
	}
}

func benchService(t testing.TB) *config.Service {
	return service(t, []*waypointapi.HTTPRoute{httpRoute("app", 0,
		rule("health", match("exact:/healthz")),
		rule("search", match("prefix:/search", "query:lang=en")),
		rule("v1", match("prefix:/api/v1", "header:x-version=v1")),
		rule("api", match("prefix:/api")),
		rule("root", match()),
	)}, nil)
}

func BenchmarkResolve(b *testing.B) {
	svc := benchService(b)
	none := service(b, nil, nil)
	for _, bc := range []struct {
		name string
		svc  *config.Service
		req  *http.Request
	}{
		{"no routes", none, request("GET", "/api/v1/items")},
		{"prefix", svc, request("GET", "/api/v1/items?page=2", "X-Version: v1")},
		{"fallthrough", svc, request("GET", "/static/app.js")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				route.Resolve(bc.svc, nobody, 80, bc.req)
			}
		})
	}
}
