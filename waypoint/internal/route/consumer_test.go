package route_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
)

// consumer marks a route of the service's test namespace "ns" as a
// consumer route of namespace consumerNS.
func consumer[R interface {
	*waypointapi.HTTPRoute | *waypointapi.GRPCRoute
}](consumerNS string, r R) R {
	switch r := any(r).(type) {
	case *waypointapi.HTTPRoute:
		r.Namespace, r.ConsumerNamespace = consumerNS, consumerNS
	case *waypointapi.GRPCRoute:
		r.Namespace, r.ConsumerNamespace = consumerNS, consumerNS
	}
	return r
}

func client(t *testing.T, id string) spiffeid.ID {
	t.Helper()
	return spiffeid.RequireFromString(id)
}

// TestResolveConsumerRoutes checks whose routes a request is matched
// against: a client in a namespace with consumer routes attached to the
// port gets only those (GEP-1294: the groups are not merged), any other
// client the producer's.
func TestResolveConsumerRoutes(t *testing.T) {
	svc := service(t, []*waypointapi.HTTPRoute{
		httpRoute("producer", 0,
			rule("api", match("prefix:/api")),
			rule("all", match())),
		consumer("team-a", httpRoute("a-old", 80,
			rule("api-v2", match("prefix:/api/v2")))),
		consumer("team-a", httpRoute("a-new", 80,
			rule("api", match("prefix:/api")),
			rule("exact", match("exact:/api/v2/x")))),
		consumer("team-b", httpRoute("b", 8080,
			rule("all", match()))),
	}, []*waypointapi.GRPCRoute{
		consumer("team-c", &waypointapi.GRPCRoute{Name: "c-grpc", Port: 9090, Rules: []*waypointapi.GRPCRouteRule{{
			Name:     "get",
			Matches:  []*waypointapi.GRPCRouteMatch{{Type: exact, Service: "pkg.Echo", Method: "Get"}},
			Backends: []*waypointapi.BackendRef{{Name: "echo", Namespace: "ns", Hostname: "echo.ns.svc.cluster.local", Weight: 1}},
		}}}),
	})
	var (
		teamA    = client(t, "spiffe://cluster.local/ns/team-a/sa/default")
		teamB    = client(t, "spiffe://cluster.local/ns/team-b/sa/client")
		teamC    = client(t, "spiffe://cluster.local/ns/team-c/sa/default")
		producer = client(t, "spiffe://cluster.local/ns/ns/sa/default")
		other    = client(t, "spiffe://cluster.local/ns/other/sa/default")
		// A trust domain's own ID, or any path that is not
		// /ns/<ns>/sa/<sa>, names no namespace.
		noNS        = client(t, "spiffe://cluster.local/team-a")
		notWorkload = client(t, "spiffe://cluster.local/ns/team-a/sa/x/y")
	)
	tests := []struct {
		name   string
		client spiffeid.ID
		port   uint16
		req    string
		grpc   bool
		want   string
	}{
		// The consumer's routes, in Gateway API precedence among them.
		{"consumer: exact beats the older route's longer prefix", teamA, 80, "/api/v2/x", false, "a-new/exact"},
		{"consumer: longest prefix across its routes", teamA, 80, "/api/v2/y", false, "a-old/api-v2"},
		{"consumer: its shorter prefix", teamA, 80, "/api/v1", false, "a-new/api"},
		{"consumer: no consumer rule matches, not handed to the producer's", teamA, 80, "/web", false, "404"},
		{"consumer: a port its routes do not attach to gets the producer's", teamA, 8080, "/web", false, "producer/all"},
		{"other consumer on its own port", teamB, 8080, "/api", false, "b/all"},
		{"other consumer on a port it has no routes on", teamB, 80, "/api/v2/x", false, "producer/api"},
		// Everyone else: the producer's routes only.
		{"producer's namespace", producer, 80, "/api/v2/x", false, "producer/api"},
		{"unrelated namespace", other, 80, "/web", false, "producer/all"},
		{"no identity", nobody, 80, "/api/v2/x", false, "producer/api"},
		{"identity without a namespace", noNS, 80, "/api/v2/x", false, "producer/api"},
		{"identity not a workload ID", notWorkload, 80, "/api/v2/x", false, "producer/api"},
		// gRPC: a consumer's GRPCRoutes take its gRPC requests; its HTTP
		// requests on that port then have no route of its group.
		{"consumer gRPC route", teamC, 9090, "/pkg.Echo/Get", true, "c-grpc/get"},
		{"consumer gRPC route, other method", teamC, 9090, "/pkg.Echo/Put", true, "404"},
		{"consumer's plain HTTP on its gRPC port", teamC, 9090, "/api", false, "-"},
		{"gRPC of another namespace", other, 9090, "/pkg.Echo/Get", true, "producer/all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request("GET", tt.req)
			if tt.grpc {
				r = grpcRequest(tt.req)
			}
			if got := reached(route.Resolve(svc, tt.client, tt.port, r)); got != tt.want {
				t.Errorf("Resolve(%s, %d, %s) reached %s, want %s", tt.client, tt.port, tt.req, got, tt.want)
			}
		})
	}
}

// TestResolveProducerRoutesUnaffected checks that a consumer route
// changes nothing for other clients: every request of theirs resolves as
// it would with no consumer routes at all.
func TestResolveProducerRoutesUnaffected(t *testing.T) {
	producerRoutes := func() []*waypointapi.HTTPRoute {
		return []*waypointapi.HTTPRoute{httpRoute("producer", 80, rule("api", match("prefix:/api")), rule("get", match("method:GET", "exact:/x")))}
	}
	plain := service(t, producerRoutes(), nil)
	withConsumer := service(t, append(producerRoutes(), consumer("team-a", httpRoute("a", 0, rule("all", match())))), nil)
	clients := []spiffeid.ID{nobody, client(t, "spiffe://cluster.local/ns/ns/sa/default"), client(t, "spiffe://cluster.local/ns/team-b/sa/default")}
	for _, c := range clients {
		for _, port := range []uint16{80, 8080} {
			for _, path := range []string{"/", "/api", "/api/x", "/x", "/y"} {
				want := reached(route.Resolve(plain, c, port, request("GET", path)))
				if got := reached(route.Resolve(withConsumer, c, port, request("GET", path))); got != want {
					t.Errorf("client %s, port %d, %s: reached %s, want %s as without consumer routes", c, port, path, got, want)
				}
			}
		}
	}
	if got := reached(route.Resolve(withConsumer, client(t, "spiffe://cluster.local/ns/team-a/sa/default"), 80, request("GET", "/y"))); got != "a/all" {
		t.Errorf("the consumer reached %s, want a/all", got)
	}
}
