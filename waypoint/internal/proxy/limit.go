package proxy

import (
	"context"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Limiter applies rate limits to requests that were authorized and
// routed (so that a limit may name one rule of a route).
type Limiter interface {
	Limit(ctx context.Context, r LimitRequest) LimitVerdict
}

// LimitRequest is what a limit may key on.
type LimitRequest struct {
	// Service is the destination service (nil for a workload).
	Service *config.Service
	// Rule is the matched rule; nil when no route applies.
	Rule    *config.Rule
	Peer    spiffeid.ID
	Source  netip.Addr
	Request *http.Request
}

// LimitVerdict says whether a request may go on; if not, Status (429) and
// Header (Retry-After, RateLimit fields) make the answer.
type LimitVerdict struct {
	Allowed bool
	Status  int
	Header  http.Header
}
