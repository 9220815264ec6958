package config_test

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

const (
	exact  = waypointapi.MatchType_EXACT
	prefix = waypointapi.MatchType_PREFIX
	regex  = waypointapi.MatchType_REGULAR_EXPRESSION
)

func backendRef(name string) *waypointapi.BackendRef {
	return &waypointapi.BackendRef{Name: name, Namespace: "ns", Hostname: name + ".ns.svc.cluster.local", Port: 80, Weight: 1}
}

// valid returns a resource that compiles, for the rejection cases to
// break one field at a time.
func valid() *waypointapi.Waypoint {
	return &waypointapi.Waypoint{
		Name: "waypoint", Namespace: "ns", TrustDomain: "cluster.local",
		Services: []*waypointapi.Service{{
			Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local",
			Vips: [][]byte{{10, 0, 0, 1}},
			Ports: []*waypointapi.ServicePort{
				{Name: "http", Port: 80, TargetPort: 8080},
				{Name: "grpc", Port: 9090},
			},
			HttpRoutes: []*waypointapi.HTTPRoute{{
				Name: "echo", Namespace: "ns",
				Rules: []*waypointapi.HTTPRouteRule{{
					Matches: []*waypointapi.HTTPRouteMatch{{
						Path:        &waypointapi.PathMatch{Type: prefix, Value: "/"},
						Headers:     []*waypointapi.HeaderMatch{{Name: "version", Value: "v1"}},
						QueryParams: []*waypointapi.HeaderMatch{{Name: "q", Value: "1"}},
					}},
					Filters: []*waypointapi.HTTPFilter{{Kind: &waypointapi.HTTPFilter_RequestHeaderModifier{
						RequestHeaderModifier: &waypointapi.HeaderModifier{Set: []*waypointapi.Header{{Name: "x-a", Value: "1"}}},
					}}},
					Backends: []*waypointapi.BackendRef{backendRef("echo")},
					Retry:    &waypointapi.Retry{Attempts: 2, Codes: []uint32{503}},
				}},
			}},
			GrpcRoutes: []*waypointapi.GRPCRoute{{
				Name: "grpc", Namespace: "ns",
				Rules: []*waypointapi.GRPCRouteRule{{
					Matches:  []*waypointapi.GRPCRouteMatch{{Service: "pkg.Echo", Headers: []*waypointapi.HeaderMatch{{Name: "version", Value: "v1"}}}},
					Backends: []*waypointapi.BackendRef{backendRef("echo")},
				}},
			}},
		}},
	}
}

func svc0(w *waypointapi.Waypoint) *waypointapi.Service { return w.Services[0] }

func rule0(w *waypointapi.Waypoint) *waypointapi.HTTPRouteRule {
	return w.Services[0].HttpRoutes[0].Rules[0]
}

func match0(w *waypointapi.Waypoint) *waypointapi.HTTPRouteMatch { return rule0(w).Matches[0] }

func grpcMatch0(w *waypointapi.Waypoint) *waypointapi.GRPCRouteMatch {
	return w.Services[0].GrpcRoutes[0].Rules[0].Matches[0]
}

func setFilters(w *waypointapi.Waypoint, fs ...*waypointapi.HTTPFilter) { rule0(w).Filters = fs }

func requestHeaders(m *waypointapi.HeaderModifier) *waypointapi.HTTPFilter {
	return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestHeaderModifier{RequestHeaderModifier: m}}
}

func responseHeaders(m *waypointapi.HeaderModifier) *waypointapi.HTTPFilter {
	return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_ResponseHeaderModifier{ResponseHeaderModifier: m}}
}

func redirect(r *waypointapi.Redirect) *waypointapi.HTTPFilter {
	return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestRedirect{RequestRedirect: r}}
}

func rewrite(r *waypointapi.Rewrite) *waypointapi.HTTPFilter {
	return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_UrlRewrite{UrlRewrite: r}}
}

func mirror(m *waypointapi.Mirror) *waypointapi.HTTPFilter {
	return &waypointapi.HTTPFilter{Kind: &waypointapi.HTTPFilter_RequestMirror{RequestMirror: m}}
}

