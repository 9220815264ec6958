package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/benchpeer"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// These tests run Envoy's rate-limit service for real: pkg/benchpeer
// starts github.com/envoyproxy/ratelimit from $SKIFF_RATELIMIT_BIN (make
// ratelimit-bin builds it) with a Debian redis-server of its own.

// envoyRateLimit is a running envoyproxy/ratelimit with its Redis.
type envoyRateLimit struct {
	addr string // gRPC
	p    *benchpeer.RateLimitProc
}

// startEnvoyRateLimit starts Redis and the rate-limit service on loopback,
// configured with domain "skiff" and nothing else, or skips the test when
// either program is missing.
func startEnvoyRateLimit(tb testing.TB) *envoyRateLimit {
	tb.Helper()
	if _, _, err := benchpeer.RateLimitTools(""); err != nil {
		tb.Skip(err)
	}
	p, err := benchpeer.StartRateLimitService(context.Background(), benchpeer.RateLimitService{
		Dir: tb.TempDir(), Configs: map[string]string{"config": "domain: skiff\n"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return &envoyRateLimit{addr: p.Addr, p: p}
}

// stop ends the service (Redis stays) and waits for it.
func (e *envoyRateLimit) stop() { e.p.Service.Close() }

// month is the fill interval of the service's MONTH unit. A window that
// long makes the counts of a test independent of when it runs: its
// fixed window turns over once in 30 days.
const month = 30 * 24 * 3600 * 1000

// uniquePolicy names a policy no earlier run has counted.
func uniquePolicy(tb testing.TB, name string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "ns/" + name + "-" + hex.EncodeToString(b)
}

// Two waypoint replicas share one GLOBAL limit: across both, exactly the
// limit is allowed; per-identity keys and overrides hold across them too;
// with the service stopped, each limit takes its failure mode.
func TestEnvoyRateLimitService(t *testing.T) {
	e := startEnvoyRateLimit(t)
	shared := global(uniquePolicy(t, "shared"), 10, month, waypointapi.RateLimitKey_GLOBAL)
	perClient := global(uniquePolicy(t, "per-client"), 2, month, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	perClient.Route = "ns/api"
	perClient.Overrides = []*waypointapi.RateLimitOverride{{Principals: []string{bob.String()}, Requests: 4, FillIntervalMs: month}}
	svc := service(shared, perClient)
	var replicas []*Limiter
	for range 2 {
		// A generous timeout: the test is about counting, and a slow call
		// would let a request through (failure mode ALLOW).
		replicas = append(replicas, newLimiter(t, nil, Options{ServiceAddress: e.addr, Timeout: 10 * time.Second}, waypoint(svc)))
	}

	allowed := 0
	for i := range 30 {
		v := replicas[i%2].Limit(context.Background(), call{peer: alice}.request(svc))
		if v.Allowed {
			allowed++
			continue
		}
		if v.Status != http.StatusTooManyRequests {
			t.Fatalf("request %d: %+v, want 429 or allowed", i, v)
		}
		if got, want := v.Header().Get(HeaderRateLimitPolicy), `"`+shared.Policy+`";q=10;w=2592000`; got != want {
			t.Errorf("RateLimit-Policy = %s, want %s", got, want)
		}
		if ra, err := strconv.Atoi(v.Header().Get(HeaderRetryAfter)); err != nil || ra < 1 || ra > 2592000 {
			t.Errorf("Retry-After = %q", v.Header().Get(HeaderRetryAfter))
		}
	}
	if allowed != 10 {
		t.Errorf("%d of 30 allowed across two replicas, want the limit of 10", allowed)
	}

	// Per client, on the route only (the shared limit is used up, so take
	// it away).
	svc = service(perClient)
	for _, l := range replicas {
		l.Update(waypoint(svc))
	}
	for _, tc := range []struct {
		c    call
		want int
	}{{call{peer: alice}, 2}, {call{peer: bob}, 4}, {call{peer: carol}, 2}} {
		tc.c.rule = rule("api", "")
		got := 0
		for i := range 10 {
			if replicas[i%2].Limit(context.Background(), tc.c.request(svc)).Allowed {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("%s: %d of 10 allowed, want %d", tc.c.peer, got, tc.want)
		}
	}

	// The service stopped: ALLOW lets requests through, DENY refuses.
	e.stop()
	for _, mode := range []waypointapi.RateLimit_FailureMode{waypointapi.RateLimit_ALLOW, waypointapi.RateLimit_DENY} {
		rl := global(uniquePolicy(t, "down"), 1, month, waypointapi.RateLimitKey_GLOBAL)
		rl.FailureMode = mode
		svc := service(rl)
		l := newLimiter(t, nil, Options{ServiceAddress: e.addr}, waypoint(svc))
		for i := range 3 {
			v := l.Limit(context.Background(), call{}.request(svc))
			if mode == waypointapi.RateLimit_ALLOW && !v.Allowed {
				t.Errorf("%v, request %d: %+v, want allowed", mode, i, v)
			}
			if mode == waypointapi.RateLimit_DENY && v.Status != http.StatusInternalServerError {
				t.Errorf("%v, request %d: %+v, want 500", mode, i, v)
			}
		}
	}
}

// BenchmarkGlobal is one request under one GLOBAL limit, through the real
// service and Redis on this machine: the latency a GLOBAL limit adds.
func BenchmarkGlobal(b *testing.B) {
	e := startEnvoyRateLimit(b)
	rl := global(uniquePolicy(b, "bench"), 1_000_000_000, 1000, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	svc := service(rl)
	l := newLimiter(b, nil, Options{ServiceAddress: e.addr, Timeout: 10 * time.Second}, waypoint(svc))
	req := call{peer: alice}.request(svc)
	b.ReportAllocs()
	for b.Loop() {
		if !l.Limit(context.Background(), req).Allowed {
			b.Fatal("refused")
		}
	}
}
