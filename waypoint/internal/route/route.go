// Package route decides, for one HTTP request to a service bound to the
// waypoint, which route rule applies. It is a pure function of the
// compiled configuration and the request: it opens nothing and changes
// nothing, so it is tested with tables.
//
// The service's route tables are already sorted by Gateway API precedence
// (package config), so the first entry that matches wins. What a request
// is matched on:
//
//   - the path: the escaped form of the normalized path
//     (r.URL.EscapedPath()), which is what the backend receives and how
//     Gateway API writes path values; Exact compares it whole, PathPrefix
//     by whole segments, RegularExpression must match all of it;
//   - the method, exactly;
//   - headers by case-insensitive name. A header sent several times is
//     matched on its values joined with ",", as RFC 9110 5.3 lets a
//     recipient combine them and as Envoy (hence Istio) matches; Cookie,
//     which HTTP/2 may split, is joined with "; " (RFC 9113 8.2.3).
//     Gateway API leaves repeated headers to the implementation;
//   - query parameters by exact name, on the first value, as Gateway API
//     recommends;
//   - for gRPC requests, the service and method of the path
//     "/<service>/<method>".
//
// # Whose routes
//
// A service has its producer's routes (in its own namespace), which apply
// to every client, and may have consumer routes: routes in another
// namespace whose parentRef names the service, which apply only to
// clients in that namespace (GEP-1294, "Namespace boundaries" and
// "Multiple routes for a Service"). A client in a namespace with consumer
// routes attached to the port it sent to is routed by those alone, in
// Gateway API precedence among them; everyone else, and that client on a
// port its namespace's routes do not attach to, by the producer's. The
// two groups are never merged, as GEP-1294 asks: a request the consumer
// routes do not match is NotFound, not handed to the producer's.
//
// The client's namespace is the one in its authenticated identity
// (spiffe://<trust domain>/ns/<ns>/sa/<sa>, which the HBONE handshake
// proved), never the namespace of the workload at its source address:
// that address is what the client's ztunnel says it is, while a consumer
// route is a namespace's own view of another's service and must not be
// applied to, or withheld from, a client on the strength of an unproven
// claim.
package route

import (
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Decision is what Resolve chose for one request.
type Decision struct {
	// Rule is the matching rule; nil when the service has no route for the
	// request's kind and port, and the request goes to the service itself.
	Rule *config.Rule
	// NotFound: the service has routes for this port but none matches.
	NotFound bool
	// Prefix is the path prefix a PathPrefix match matched, for prefix
	// rewrites and redirects; "" otherwise. It is the route's value as
	// written (after normalization), trailing slash included if it has
	// one: package filter ignores that slash, as Gateway API does.
	Prefix string
}

// Resolve finds the rule for r, sent to port of svc by client, the
// client's authenticated identity. r.URL.Path is the normalized path
// (matched in its escaped form, r.URL.EscapedPath()).
//
// The routes are the consumer routes of the client's namespace when some
// of them attach to port, and the producer's otherwise (see "Whose
// routes"). A client whose identity names no namespace (not a workload ID,
// or the zero ID) has no consumer routes. Among the chosen routes, gRPC
// requests (content-type application/grpc...) are matched against the
// GRPCRoutes when some attach to the port, otherwise against the
// HTTPRoutes.
//
// A request that no entry for its port matches is NotFound, which the
// proxy answers with 404. For Gateway-bound routes HTTPRouteRule.Matches
// says "When no rules matching a request have been successfully attached
// to the parent a request is coming from, a HTTP 404 status code MUST be
// returned"; for mesh routes GEP-1294 keeps that rule for a Service
// parent (its "pure routing construct" example "receive[s] a 4xx/5xx
// error response if no matching path ... was found"), and the mesh
// conformance suite checks it: MeshHTTPRouteQueryParamMatching
// (conformance/tests/mesh/httproute-query-param-matching.go) expects 404
// for requests to the Service that match none of its route's rules. Only
// a port no route attaches to (MeshPorts: "Explicit port, send to an
// excluded port") reaches the Service unrouted.
func Resolve(svc *config.Service, client spiffeid.ID, port uint16, r *http.Request) Decision {
	if svc == nil {
		return Decision{}
	}
	httpRoutes, grpcRoutes := svc.HTTP, svc.GRPC
	if len(svc.Consumers) > 0 {
		if c := svc.ConsumerRoutes(clientNamespace(client)); c.HasPort(port) {
			httpRoutes, grpcRoutes = c.HTTP, c.GRPC
		}
	}
	path := r.URL.EscapedPath()
	if isGRPC(r) && grpcRoutes.HasPort(port) {
		service, method, ok := grpcMethod(path)
		return resolve(grpcRoutes, port, r, path, grpcCall{service, method, ok})
	}
	return resolve(httpRoutes, port, r, path, grpcCall{})
}

// clientNamespace is the namespace of a workload identity, "" when id is
// not one. The trust domain is not compared: the waypoint's HBONE server
// admits clients of its own trust domain only.
func clientNamespace(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	ns, _, err := identity.ParseWorkloadID(id)
	if err != nil {
		return ""
	}
	return ns
}

// grpcCall is the service and method a gRPC request calls; ok is false
// when its path is not "/<service>/<method>".
type grpcCall struct {
	service, method string
	ok              bool
}

func resolve(t *config.RouteTable, port uint16, r *http.Request, path string, call grpcCall) Decision {
	if t == nil {
		return Decision{}
	}
	attached := false
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Port != 0 && e.Port != port {
			continue
		}
		attached = true
		if prefix, ok := matches(&e.Match, r, path, call); ok {
			return Decision{Rule: e.Rule, Prefix: prefix}
		}
	}
	return Decision{NotFound: attached}
}

// isGRPC reports whether r is a gRPC request: its content type is
// application/grpc, or application/grpc+<codec>, application/grpc-web...
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	const prefix = "application/grpc"
	v := ct[0]
	return len(v) >= len(prefix) && strings.EqualFold(v[:len(prefix)], prefix)
}

// grpcMethod splits a gRPC path "/<service>/<method>"; both parts are
// non-empty and free of "/".
func grpcMethod(path string) (service, method string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/")
	if !ok {
		return "", "", false
	}
	service, method, ok = strings.Cut(rest, "/")
	if !ok || service == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return "", "", false
	}
	return service, method, true
}