func headers(kv ...string) []*waypointapi.Header {
	var out []*waypointapi.Header
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &waypointapi.Header{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestCompileValid(t *testing.T) {
	c, err := config.Compile(valid())
	if err != nil {
		t.Fatalf("Compile(valid()) = %v", err)
	}
	if ws := c.Warnings(); len(ws) != 0 {
		t.Fatalf("warnings on a valid resource: %v", ws)
	}
}

// TestCompileContains breaks one field of a valid resource per case and
// checks that the problem stays in the part that holds it: the resource
// compiles, one warning names the field and says what was done, that part
// fails closed, and a bystander service beside it is untouched.
func TestCompileContains(t *testing.T) {
	const r = "services[0].http_routes[0].rules[0]"
	const m = r + ".matches[0]"
	const g = "services[0].grpc_routes[0].rules[0]"
	tests := []struct {
		name   string
		mutate func(w *waypointapi.Waypoint)
		field  string
		msg    string
		effect config.Effect
		// kept is, for RuleFailsClosed, how many of the rule's matches
		// survive (answered with 500); 0 means none, and a last-ranked
		// catch-all stands for the rule.
		kept int
	}{
		{"missing service", func(w *waypointapi.Waypoint) { w.Services = append(w.Services, nil) }, "services[1]", "missing", config.ServiceDropped, 0},
		{"service without name", func(w *waypointapi.Waypoint) { svc0(w).Name = "" }, "services[0].name", "empty", config.ServiceDropped, 0},
		{"service without namespace", func(w *waypointapi.Waypoint) { svc0(w).Namespace = "" }, "services[0].namespace", "empty", config.ServiceDropped, 0},
		{"service without hostname", func(w *waypointapi.Waypoint) { svc0(w).Hostname = "" }, "services[0].hostname", "empty", config.ServiceDropped, 0},
		{"duplicate service", func(w *waypointapi.Waypoint) {
			s := proto.Clone(svc0(w)).(*waypointapi.Service)
			s.Vips = nil
			w.Services = append(w.Services, s)
		}, "services[1]", "duplicate service ns/echo.ns.svc.cluster.local", config.ServiceDropped, 0},
		{"VIP of 3 bytes", func(w *waypointapi.Waypoint) { svc0(w).Vips = [][]byte{{10, 0, 0}} }, "services[0].vips[0]", "invalid IP address", config.ServiceDropped, 0},
		{"unspecified VIP", func(w *waypointapi.Waypoint) { svc0(w).Vips = [][]byte{{0, 0, 0, 0}} }, "services[0].vips[0]", "invalid IP address", config.ServiceDropped, 0},
		{"VIP shared by two services", func(w *waypointapi.Waypoint) {
			s := proto.Clone(svc0(w)).(*waypointapi.Service)
			s.Name, s.Hostname = "other", "other.ns.svc.cluster.local"
			s.Vips = [][]byte{{1, 2, 3, 4}, {10, 0, 0, 1}}
			w.Services = append(w.Services, s)
		}, "services[1].vips[1]", "also a VIP of service ns/echo", config.ServiceDropped, 0},
		{"port 0", func(w *waypointapi.Waypoint) { svc0(w).Ports[0].Port = 0 }, "services[0].ports[0].port", "invalid port 0", config.ServiceDropped, 0},
		{"port above 65535", func(w *waypointapi.Waypoint) { svc0(w).Ports[1].Port = 65536 }, "services[0].ports[1].port", "invalid port 65536", config.ServiceDropped, 0},
		{"target port above 65535", func(w *waypointapi.Waypoint) { svc0(w).Ports[0].TargetPort = 1 << 20 }, "services[0].ports[0].target_port", "invalid port", config.ServiceDropped, 0},
		{"duplicate port", func(w *waypointapi.Waypoint) { svc0(w).Ports[1].Port = 80 }, "services[0].ports[1].port", "duplicate port 80", config.ServiceDropped, 0},
		{"route port above 65535", func(w *waypointapi.Waypoint) { svc0(w).HttpRoutes[0].Port = 70000 }, "services[0].http_routes[0].port", "invalid port", config.RouteFailsClosed, 0},
		{"route without name", func(w *waypointapi.Waypoint) { svc0(w).HttpRoutes[0].Name = "" }, "services[0].http_routes[0]", "without a name", config.RouteFailsClosed, 0},
		{"missing rule", func(w *waypointapi.Waypoint) { svc0(w).HttpRoutes[0].Rules[0] = nil }, r, "missing", config.RuleFailsClosed, 0},
		{"unknown path match type", func(w *waypointapi.Waypoint) { match0(w).Path.Type = 7 }, m + ".path", "unknown match type 7", config.RuleFailsClosed, 0},
		{"relative path", func(w *waypointapi.Waypoint) { match0(w).Path.Value = "foo" }, m + ".path", "does not start with /", config.RuleFailsClosed, 0},
		{"path with a space", func(w *waypointapi.Waypoint) { match0(w).Path.Value = "/a b" }, m + ".path", "not allowed", config.RuleFailsClosed, 0},
		{"path with a bad escape", func(w *waypointapi.Waypoint) { match0(w).Path.Value = "/a%zz" }, m + ".path", "malformed percent escape", config.RuleFailsClosed, 0},
		{"path too long", func(w *waypointapi.Waypoint) { match0(w).Path.Value = "/" + strings.Repeat("a", 1024) }, m + ".path", "longer than 1024", config.RuleFailsClosed, 0},
		{"invalid regular expression", func(w *waypointapi.Waypoint) {
			match0(w).Path = &waypointapi.PathMatch{Type: regex, Value: "/(a"}
		}, m + ".path", "invalid regular expression", config.RuleFailsClosed, 0},
		{"regular expression too long", func(w *waypointapi.Waypoint) {
			match0(w).Path = &waypointapi.PathMatch{Type: regex, Value: strings.Repeat("a", 1025)}
		}, m + ".path", "longer than 1024", config.RuleFailsClosed, 0},
		{"regular expression too complex", func(w *waypointapi.Waypoint) {
			match0(w).Path = &waypointapi.PathMatch{Type: regex, Value: "/[a-z]{600}[0-9]{600}"}
		}, m + ".path", "too complex", config.RuleFailsClosed, 0},
		{"header name not a token", func(w *waypointapi.Waypoint) { match0(w).Headers[0].Name = "x y" }, m + ".headers[0].name", "not a token", config.RuleFailsClosed, 0},
		{"header prefix match", func(w *waypointapi.Waypoint) { match0(w).Headers[0].Type = prefix }, m + ".headers[0].type", "unsupported match type PREFIX", config.RuleFailsClosed, 0},
		{"unknown header match type", func(w *waypointapi.Waypoint) { match0(w).Headers[0].Type = 9 }, m + ".headers[0].type", "unsupported match type 9", config.RuleFailsClosed, 0},
		{"empty header value", func(w *waypointapi.Waypoint) { match0(w).Headers[0].Value = "" }, m + ".headers[0].value", "empty value", config.RuleFailsClosed, 0},
		{"header value with CR LF", func(w *waypointapi.Waypoint) { match0(w).Headers[0].Value = "a\r\nb" }, m + ".headers[0].value", "control character", config.RuleFailsClosed, 0},
		{"header regular expression", func(w *waypointapi.Waypoint) {
			match0(w).Headers[0] = &waypointapi.HeaderMatch{Type: regex, Name: "v", Value: "*"}
		}, m + ".headers[0].value", "invalid regular expression", config.RuleFailsClosed, 0},
		{"empty query name", func(w *waypointapi.Waypoint) { match0(w).QueryParams[0].Name = "" }, m + ".query_params[0].name", "empty", config.RuleFailsClosed, 0},
		{"query value too long", func(w *waypointapi.Waypoint) { match0(w).QueryParams[0].Value = strings.Repeat("v", 1025) }, m + ".query_params[0].value", "longer than 1024", config.RuleFailsClosed, 0},
		{"query regular expression", func(w *waypointapi.Waypoint) {
			match0(w).QueryParams[0] = &waypointapi.HeaderMatch{Type: regex, Name: "q", Value: "a++"}
		}, m + ".query_params[0].value", "invalid regular expression", config.RuleFailsClosed, 0},
		{"method not a token", func(w *waypointapi.Waypoint) { match0(w).Method = "GE T" }, m + ".method", "not a token", config.RuleFailsClosed, 0},
		{"empty filter", func(w *waypointapi.Waypoint) { setFilters(w, &waypointapi.HTTPFilter{}) }, r + ".filters[0]", "empty or unknown filter", config.RuleFailsClosed, 1},
		{"modifier header name not a token", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Set: headers("x:y", "1")}))
		}, r + ".filters[0].request_header_modifier.set[0].name", "not a token", config.RuleFailsClosed, 1},
		{"modifier value with CR LF", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Set: headers("x-a", "1\r\nInjected: yes")}))
		}, r + ".filters[0].request_header_modifier.set[0].value", "control character", config.RuleFailsClosed, 1},
		{"modifier value with NUL", func(w *waypointapi.Waypoint) {
			setFilters(w, responseHeaders(&waypointapi.HeaderModifier{Add: headers("x-a", "1\x00")}))
		}, r + ".filters[0].response_header_modifier.add[0].value", "control character", config.RuleFailsClosed, 1},
		{"two actions on one header", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Set: headers("X-A", "1"), Remove: []string{"x-a"}}))
		}, r + ".filters[0].request_header_modifier.remove[0]", "X-A already has an action (set)", config.RuleFailsClosed, 1},
		{"remove not a token", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Remove: []string{""}}))
		}, r + ".filters[0].request_header_modifier.remove[0]", "not a token", config.RuleFailsClosed, 1},
		{"framing header", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Set: headers("content-length", "0")}))
		}, r + ".filters[0].request_header_modifier.set[0].name", "Content-Length may not be modified", config.RuleFailsClosed, 1},
		{"hop-by-hop header", func(w *waypointapi.Waypoint) {
			setFilters(w, responseHeaders(&waypointapi.HeaderModifier{Remove: []string{"Connection"}}))
		}, r + ".filters[0].response_header_modifier.remove[0]", "Connection may not be modified", config.RuleFailsClosed, 1},
		{"request Host", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{Set: headers("host", "a.example")}))
		}, r + ".filters[0].request_header_modifier.set[0].name", "use a URLRewrite hostname", config.RuleFailsClosed, 1},
		{"repeated request header modifier", func(w *waypointapi.Waypoint) {
			setFilters(w, requestHeaders(&waypointapi.HeaderModifier{}), requestHeaders(&waypointapi.HeaderModifier{}))
		}, r + ".filters[1].request_header_modifier", "repeated", config.RuleFailsClosed, 1},
		{"missing header modifier", func(w *waypointapi.Waypoint) { setFilters(w, requestHeaders(nil)) }, r + ".filters[0].request_header_modifier", "missing", config.RuleFailsClosed, 1},
		{"redirect status 304", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{StatusCode: 304}))
		}, r + ".filters[0].request_redirect.status_code", "unsupported redirect status 304", config.RuleFailsClosed, 1},
		{"redirect scheme ftp", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{Scheme: "ftp"}))
		}, r + ".filters[0].request_redirect.scheme", "unsupported scheme", config.RuleFailsClosed, 1},
		{"redirect hostname in upper case", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{Hostname: "Example.com"}))
		}, r + ".filters[0].request_redirect.hostname", "invalid hostname", config.RuleFailsClosed, 1},
		{"redirect hostname with a port", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{Hostname: "example.com:80"}))
		}, r + ".filters[0].request_redirect.hostname", "invalid hostname", config.RuleFailsClosed, 1},
		{"redirect port above 65535", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{Port: 65536}))
		}, r + ".filters[0].request_redirect.port", "invalid port", config.RuleFailsClosed, 1},
		{"redirect with backends", func(w *waypointapi.Waypoint) {
			setFilters(w, redirect(&waypointapi.Redirect{}))
		}, r + ".backends", "may not have backends", config.RuleFailsClosed, 1},
		{"redirect and rewrite", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{}), rewrite(&waypointapi.Rewrite{Hostname: "a.example"}))
		}, r + ".filters[1].url_rewrite", "may not be combined", config.RuleFailsClosed, 1},
		{"repeated rewrite", func(w *waypointapi.Waypoint) {
			setFilters(w, rewrite(&waypointapi.Rewrite{}), rewrite(&waypointapi.Rewrite{}))
		}, r + ".filters[1].url_rewrite", "repeated", config.RuleFailsClosed, 1},
		{"prefix modifier on an exact match", func(w *waypointapi.Waypoint) {
			match0(w).Path = &waypointapi.PathMatch{Type: exact, Value: "/a"}
			setFilters(w, rewrite(&waypointapi.Rewrite{HasPath: true, PathType: prefix, Path: "/b"}))
		}, m + ".path", "needs PathPrefix matches only", config.RuleFailsClosed, 1},
		{"prefix modifier on a second, regex match", func(w *waypointapi.Waypoint) {
			rule0(w).Matches = append(rule0(w).Matches, &waypointapi.HTTPRouteMatch{Path: &waypointapi.PathMatch{Type: regex, Value: "/a.*"}})
			setFilters(w, rewrite(&waypointapi.Rewrite{HasPath: true, PathType: prefix, Path: "/b"}))
		}, r + ".matches[1].path", "needs PathPrefix matches only", config.RuleFailsClosed, 2},
		{"regex path modifier", func(w *waypointapi.Waypoint) {
			rule0(w).Backends = nil
			setFilters(w, redirect(&waypointapi.Redirect{HasPath: true, PathType: regex, Path: "/b"}))
		}, r + ".filters[0].request_redirect.path_type", "unsupported path modifier type REGULAR_EXPRESSION", config.RuleFailsClosed, 1},
		{"full path without a slash", func(w *waypointapi.Waypoint) {
			setFilters(w, rewrite(&waypointapi.Rewrite{HasPath: true, PathType: exact, Path: "b"}))
		}, r + ".filters[0].url_rewrite.path", "does not start with /", config.RuleFailsClosed, 1},
		{"prefix replacement with a query", func(w *waypointapi.Waypoint) {
			setFilters(w, rewrite(&waypointapi.Rewrite{HasPath: true, PathType: prefix, Path: "/b?x=1"}))
		}, r + ".filters[0].url_rewrite.path", "not allowed", config.RuleFailsClosed, 1},
		{"rewrite hostname", func(w *waypointapi.Waypoint) {
			setFilters(w, rewrite(&waypointapi.Rewrite{Hostname: "a_b.example"}))
		}, r + ".filters[0].url_rewrite.hostname", "invalid hostname", config.RuleFailsClosed, 1},
		{"mirror without a backend", func(w *waypointapi.Waypoint) {
			setFilters(w, mirror(&waypointapi.Mirror{}))
		}, r + ".filters[0].request_mirror.backend", "missing", config.RuleFailsClosed, 1},
		{"mirror backend with filters", func(w *waypointapi.Waypoint) {
			b := backendRef("shadow")
			b.Filters = []*waypointapi.HTTPFilter{requestHeaders(&waypointapi.HeaderModifier{})}
			setFilters(w, mirror(&waypointapi.Mirror{Backend: b}))
		}, r + ".filters[0].request_mirror.backend.filters", "may not have filters", config.RuleFailsClosed, 1},
		{"weight too large", func(w *waypointapi.Waypoint) { rule0(w).Backends[0].Weight = 1_000_001 }, r + ".backends[0].weight", "larger than 1000000", config.RuleFailsClosed, 1},
		{"backend port above 65535", func(w *waypointapi.Waypoint) { rule0(w).Backends[0].Port = 1 << 16 }, r + ".backends[0].port", "invalid port", config.RuleFailsClosed, 1},
		{"backend without hostname", func(w *waypointapi.Waypoint) { rule0(w).Backends[0].Hostname = "" }, r + ".backends[0].hostname", "empty hostname", config.RuleFailsClosed, 1},
		{"missing backend", func(w *waypointapi.Waypoint) { rule0(w).Backends = append(rule0(w).Backends, nil) }, r + ".backends[1]", "missing", config.RuleFailsClosed, 1},
		{"backend redirect", func(w *waypointapi.Waypoint) {
			rule0(w).Backends[0].Filters = []*waypointapi.HTTPFilter{redirect(&waypointapi.Redirect{})}
		}, r + ".backends[0].filters[0].request_redirect", "only supported on HTTPRoute rules", config.RuleFailsClosed, 1},
		{"backend mirror", func(w *waypointapi.Waypoint) {
			rule0(w).Backends[0].Filters = []*waypointapi.HTTPFilter{mirror(&waypointapi.Mirror{Backend: backendRef("shadow")})}
		}, r + ".backends[0].filters[0].request_mirror", "not supported on a backend", config.RuleFailsClosed, 1},
		{"backend timeout above request timeout", func(w *waypointapi.Waypoint) {
			rule0(w).RequestTimeoutMs, rule0(w).BackendTimeoutMs = 1000, 2000
		}, r + ".backend_timeout_ms", "longer than the request timeout", config.RuleFailsClosed, 1},
		{"retry attempts", func(w *waypointapi.Waypoint) { rule0(w).Retry.Attempts = 1000 }, r + ".retry.attempts", "at most 100", config.RuleFailsClosed, 1},
		{"retry code 200", func(w *waypointapi.Waypoint) { rule0(w).Retry.Codes = []uint32{503, 200} }, r + ".retry.codes[1]", "not retryable", config.RuleFailsClosed, 1},
		{"gRPC prefix match", func(w *waypointapi.Waypoint) { grpcMatch0(w).Type = prefix }, g + ".matches[0].type", "unsupported match type PREFIX", config.RuleFailsClosed, 0},
		{"gRPC service with a slash", func(w *waypointapi.Waypoint) { grpcMatch0(w).Service = "a/b" }, g + ".matches[0].service", "contains /", config.RuleFailsClosed, 0},
		{"gRPC method with a slash", func(w *waypointapi.Waypoint) { grpcMatch0(w).Method = "a/b" }, g + ".matches[0].method", "contains /", config.RuleFailsClosed, 0},
		{"gRPC method regular expression", func(w *waypointapi.Waypoint) {
			m := grpcMatch0(w)
			m.Type, m.Method = regex, "Get("
		}, g + ".matches[0].method", "invalid regular expression", config.RuleFailsClosed, 0},
		{"gRPC header name", func(w *waypointapi.Waypoint) { grpcMatch0(w).Headers[0].Name = "a b" }, g + ".matches[0].headers[0].name", "not a token", config.RuleFailsClosed, 0},
		{"gRPC redirect", func(w *waypointapi.Waypoint) {
			w.Services[0].GrpcRoutes[0].Rules[0].Filters = []*waypointapi.HTTPFilter{redirect(&waypointapi.Redirect{})}
		}, g + ".filters[0].request_redirect", "only supported on HTTPRoute rules", config.RuleFailsClosed, 1},
		{"gRPC route port", func(w *waypointapi.Waypoint) { svc0(w).GrpcRoutes[0].Port = 1 << 17 }, "services[0].grpc_routes[0].port", "invalid port", config.RouteFailsClosed, 0},
		{"missing policy", func(w *waypointapi.Waypoint) { w.Policies = []*waypointapi.L7Authorization{nil} }, "policies[0]", "missing", config.PolicyDeniesAll, 0},
		{"policy authz rejects", func(w *waypointapi.Waypoint) {
			w.Policies = []*waypointapi.L7Authorization{{Name: "p", Namespace: "ns", Action: 7}}
		}, "policies[0]", "unknown action", config.PolicyDeniesAll, 0},
		{"service policy authz rejects", func(w *waypointapi.Waypoint) {
			svc0(w).Policies = []*waypointapi.L7Authorization{{Name: "ok", Namespace: "ns"}, {Name: "p", Namespace: "ns", Action: 7}}
		}, "services[0].policies[1]", "unknown action", config.PolicyDeniesAll, 0},
		{"missing service policy", func(w *waypointapi.Waypoint) {
			svc0(w).Policies = []*waypointapi.L7Authorization{nil}
		}, "services[0].policies[0]", "missing", config.PolicyDeniesAll, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := valid()
			tt.mutate(w)
			w.Services = append(w.Services, bystander())
			c, err := config.Compile(w)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			ws := c.Warnings()
			if len(ws) != 1 {
				t.Fatalf("warnings %v, want one on %s", ws, tt.field)
			}
			warn := ws[0]
			if warn.Field != tt.field || warn.Effect != tt.effect || !strings.Contains(warn.Err.Error(), tt.msg) {
				t.Errorf("warning %q: field %q, effect %v; want %q, %v and %q", warn, warn.Field, warn.Effect, tt.field, tt.effect, tt.msg)
			}
			if !strings.HasPrefix(warn.Error(), tt.field+": ") || !strings.HasSuffix(warn.Error(), "("+tt.effect.String()+")") {
				t.Errorf("warning %q does not start with the field path and end with the effect", warn)
			}
			checkBystander(t, c)
			switch tt.effect {
			case config.ServiceDropped:
				if len(c.Services) != len(w.Services)-1 {
					t.Errorf("%d services compiled of %d, want one dropped", len(c.Services), len(w.Services))
				}
			case config.RuleFailsClosed, config.RouteFailsClosed:
				echo := c.Service(echoKey)
				if echo == nil {
					t.Fatal("service echo dropped")
				}
				table, other := echo.HTTP, echo.GRPC
				if strings.Contains(tt.field, "grpc_routes") {
					table, other = other, table
				}
				checkFailedRoute(t, table, tt.effect, tt.kept)
				if other == nil || len(other.Entries) != 1 || len(other.Entries[0].Rule.Backends) != 1 {
					t.Errorf("the other route kind's table %+v was touched", other)
				}
			case config.PolicyDeniesAll:
				policies := c.Policies
				if strings.HasPrefix(tt.field, "services[0].") {
					policies = c.Service(echoKey).Policies
				}
				i := strings.LastIndex(tt.field, "[")
				n, _ := strconv.Atoi(strings.TrimSuffix(tt.field[i+1:], "]"))
				if len(policies) <= n {
					t.Fatalf("policies %v: #%d dropped", policies, n)
				}
				p := policies[n]
				d := authz.Decide(p2s(p), nil, policy.Conn{Request: &policy.Request{Method: "GET", Path: "/"}})
				if p.Action != policy.Deny || d.Allowed || d.Policy != p.Key() {
					t.Errorf("policy %+v decides %+v, want a DENY of every request", p, d)
				}
			}
		})
	}
}

