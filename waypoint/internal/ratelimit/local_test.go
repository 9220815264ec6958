package ratelimit

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
)

// A limit of N per second with burst B allows exactly B at once, then
// answers 429 with its fields, and refills at N per second.
func TestBurstRefusalAndRefill(t *testing.T) {
	c := newFakeClock()
	svc := service(perSecond("ns/limit", 10, 5, waypointapi.RateLimitKey_GLOBAL))
	l := newLimiter(t, c, Options{}, waypoint(svc))
	req := call{peer: alice}.request(svc)

	// The burst, each answer saying what is left.
	for i := range 5 {
		v := l.Limit(context.Background(), req)
		if !v.Allowed {
			t.Fatalf("request %d of the burst refused", i+1)
		}
		want := http.Header{
			HeaderRateLimitPolicy: {`"ns/limit";q=10;w=1`},
			HeaderRateLimit:       {`"ns/limit";r=` + strconv.Itoa(4-i) + `;t=1`},
		}
		assertHeader(t, v.Header(), want)
	}
	v := l.Limit(context.Background(), req)
	if v.Allowed || v.Status != http.StatusTooManyRequests {
		t.Fatalf("request past the burst: %+v, want 429", v)
	}
	assertHeader(t, v.Header(), http.Header{
		HeaderRateLimitPolicy: {`"ns/limit";q=10;w=1`},
		HeaderRateLimit:       {`"ns/limit";r=0;t=1`},
		HeaderRetryAfter:      {"1"},
	})

	// Refill: a token every 100 ms, exactly.
	steps := []struct {
		advance time.Duration
		send    int
		want    int
	}{
		{99 * time.Millisecond, 1, 0},
		{time.Millisecond, 3, 1},
		{300 * time.Millisecond, 5, 3},
		{50 * time.Millisecond, 1, 0},
		{50 * time.Millisecond, 1, 1},
		{time.Hour, 9, 5}, // full again, never above the burst
		{time.Second, 20, 5},
		{2 * time.Second, 50, 5},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		if got := count(l, svc, call{peer: alice}, s.send); got != s.want {
			t.Errorf("step %d (+%v): %d of %d allowed, want %d", i, s.advance, got, s.send, s.want)
		}
	}
}

func assertHeader(t *testing.T, got, want http.Header) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("header = %v, want %v", got, want)
		return
	}
	for k, vv := range want {
		if g := got[k]; len(g) != len(vv) || (len(vv) > 0 && g[0] != vv[0]) {
			t.Errorf("%s = %q, want %q", k, g, vv)
		}
	}
}

