package config_test

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// nobody is a client without a workload identity: no consumer routes
// apply to it.
var nobody spiffeid.ID

// TestConsumerRouteGroups checks where Compile puts each route of a
// service in namespace "prod": producer routes in HTTP/GRPC, consumer
// routes under their namespace, and routes that do not say reliably whose
// they are failing closed in the group that keeps them from other
// clients.
func TestConsumerRouteGroups(t *testing.T) {
	route := func(name, ns, consumer string) *waypointapi.HTTPRoute {
		return &waypointapi.HTTPRoute{Name: name, Namespace: ns, ConsumerNamespace: consumer, Rules: []*waypointapi.HTTPRouteRule{{
			Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: "prod", Hostname: "echo.prod.svc.cluster.local", Weight: 1}},
		}}}
	}
	grpcRoute := func(name, ns, consumer string) *waypointapi.GRPCRoute {
		return &waypointapi.GRPCRoute{Name: name, Namespace: ns, ConsumerNamespace: consumer, Rules: []*waypointapi.GRPCRouteRule{{
			Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: "prod", Hostname: "echo.prod.svc.cluster.local", Weight: 1}},
		}}}
	}
	tests := []struct {
		name string
		http []*waypointapi.HTTPRoute
		grpc []*waypointapi.GRPCRoute
		// want maps a group ("" for the producer's) to the routes of its
		// HTTP table, "!" marking one that fails closed.
		want     map[string][]string
		wantGRPC map[string][]string
		warnings []string
	}{{
		name: "producer only",
		http: []*waypointapi.HTTPRoute{route("p", "prod", "")},
		want: map[string][]string{"": {"prod/p"}},
	}, {
		name: "consumer routes by namespace",
		http: []*waypointapi.HTTPRoute{route("p", "prod", ""), route("c1", "team-a", "team-a"), route("c2", "team-b", "team-b"), route("c3", "team-a", "team-a")},
		want: map[string][]string{"": {"prod/p"}, "team-a": {"team-a/c1", "team-a/c3"}, "team-b": {"team-b/c2"}},
	}, {
		name:     "a consumer's GRPCRoute alone",
		grpc:     []*waypointapi.GRPCRoute{grpcRoute("g", "team-a", "team-a")},
		want:     map[string][]string{},
		wantGRPC: map[string][]string{"team-a": {"team-a/g"}},
	}, {
		name:     "consumer namespace not the route's: fails closed among that namespace's routes",
		http:     []*waypointapi.HTTPRoute{route("c", "team-b", "team-a")},
		want:     map[string][]string{"team-a": {"!team-b/c"}},
		warnings: []string{"services[0].http_routes[0].consumer_namespace"},
	}, {
		name:     "consumer namespace is the service's: fails closed among the producer's",
		http:     []*waypointapi.HTTPRoute{route("c", "prod", "prod")},
		want:     map[string][]string{"": {"!prod/c"}},
		warnings: []string{"services[0].http_routes[0].consumer_namespace"},
	}, {
		name:     "another namespace's route without consumer namespace: fails closed among the producer's",
		http:     []*waypointapi.HTTPRoute{route("p", "prod", ""), route("x", "team-a", "")},
		want:     map[string][]string{"": {"prod/p", "!team-a/x"}},
		warnings: []string{"services[0].http_routes[1].namespace"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Compile(&waypointapi.Waypoint{Name: "waypoint", Namespace: "prod", Services: []*waypointapi.Service{{
				Name: "echo", Namespace: "prod", Hostname: "echo.prod.svc.cluster.local",
				Vips: [][]byte{{10, 0, 0, 1}}, Ports: []*waypointapi.ServicePort{{Name: "http", Port: 80}},
				HttpRoutes: tt.http, GrpcRoutes: tt.grpc,
			}}})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			svc := c.Services[0]
			check := func(kind string, want map[string][]string, table func(*config.ConsumerRoutes) *config.RouteTable) {
				t.Helper()
				got := map[string][]string{}
				if r := routesOf(table(&config.ConsumerRoutes{HTTP: svc.HTTP, GRPC: svc.GRPC})); r != nil {
					got[""] = r
				}
				for ns, cr := range svc.Consumers {
					if r := routesOf(table(cr)); r != nil {
						got[ns] = r
					}
					if svc.ConsumerRoutes(ns) != cr {
						t.Errorf("ConsumerRoutes(%q) is not Consumers[%q]", ns, ns)
					}
				}
				if want == nil {
					want = map[string][]string{}
				}
				if !mapsEqual(got, want) {
					t.Errorf("%s tables = %v, want %v", kind, got, want)
				}
			}
			check("HTTP", tt.want, func(c *config.ConsumerRoutes) *config.RouteTable { return c.HTTP })
			check("GRPC", tt.wantGRPC, func(c *config.ConsumerRoutes) *config.RouteTable { return c.GRPC })
			if _, ok := svc.Consumers["prod"]; ok {
				t.Error("the service's own namespace has consumer routes")
			}
			if svc.ConsumerRoutes("") != nil {
				t.Error(`ConsumerRoutes("") is not nil`)
			}
			var fields []string
			for _, w := range c.Warnings() {
				if w.Effect != config.RouteFailsClosed {
					t.Errorf("warning %v: effect %v, want RouteFailsClosed", w, w.Effect)
				}
				fields = append(fields, w.Field)
			}
			if !slices.Equal(fields, tt.warnings) {
				t.Errorf("warnings on %q, want %q", fields, tt.warnings)
			}
		})
	}
}

// routesOf lists a table's routes in entry order, once each; "!" marks a
// rule that fails closed (no backends).
func routesOf(t *config.RouteTable) []string {
	if t == nil {
		return nil
	}
	var out []string
	for _, e := range t.Entries {
		s := e.Rule.Route.String()
		if len(e.Rule.Backends) == 0 {
			s = "!" + s
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}
