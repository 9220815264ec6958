package ratelimit

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	testNS   = "ns"
	testHost = "echo.ns.svc.cluster.local"
)

var (
	alice = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/alice")
	bob   = spiffeid.RequireFromString("spiffe://cluster.local/ns/b/sa/bob")
	carol = spiffeid.RequireFromString("spiffe://cluster.local/ns/c/sa/carol")
)

// service is the test service with limits.
func service(limits ...*waypointapi.RateLimit) *config.Service {
	return &config.Service{Name: "echo", Namespace: testNS, Hostname: testHost, RateLimits: limits}
}

func waypoint(svcs ...*config.Service) *config.Waypoint {
	return &config.Waypoint{Name: "waypoint", Namespace: testNS, Services: svcs}
}

// perSecond is a LOCAL limit of n per second with burst b, keyed by k.
func perSecond(policy string, n, b uint32, k waypointapi.RateLimitKey_Type) *waypointapi.RateLimit {
	return &waypointapi.RateLimit{Policy: policy, Requests: n, FillIntervalMs: 1000, Burst: b,
		Key: &waypointapi.RateLimitKey{Type: k}}
}

func rule(route, name string) *config.Rule {
	return &config.Rule{Route: config.RouteRef{Kind: "HTTPRoute", Namespace: testNS, Name: route}, Name: name}
}

// newLimiter makes a Limiter on clock c with limits of w installed.
func newLimiter(t testing.TB, c *fakeClock, opts Options, w *config.Waypoint) *Limiter {
	t.Helper()
	if c != nil {
		opts.Now = c.Now
	}
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	l.Update(w)
	return l
}

// call is one request's particulars.
type call struct {
	rule   *config.Rule
	peer   spiffeid.ID
	src    netip.Addr
	header http.Header
}

func (c call) request(svc *config.Service) proxy.LimitRequest {
	r := &http.Request{Method: http.MethodGet, Header: c.header}
	if r.Header == nil {
		r.Header = http.Header{}
	}
	src := c.src
	if !src.IsValid() {
		src = netip.MustParseAddr("10.0.0.1")
	}
	return proxy.LimitRequest{Service: svc, Rule: c.rule, Peer: c.peer, Source: src, Request: r}
}

// count sends n requests like c and counts those allowed.
func count(l *Limiter, svc *config.Service, c call, n int) int {
	allowed := 0
	for range n {
		if l.Limit(context.Background(), c.request(svc)).Allowed {
			allowed++
		}
	}
	return allowed
}

// tables counts the buckets held by every policy of l.
func (l *Limiter) bucketCount() int {
	n := 0
	for _, st := range l.snap.Load().states {
		n += st.buckets.len()
	}
	return n
}