// Clients with different SPIFFE identities get separate buckets; an
// override gives one of them more.
func TestPerIdentityAndOverride(t *testing.T) {
	c := newFakeClock()
	rl := perSecond("ns/per-client", 2, 2, waypointapi.RateLimitKey_SOURCE_IDENTITY)
	rl.Overrides = []*waypointapi.RateLimitOverride{
		{Principals: []string{bob.String()}, Requests: 5, FillIntervalMs: 1000, Burst: 5},
		{Principals: []string{bob.String(), carol.String()}, Requests: 1, FillIntervalMs: 1000}, // bob: the first wins
	}
	svc := service(rl)
	l := newLimiter(t, c, Options{}, waypoint(svc))

	for _, tc := range []struct {
		name       string
		c          call
		want       int
		wantPolicy string
	}{
		{"alice", call{peer: alice}, 2, `"ns/per-client";q=2;w=1`},
		{"bob, overridden", call{peer: bob}, 5, `"ns/per-client";q=5;w=1`},
		{"carol, second override", call{peer: carol}, 1, `"ns/per-client";q=1;w=1`},
		{"no identity", call{}, 2, `"ns/per-client";q=2;w=1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := count(l, svc, tc.c, 10); got != tc.want {
				t.Errorf("%d allowed, want %d", got, tc.want)
			}
			v := l.Limit(context.Background(), tc.c.request(svc))
			if v.Status != http.StatusTooManyRequests {
				t.Fatalf("past the limit: %+v", v)
			}
			if got := v.Header().Get(HeaderRateLimitPolicy); got != tc.wantPolicy {
				t.Errorf("RateLimit-Policy = %s, want %s", got, tc.wantPolicy)
			}
		})
	}
}

// A limit on one rule limits that rule only; one on a route limits all
// its rules.
func TestRuleAndRouteTargets(t *testing.T) {
	ruleLimit := perSecond("ns/slow-rule", 1, 1, waypointapi.RateLimitKey_GLOBAL)
	ruleLimit.Route, ruleLimit.Rule = "ns/api", "slow"
	routeLimit := perSecond("ns/api-route", 3, 3, waypointapi.RateLimitKey_GLOBAL)
	routeLimit.Route = "ns/api"

	grpcRule := rule("api", "slow")
	grpcRule.Route.Kind = "GRPCRoute"
	for _, tc := range []struct {
		name  string
		limit *waypointapi.RateLimit
		rule  *config.Rule
		want  int // of 10
	}{
		{"rule limit, its rule", ruleLimit, rule("api", "slow"), 1},
		{"rule limit, another rule of the route", ruleLimit, rule("api", "fast"), 10},
		{"rule limit, an unnamed rule", ruleLimit, rule("api", ""), 10},
		{"rule limit, same rule name in another route", ruleLimit, rule("web", "slow"), 10},
		{"rule limit, no route matched", ruleLimit, nil, 10},
		{"rule limit, a GRPCRoute of that name", ruleLimit, grpcRule, 10},
		{"route limit, one rule", routeLimit, rule("api", "slow"), 3},
		{"route limit, another rule", routeLimit, rule("api", "fast"), 3},
		{"route limit, another route", routeLimit, rule("web", ""), 10},
		{"route limit, no route matched", routeLimit, nil, 10},
		{"service limit, no route matched", perSecond("ns/svc", 2, 2, 0), nil, 2},
		{"service limit, any rule", perSecond("ns/svc", 2, 2, 0), rule("web", "x"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service(tc.limit)
			l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
			if got := count(l, svc, call{rule: tc.rule}, 10); got != tc.want {
				t.Errorf("%d of 10 allowed, want %d", got, tc.want)
			}
		})
	}

	// Both on one route: a rule's requests take from the route's limit.
	svc := service(ruleLimit, routeLimit)
	l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
	if got := count(l, svc, call{rule: rule("api", "slow")}, 10); got != 1 {
		t.Errorf("slow rule: %d allowed, want 1", got)
	}
	if got := count(l, svc, call{rule: rule("api", "fast")}, 10); got != 2 {
		t.Errorf("fast rule after one slow request: %d allowed, want 2", got)
	}
}

// A request refused by one limit takes no tokens from the others, in
// whichever order they come.
func TestRefusedRequestTakesNothing(t *testing.T) {
	small := perSecond("ns/small", 1, 1, waypointapi.RateLimitKey_GLOBAL)
	small.Route, small.Rule = "ns/api", "x"
	big := perSecond("ns/big", 1, 3, waypointapi.RateLimitKey_GLOBAL)
	for _, tc := range []struct {
		name   string
		limits []*waypointapi.RateLimit
	}{
		{"refusing limit first", []*waypointapi.RateLimit{small, big}},
		{"refusing limit last", []*waypointapi.RateLimit{big, small}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service(tc.limits...)
			l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
			if got := count(l, svc, call{rule: rule("api", "x")}, 10); got != 1 {
				t.Fatalf("rule x: %d allowed, want 1", got)
			}
			// big gave one token to the allowed request, none to the nine
			// refused ones.
			if got := count(l, svc, call{rule: rule("api", "y")}, 10); got != 2 {
				t.Errorf("rule y, under big only: %d allowed, want 2", got)
			}
		})
	}
}

// With several limits the fields name the one with the least left; a
// refusal names the refusing limit that frees up last.
func TestSeveralLimitsReportTheTightest(t *testing.T) {
	c := newFakeClock()
	perMinute := &waypointapi.RateLimit{Policy: "ns/per-minute", Requests: 3, FillIntervalMs: 60_000, Burst: 3}
	perSec := perSecond("ns/per-second", 2, 2, waypointapi.RateLimitKey_GLOBAL)
	svc := service(perSec, perMinute)
	l := newLimiter(t, c, Options{}, waypoint(svc))
	req := call{}.request(svc)

	want := []string{
		`"ns/per-second";r=1;t=1`, // per-second 1, per-minute 2
		`"ns/per-second";r=0;t=1`, // 0 and 1
	}
	for i, w := range want {
		v := l.Limit(context.Background(), req)
		if !v.Allowed || v.Header().Get(HeaderRateLimit) != w {
			t.Fatalf("request %d: %+v, want RateLimit %s", i+1, v, w)
		}
	}
	c.Advance(time.Second)
	v := l.Limit(context.Background(), req) // per-second 1 left, per-minute 0
	// per-minute earned 1/20 of a token in that second: 19 s to the next.
	if got := v.Header().Get(HeaderRateLimit); !v.Allowed || got != `"ns/per-minute";r=0;t=19` {
		t.Fatalf("third request: %+v", v)
	}
	v = l.Limit(context.Background(), req) // per-minute refuses
	if v.Status != http.StatusTooManyRequests || v.Header().Get(HeaderRetryAfter) != "19" ||
		v.Header().Get(HeaderRateLimitPolicy) != `"ns/per-minute";q=3;w=60` {
		t.Fatalf("fourth request: %+v", v)
	}
}

// Keys: SOURCE_IP counts IPv4-mapped addresses as IPv4; HEADER puts a
// request without the header in the bucket of the empty value.
func TestKeys(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	other := netip.MustParseAddr("2001:db8::1")
	hdr := func(v string) http.Header { return http.Header{"X-Tenant": {v}} }
	for _, tc := range []struct {
		name string
		key  *waypointapi.RateLimitKey
		seq  []call
		want []bool
	}{
		{"ip: mapped is the same client", &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_SOURCE_IP},
			[]call{{src: v4}, {src: mapped}, {src: other}, {src: other}},
			[]bool{true, false, true, false}},
		{"identity: each its own", &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_SOURCE_IDENTITY},
			[]call{{peer: alice}, {peer: bob}, {peer: alice}, {}, {}},
			[]bool{true, true, false, true, false}},
		{"header: by value", &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_HEADER, Header: "x-tenant"},
			[]call{{header: hdr("a")}, {header: hdr("b")}, {header: hdr("a")}},
			[]bool{true, true, false}},
		{"header: missing shares one bucket", &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_HEADER, Header: "x-tenant"},
			[]call{{}, {header: http.Header{"X-Other": {"1"}}}, {header: hdr("")}},
			[]bool{true, false, false}},
		{"global: one bucket", nil,
			[]call{{peer: alice}, {peer: bob}},
			[]bool{true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service(&waypointapi.RateLimit{Policy: "ns/k", Requests: 1, FillIntervalMs: 1000, Key: tc.key})
			l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
			for i, c := range tc.seq {
				if got := l.Limit(context.Background(), c.request(svc)).Allowed; got != tc.want[i] {
					t.Errorf("request %d: allowed %v, want %v", i, got, tc.want[i])
				}
			}
		})
	}
}

// A million distinct header values keep the buckets at MaxKeys; an
// evicted client starts again with a full bucket.
func TestKeysAreBounded(t *testing.T) {
	const maxKeys = 10_000
	values := 1_000_000
	if testing.Short() {
		values = 50_000
	}
	svc := service(&waypointapi.RateLimit{Policy: "ns/by-header", Requests: 1, FillIntervalMs: 60_000,
		Key: &waypointapi.RateLimitKey{Type: waypointapi.RateLimitKey_HEADER, Header: "x-key"}})
	l := newLimiter(t, newFakeClock(), Options{MaxKeys: maxKeys}, waypoint(svc))
	req := call{}.request(svc)
	vals := []string{""}
	req.Request.Header["X-Key"] = vals
	var buf []byte
	for i := range values {
		buf = strconv.AppendInt(buf[:0], int64(i), 36)
		vals[0] = string(buf)
		if !l.Limit(context.Background(), req).Allowed {
			t.Fatalf("value %d refused: each has its own bucket", i)
		}
	}
	if n := l.bucketCount(); n > maxKeys || n < maxKeys/2 {
		t.Errorf("%d buckets after %d keys, want at most %d (and most of them used)", n, values, maxKeys)
	}

	// Eviction: with one key, a second client drops the first's bucket.
	l = newLimiter(t, newFakeClock(), Options{MaxKeys: 1}, waypoint(svc))
	seq := []struct {
		v    string
		want bool
	}{{"a", true}, {"a", false}, {"b", true}, {"a", true}, {"a", false}}
	for i, s := range seq {
		req.Request.Header["X-Key"] = []string{s.v}
		if got := l.Limit(context.Background(), req).Allowed; got != s.want {
			t.Errorf("request %d (%s): allowed %v, want %v", i, s.v, got, s.want)
		}
	}
}

// Update keeps the buckets of unchanged policies and starts changed ones
// afresh.
func TestUpdateKeepsUnchangedBuckets(t *testing.T) {
	mk := func(requests uint32, failure waypointapi.RateLimit_FailureMode) *config.Service {
		kept := perSecond("ns/kept", 1, 1, waypointapi.RateLimitKey_SOURCE_IDENTITY)
		kept.FailureMode = failure // no bearing on local buckets
		changed := perSecond("ns/changed", requests, 1, waypointapi.RateLimitKey_GLOBAL)
		changed.Route = "ns/other"
		return service(kept, changed)
	}
	other := rule("other", "")
	svc := mk(1, waypointapi.RateLimit_ALLOW)
	l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
	if count(l, svc, call{peer: alice}, 3) != 1 || count(l, svc, call{peer: bob, rule: other}, 1) != 1 {
		t.Fatal("setup: the limits did not apply as expected")
	}

	// A push with new objects: "kept" as it was, "changed" changed.
	svc = mk(2, waypointapi.RateLimit_DENY)
	l.Update(waypoint(&config.Service{Name: "x", Namespace: "other", Hostname: "x.other"}, svc))
	if got := count(l, svc, call{peer: alice}, 3); got != 0 {
		t.Errorf("kept policy: %d allowed after the push, want 0 (its bucket kept)", got)
	}
	if got := count(l, svc, call{peer: carol, rule: other}, 1); got != 1 {
		t.Errorf("changed policy: %d allowed after the push, want 1 (a new bucket)", got)
	}

	// Removing a policy drops its buckets: back, it starts full.
	l.Update(waypoint(service()))
	if got := count(l, svc, call{peer: alice}, 2); got != 2 {
		t.Errorf("policies removed: %d of 2 allowed, want 2", got)
	}
	l.Update(waypoint(svc))
	if got := count(l, svc, call{peer: alice}, 2); got != 1 {
		t.Errorf("policy back: %d allowed, want 1 (a full bucket)", got)
	}
}

// A limit that cannot be enforced as written is enforced more strictly.
func TestBadLimitsFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit *waypointapi.RateLimit
		rule  *config.Rule
		want  int // of 5
	}{
		{"zero requests refuse all", &waypointapi.RateLimit{Policy: "ns/p", FillIntervalMs: 1000, Burst: 5}, nil, 0},
		{"zero interval refuses all", &waypointapi.RateLimit{Policy: "ns/p", Requests: 5, Burst: 5}, nil, 0},
		{"route without a slash covers the service", &waypointapi.RateLimit{Policy: "ns/p", Route: "api", Requests: 1, FillIntervalMs: 1000}, nil, 1},
		{"rule without a route covers the service", &waypointapi.RateLimit{Policy: "ns/p", Rule: "x", Requests: 1, FillIntervalMs: 1000}, rule("api", "y"), 1},
		{"unknown key type is one bucket", &waypointapi.RateLimit{Policy: "ns/p", Requests: 1, FillIntervalMs: 1000,
			Key: &waypointapi.RateLimitKey{Type: 42}}, nil, 1},
		{"burst 0 is the rate", &waypointapi.RateLimit{Policy: "ns/p", Requests: 3, FillIntervalMs: 1000}, nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := service(tc.limit)
			var log syncBuffer
			l := newLimiter(t, newFakeClock(), Options{Logger: slog.New(slog.NewTextHandler(&log, nil))}, waypoint(svc))
			wantWarning := !strings.HasPrefix(tc.name, "burst 0")
			if got := len(log.lines("not enforced as written")) > 0; got != wantWarning {
				t.Errorf("warned: %v, want %v", got, wantWarning)
			}
			got := 0
			for _, peer := range []call{{peer: alice}, {peer: bob}, {peer: carol}, {}, {peer: alice}} {
				peer.rule = tc.rule
				got += count(l, svc, peer, 1)
			}
			if got != tc.want {
				t.Errorf("%d of 5 allowed, want %d", got, tc.want)
			}
		})
	}
}

// A service without limits, or unknown to the last Update, is not limited
// and costs no allocation.
func TestNoLimits(t *testing.T) {
	limited := service(perSecond("ns/p", 1, 1, 0))
	l := newLimiter(t, newFakeClock(), Options{}, waypoint(limited))
	for _, tc := range []struct {
		name string
		req  proxy.LimitRequest
	}{
		{"no service", proxy.LimitRequest{}},
		{"no limits", call{}.request(service())},
		{"not in the last update", call{}.request(&config.Service{Namespace: "x", Hostname: "y", RateLimits: limited.RateLimits})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v proxy.LimitVerdict
			allocs := testing.AllocsPerRun(100, func() { v = l.Limit(context.Background(), tc.req) })
			if !v.Allowed || v.Header() != nil {
				t.Errorf("verdict %+v, want allowed without fields", v)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per request, want 0", allocs)
			}
		})
	}
}

// Concurrent requests, with configuration pushes beside them, get exactly
// the burst between them.
func TestConcurrentRequestsGetExactlyTheBurst(t *testing.T) {
	const burst, workers, each = 100, 8, 50
	svc := service(&waypointapi.RateLimit{Policy: "ns/p", Requests: 1, FillIntervalMs: 3_600_000, Burst: burst})
	l := newLimiter(t, newFakeClock(), Options{}, waypoint(svc))
	results := make(chan int, workers)
	stop := make(chan struct{})
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		for {
			select {
			case <-stop:
				return
			default:
				l.Update(waypoint(service(svc.RateLimits...)))
			}
		}
	}()
	for w := range workers {
		go func() {
			results <- count(l, svc, call{peer: alice, src: netip.AddrFrom4([4]byte{10, 0, 0, byte(w)})}, each)
		}()
	}
	total := 0
	for range workers {
		total += <-results
	}
	close(stop)
	<-pushed
	if total != burst {
		t.Errorf("%d of %d concurrent requests allowed, want the burst of %d", total, workers*each, burst)
	}
}