const echoKey = "ns/echo.ns.svc.cluster.local"

func p2s(p *policy.Policy) []*policy.Policy { return []*policy.Policy{p} }

// bystander is a service with one route, one rule and one policy, added
// beside the broken one: none of it may change.
func bystander() *waypointapi.Service {
	return &waypointapi.Service{
		Name: "bystander", Namespace: "other", Hostname: "bystander.other.svc.cluster.local",
		Vips:  [][]byte{{10, 0, 9, 9}},
		Ports: []*waypointapi.ServicePort{{Name: "http", Port: 80}},
		HttpRoutes: []*waypointapi.HTTPRoute{{Name: "bystander", Namespace: "other", Rules: []*waypointapi.HTTPRouteRule{{
			Matches:  []*waypointapi.HTTPRouteMatch{{Path: &waypointapi.PathMatch{Type: regex, Value: "/b.*"}}},
			Backends: []*waypointapi.BackendRef{backendRef("bystander")},
		}}}},
		Policies: []*waypointapi.L7Authorization{{Name: "allow", Namespace: "other", Groups: []*waypointapi.L7Group{{}}}},
	}
}

func checkBystander(t *testing.T, c *config.Waypoint) {
	t.Helper()
	b := c.ServiceByVIP(netip.MustParseAddr("10.0.9.9"))
	if b == nil || b.Key() != "other/bystander.other.svc.cluster.local" || b.HTTP == nil || len(b.HTTP.Entries) != 1 ||
		len(b.HTTP.Entries[0].Rule.Backends) != 1 || len(b.Policies) != 1 || b.Policies[0].Action != policy.Allow {
		t.Errorf("bystander service changed: %+v", b)
	}
}

