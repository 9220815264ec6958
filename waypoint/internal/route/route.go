// Package route decides, for one HTTP request to a service bound to the
// waypoint, which route rule applies. It is a pure function of the
// compiled configuration and the request: it opens nothing and changes
// nothing, so it is tested with tables.
package route

import (
	"net/http"

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
	// rewrites and redirects; "" otherwise.
	Prefix string
}

// Resolve finds the rule for r, sent to port of svc. r.URL.Path is the
// normalized path. gRPC requests (content-type application/grpc...) are
// matched against the service's GRPCRoutes when it has some for the port,
// otherwise against its HTTPRoutes.
func Resolve(svc *config.Service, port uint16, r *http.Request) Decision {
	return Decision{}
}
