package ratelimit

import (
	"context"
	"net/http"
	"testing"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// neverExceeded is a LOCAL limit no benchmark reaches.
func neverExceeded(k waypointapi.RateLimitKey_Type) *waypointapi.RateLimit {
	return &waypointapi.RateLimit{Policy: "ns/never-exceeded", Requests: 1_000_000_000, FillIntervalMs: 1,
		Burst: 1_000_000_000, Key: &waypointapi.RateLimitKey{Type: k, Header: "x-tenant"}}
}

// BenchmarkNoLimits is the cost for a service without limits.
func BenchmarkNoLimits(b *testing.B) {
	svc := service()
	l := newLimiter(b, nil, Options{}, waypoint(svc))
	req := call{peer: alice}.request(svc)
	b.ReportAllocs()
	for b.Loop() {
		l.Limit(context.Background(), req)
	}
}

// BenchmarkLocal is one LOCAL limit that every request stays under, with
// the real clock and the response fields made, by key.
func BenchmarkLocal(b *testing.B) {
	for _, k := range []waypointapi.RateLimitKey_Type{
		waypointapi.RateLimitKey_GLOBAL,
		waypointapi.RateLimitKey_SOURCE_IDENTITY,
		waypointapi.RateLimitKey_SOURCE_IP,
		waypointapi.RateLimitKey_HEADER,
	} {
		b.Run(k.String(), func(b *testing.B) {
			svc := service(neverExceeded(k))
			l := newLimiter(b, nil, Options{}, waypoint(svc))
			req := call{peer: alice, header: http.Header{"X-Tenant": {"tenant-a"}}}.request(svc)
			b.ReportAllocs()
			for b.Loop() {
				if !l.Limit(context.Background(), req).Allowed {
					b.Fatal("refused")
				}
			}
		})
	}
}

// BenchmarkLocalParallel is BenchmarkLocal's SOURCE_IDENTITY case from
// every core at once, clients spread over four identities.
func BenchmarkLocalParallel(b *testing.B) {
	svc := service(neverExceeded(waypointapi.RateLimitKey_SOURCE_IDENTITY))
	l := newLimiter(b, nil, Options{}, waypoint(svc))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := call{peer: alice}.request(svc)
		for pb.Next() {
			l.Limit(context.Background(), req)
		}
	})
}