// failedClosed reports whether r is a rule that answers 500: no filters,
// no backends, nothing else to apply.
func failedClosed(r *config.Rule) bool {
	return len(r.Backends) == 0 && reflect.DeepEqual(r.Filters, config.Filters{}) && r.Retry == nil &&
		r.RequestTimeout == 0 && r.BackendTimeout == 0
}

// checkFailedRoute checks the table of a service whose only route of the
// kind has one broken rule (or is broken itself): kept entries remain, all
// failing closed, or one catch-all ranked last stands for it.
func checkFailedRoute(t *testing.T, table *config.RouteTable, effect config.Effect, kept int) {
	t.Helper()
	if table == nil {
		t.Fatal("route table dropped")
	}
	want := max(kept, 1)
	if len(table.Entries) != want {
		t.Fatalf("%d entries, want %d: %+v", len(table.Entries), want, table.Entries)
	}
	for _, e := range table.Entries {
		if !failedClosed(e.Rule) {
			t.Errorf("entry %+v: rule %+v does not fail closed", e.Match, e.Rule)
		}
		if e.Rule.Route.Kind == "" {
			t.Errorf("rule %+v does not name its route kind", e.Rule)
		}
	}
	wantIndex := 0
	if effect == config.RouteFailsClosed {
		wantIndex = -1
	}
	if r := table.Entries[0].Rule; r.Index != wantIndex {
		t.Errorf("rule index %d, want %d", r.Index, wantIndex)
	}
	if kept == 0 {
		if m := table.Entries[0].Match; m.Method != "" || m.Headers != nil || m.Query != nil || m.GRPC != nil ||
			m.Path != nil && *m.Path != (config.PathMatch{Type: config.PathPrefix, Value: "/"}) {
			t.Errorf("stand-in match %+v does not match every request", m)
		}
	}
}

