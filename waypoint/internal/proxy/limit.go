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

// LimitVerdict says whether a request may go on; if not, Status makes the
// answer: 429 over a limit, 500 when the rate-limit service failed and the
// limit fails closed.
type LimitVerdict struct {
	Allowed bool
	Status  int
	// RateLimit, RateLimitPolicy and RetryAfter are the values of the
	// answer's header fields of those names (the IETF draft's RateLimit
	// fields), allowed or not; "" leaves a field out. Strings rather than
	// an http.Header, which would cost a map per request.
	RateLimit, RateLimitPolicy, RetryAfter string
}

// Header returns the verdict's fields as a header; nil when it has none.
func (v LimitVerdict) Header() http.Header {
	if v.RateLimit == "" && v.RateLimitPolicy == "" && v.RetryAfter == "" {
		return nil
	}
	h := http.Header{}
	v.addTo(h)
	return h
}

// addTo sets the verdict's fields in h.
func (v LimitVerdict) addTo(h http.Header) {
	for _, f := range [...]struct{ name, value string }{
		{"Ratelimit", v.RateLimit}, {"Ratelimit-Policy", v.RateLimitPolicy}, {"Retry-After", v.RetryAfter},
	} {
		if f.value != "" {
			h[f.name] = []string{f.value}
		}
	}
}

// flagRateLimitServiceError marks a request refused because the
// rate-limit service failed (Envoy's RLSE).
const flagRateLimitServiceError = "RLSE"