// Only a resource that does not say which waypoint it is for is rejected
// whole.
func TestCompileRejects(t *testing.T) {
	for _, tt := range []struct {
		name  string
		wp    *waypointapi.Waypoint
		field string
	}{
		{"nil", nil, ""},
		{"no name", &waypointapi.Waypoint{Namespace: "ns", Services: valid().Services}, "name"},
		{"no namespace", &waypointapi.Waypoint{Name: "waypoint"}, "namespace"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Compile(tt.wp)
			if err == nil {
				t.Fatalf("Compile succeeded: %+v", c)
			}
			var fe *config.FieldError
			if tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field) {
				t.Errorf("Compile error %q does not name %q", err, tt.field)
			}
		})
	}
}

func TestCompileServices(t *testing.T) {
	w := valid()
	s := svc0(w)
	s.Vips = append(s.Vips, netip.MustParseAddr("::ffff:10.0.0.2").AsSlice(), netip.MustParseAddr("fd00::1").AsSlice())
	s.Ports = append(s.Ports, &waypointapi.ServicePort{Name: "db", Port: 3306, TargetPort: 3306, AppProtocol: "mysql"})
	rl := &waypointapi.RateLimit{Policy: "ns/limit", Requests: 10, FillIntervalMs: 1000}
	s.RateLimits = []*waypointapi.RateLimit{rl}
	other := &waypointapi.Service{Name: "other", Namespace: "ns2", Hostname: "other.ns2.svc.cluster.local", Vips: [][]byte{{10, 0, 0, 9}}}
	w.Services = append(w.Services, other)

	c, err := config.Compile(w)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "waypoint" || c.Namespace != "ns" || c.TrustDomain != "cluster.local" {
		t.Errorf("waypoint = %s/%s in %s", c.Namespace, c.Name, c.TrustDomain)
	}
	echo := c.Service("ns/echo.ns.svc.cluster.local")
	if echo == nil || len(c.Services) != 2 || c.Services[0] != echo {
		t.Fatalf("Service(ns/echo...) = %v, Services = %v", echo, c.Services)
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "::ffff:10.0.0.1", "fd00::1"} {
		if got := c.ServiceByVIP(netip.MustParseAddr(ip)); got != echo {
			t.Errorf("ServiceByVIP(%s) = %v, want echo", ip, got)
		}
	}
	if got := c.ServiceByVIP(netip.MustParseAddr("10.0.0.9")); got == nil || got.Name != "other" {
		t.Errorf("ServiceByVIP(10.0.0.9) = %v, want other", got)
	}
	if got := c.ServiceByVIP(netip.MustParseAddr("10.0.0.3")); got != nil {
		t.Errorf("ServiceByVIP(10.0.0.3) = %v, want nil", got)
	}
	wantVIPs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::1")}
	if !slices.Equal(echo.VIPs, wantVIPs) {
		t.Errorf("VIPs = %v, want %v (IPv4-mapped addresses unmapped)", echo.VIPs, wantVIPs)
	}
	wantPorts := []config.Port{
		{Name: "http", Port: 80, TargetPort: 8080, Protocol: config.HTTP},
		{Name: "grpc", Port: 9090, Protocol: config.GRPC},
		{Name: "db", Port: 3306, TargetPort: 3306, AppProtocol: "mysql", Protocol: config.TCP},
	}
	if !slices.Equal(echo.Ports, wantPorts) {
		t.Errorf("Ports = %+v, want %+v", echo.Ports, wantPorts)
	}
	if p, ok := echo.Port(9090); !ok || p.Protocol != config.GRPC {
		t.Errorf("Port(9090) = %+v, %v", p, ok)
	}
	if len(echo.RateLimits) != 1 || echo.RateLimits[0] != rl {
		t.Errorf("RateLimits = %v, want the received one", echo.RateLimits)
	}
	if o := c.Services[1]; o.HTTP != nil || o.GRPC != nil || o.Ports != nil {
		t.Errorf("service without routes or ports: HTTP %v, GRPC %v, ports %v", o.HTTP, o.GRPC, o.Ports)
	}
}

func TestCompileRules(t *testing.T) {
	w := valid()
	s := svc0(w)
	shadow := backendRef("shadow")
	canary := backendRef("canary")
	canary.Weight, canary.Port = 0, 0
	canary.Filters = []*waypointapi.HTTPFilter{
		requestHeaders(&waypointapi.HeaderModifier{Add: headers("x-canary", "yes")}),
		responseHeaders(&waypointapi.HeaderModifier{Remove: []string{"server"}}),
	}
	s.HttpRoutes[0].Hostnames = []string{"ignored.example"}
	s.HttpRoutes[0].Rules = []*waypointapi.HTTPRouteRule{{
		Name: "main",
		Matches: []*waypointapi.HTTPRouteMatch{{
			Path:   &waypointapi.PathMatch{Type: prefix, Value: "/api/"},
			Method: "POST",
			Headers: []*waypointapi.HeaderMatch{
				{Name: "X-Version", Value: "v2"},
				{Name: "x-version", Value: "ignored: a repeated name only counts once"},
				{Type: regex, Name: "x-user", Value: "[a-z]+"},
			},
			QueryParams: []*waypointapi.HeaderMatch{{Name: "Q", Value: "1"}, {Name: "Q", Value: "2"}, {Name: "q", Value: "3"}},
		}},
		Filters: []*waypointapi.HTTPFilter{
			requestHeaders(&waypointapi.HeaderModifier{Set: headers("x-set", "1"), Add: headers("X-ADD", "2"), Remove: []string{"x-remove"}}),
			responseHeaders(&waypointapi.HeaderModifier{Set: headers("x-resp", "r")}),
			rewrite(&waypointapi.Rewrite{Hostname: "api.example", HasPath: true, PathType: prefix, Path: "/v2"}),
			mirror(&waypointapi.Mirror{Backend: shadow, Numerator: 5}),
			mirror(&waypointapi.Mirror{Backend: shadow, Numerator: 30, Denominator: 20}),
		},
		Backends:         []*waypointapi.BackendRef{backendRef("echo"), canary},
		RequestTimeoutMs: 3000, BackendTimeoutMs: 1000,
		Retry: &waypointapi.Retry{Attempts: 3, Codes: []uint32{503, 502, 503}, BackoffMs: 25},
	}, {
		Filters: []*waypointapi.HTTPFilter{redirect(&waypointapi.Redirect{Scheme: "https", HasPath: true, PathType: exact, Path: "/moved"})},
	}}

	c, err := config.Compile(w)
	if err != nil {
		t.Fatal(err)
	}
	table := c.Services[0].HTTP
	if table == nil || len(table.Entries) != 2 {
		t.Fatalf("HTTP table = %+v, want 2 entries", table)
	}
	e := table.Entries[0]
	if e.Rule.Name != "main" || e.Rule.Index != 0 || e.Rule.Route != (config.RouteRef{Kind: "HTTPRoute", Namespace: "ns", Name: "echo"}) {
		t.Errorf("first entry's rule = %q #%d of %+v", e.Rule.Name, e.Rule.Index, e.Rule.Route)
	}
	if e.Rule.Route.String() != "ns/echo" {
		t.Errorf("RouteRef.String() = %q", e.Rule.Route)
	}
	if p := e.Match.Path; p.Type != config.PathPrefix || p.Value != "/api/" {
		t.Errorf("path = %+v", p)
	}
	if e.Match.Method != "POST" {
		t.Errorf("method = %q", e.Match.Method)
	}
	hs := e.Match.Headers
	if len(hs) != 2 || hs[0].Name != "x-version" || hs[0].Key != "X-Version" || hs[0].Value != "v2" || hs[0].Regex != nil ||
		hs[1].Name != "x-user" || hs[1].Key != "X-User" || hs[1].Regex == nil || !hs[1].Regex.MatchString("abc") || hs[1].Regex.MatchString("abc1") {
		t.Errorf("headers = %+v, want x-version exact v2 and x-user matching whole values of [a-z]+", hs)
	}
	qs := e.Match.Query
	if len(qs) != 2 || qs[0] != (config.ValueMatch{Name: "Q", Value: "1"}) || qs[1] != (config.ValueMatch{Name: "q", Value: "3"}) {
		t.Errorf("query = %+v, want Q=1 and q=3 (names are case-sensitive; repeats ignored)", qs)
	}

	r := e.Rule
	f := r.Filters
	if rh := f.RequestHeaders; rh == nil ||
		!slices.Equal(rh.Set, []config.Header{{Name: "X-Set", Value: "1"}}) ||
		!slices.Equal(rh.Add, []config.Header{{Name: "X-Add", Value: "2"}}) ||
		!slices.Equal(rh.Remove, []string{"X-Remove"}) {
		t.Errorf("request headers = %+v, want canonical names", f.RequestHeaders)
	}
	if f.ResponseHeaders == nil || !slices.Equal(f.ResponseHeaders.Set, []config.Header{{Name: "X-Resp", Value: "r"}}) {
		t.Errorf("response headers = %+v", f.ResponseHeaders)
	}
	if f.Rewrite == nil || f.Rewrite.Hostname != "api.example" || *f.Rewrite.Path != (config.PathModifier{Prefix: true, Value: "/v2"}) {
		t.Errorf("rewrite = %+v", f.Rewrite)
	}
	if len(f.Mirrors) != 2 ||
		f.Mirrors[0].Backend.Key() != "ns/shadow.ns.svc.cluster.local" || f.Mirrors[0].Numerator != 5 || f.Mirrors[0].Denominator != 100 ||
		f.Mirrors[1].Numerator != 20 || f.Mirrors[1].Denominator != 20 {
		t.Errorf("mirrors = %+v, want 5/100 and 20/20", f.Mirrors)
	}
	if f.Redirect != nil {
		t.Errorf("redirect = %+v", f.Redirect)
	}
	if len(r.Backends) != 2 {
		t.Fatalf("backends = %+v", r.Backends)
	}
	if b := r.Backends[0]; b.Name != "echo" || b.Namespace != "ns" || b.Port != 80 || b.Weight != 1 || b.Filters.RequestHeaders != nil {
		t.Errorf("backend 0 = %+v", b)
	}
	if b := r.Backends[1]; b.Weight != 0 || b.Port != 0 || b.Filters.RequestHeaders == nil ||
		!slices.Equal(b.Filters.RequestHeaders.Add, []config.Header{{Name: "X-Canary", Value: "yes"}}) ||
		!slices.Equal(b.Filters.ResponseHeaders.Remove, []string{"Server"}) {
		t.Errorf("backend 1 = %+v, want weight 0 kept and its own filters", b)
	}
	if r.RequestTimeout != 3*time.Second || r.BackendTimeout != time.Second {
		t.Errorf("timeouts = %v, %v", r.RequestTimeout, r.BackendTimeout)
	}
	if r.Retry == nil || r.Retry.Attempts != 3 || !slices.Equal(r.Retry.Codes, []int{503, 502}) || r.Retry.Backoff != 25*time.Millisecond {
		t.Errorf("retry = %+v", r.Retry)
	}

	// The second rule has no matches: one entry, PathPrefix "/".
	e = table.Entries[1]
	if e.Rule.Index != 1 || *e.Match.Path != (config.PathMatch{Type: config.PathPrefix, Value: "/"}) {
		t.Errorf("second entry = %+v / %+v, want rule 1 on PathPrefix /", e.Rule, e.Match.Path)
	}
	if rd := e.Rule.Filters.Redirect; rd == nil || rd.Scheme != "https" || rd.StatusCode != 302 || *rd.Path != (config.PathModifier{Value: "/moved"}) {
		t.Errorf("redirect = %+v, want https, 302 by default, full path /moved", rd)
	}
	if len(e.Rule.Backends) != 0 || e.Rule.Retry != nil || e.Rule.RequestTimeout != 0 {
		t.Errorf("second rule = %+v", e.Rule)
	}

	g := c.Services[0].GRPC
	if g == nil || len(g.Entries) != 1 {
		t.Fatalf("GRPC table = %+v", g)
	}
	if ge := g.Entries[0]; ge.Rule.Route.Kind != "GRPCRoute" || ge.Match.Path != nil || ge.Match.GRPC == nil ||
		*ge.Match.GRPC != (config.GRPCMethodMatch{Service: "pkg.Echo"}) || len(ge.Match.Headers) != 1 {
		t.Errorf("gRPC entry = %+v", ge)
	}
}

func TestCompilePathValues(t *testing.T) {
	// Exact and PathPrefix values are normalized as request paths are; a
	// value that normalization rejects is rejected with its field.
	w := valid()
	match0(w).Path = &waypointapi.PathMatch{Type: exact, Value: "/a/b"}
	c, err := config.Compile(w)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Services[0].HTTP.Entries[0].Match.Path.Value; got != "/a/b" {
		t.Errorf("path = %q", got)
	}
	// A regular expression is kept as written and compiled anchored.
	match0(w).Path = &waypointapi.PathMatch{Type: regex, Value: "/a|/b"}
	if c, err = config.Compile(w); err != nil {
		t.Fatal(err)
	}
	p := c.Services[0].HTTP.Entries[0].Match.Path
	if p.Value != "/a|/b" || !p.Regex.MatchString("/b") || p.Regex.MatchString("/bc") || p.Regex.MatchString("x/a") {
		t.Errorf("regex path %+v does not match whole paths only", p)
	}
}

func TestCompilePolicies(t *testing.T) {
	allow := &waypointapi.L7Authorization{Name: "allow", Namespace: "ns", Groups: []*waypointapi.L7Group{{}}}
	w := valid()
	w.Policies = []*waypointapi.L7Authorization{allow}
	svc0(w).Policies = []*waypointapi.L7Authorization{allow, allow}
	c, err := config.Compile(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Policies) != 1 || len(c.Services[0].Policies) != 2 {
		t.Fatalf("policies: waypoint %d, service %d; want 1 and 2", len(c.Policies), len(c.Services[0].Policies))
	}
	want, err := authz.Compile(allow)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Policies[0]; got.Key() != want.Key() || got.Action != want.Action || len(got.Groups) != len(want.Groups) {
		t.Errorf("policy = %+v, want authz.Compile's %+v", got, want)
	}
}
