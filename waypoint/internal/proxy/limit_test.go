package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// stubLimiter refuses the requests whose path (or gRPC method) contains
// "limited" and lets the others through, with a RateLimit field on both.
type stubLimiter struct {
	mu   sync.Mutex
	seen []LimitRequest
}

func (l *stubLimiter) Limit(_ context.Context, r LimitRequest) LimitVerdict {
	l.mu.Lock()
	l.seen = append(l.seen, r)
	l.mu.Unlock()
	if strings.Contains(r.Request.URL.Path, "limited") || strings.Contains(r.Request.URL.Path, "Watch") {
		return LimitVerdict{Status: http.StatusTooManyRequests, RetryAfter: "3", RateLimit: `"default/rl";r=0;t=3`, RateLimitPolicy: `"default/rl";q=5;w=1`}
	}
	if strings.Contains(r.Request.URL.Path, "broken") {
		return LimitVerdict{Status: http.StatusInternalServerError}
	}
	return LimitVerdict{Allowed: true, RateLimit: `"default/rl";r=4;t=1`}
}

// A limiter's verdict reaches the client: a refused request gets 429 with
// the limiter's fields and never reaches the backend; an allowed one gets
// the backend's answer with the RateLimit field added. The limiter sees
// the matched rule, the peer and the source.
func TestLimiterVerdicts(t *testing.T) {
	svc := wpService("echo", echoVIP, 80, 8080, "http")
	svc.HttpRoutes = []*waypointapi.HTTPRoute{{Name: "r", Namespace: testNS, Rules: []*waypointapi.HTTPRouteRule{
		{Name: "all", Backends: []*waypointapi.BackendRef{backendRef("echo", 1)}},
	}}}
	lim := &stubLimiter{}
	m, eps := oneService(t, svc, meshOptions{proxy: func(c *Config) { c.Limiter = lim }}, "127.77.43.1:8080")
	var mu sync.Mutex
	var backendSaw []string
	eps[0].handle(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		backendSaw = append(backendSaw, r.URL.Path)
		mu.Unlock()
		w.Write([]byte("ok"))
	})
	for _, c := range []*http.Client{m.http1Client(), m.http2Client()} {
		for _, tc := range []struct {
			path       string
			status     int
			rateLimit  string
			retryAfter string
		}{
			{"/free", 200, `"default/rl";r=4;t=1`, ""},
			{"/limited", 429, `"default/rl";r=0;t=3`, "3"},
			{"/broken", 500, "", ""},
		} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+echoVIP+tc.path, nil)
			resp, body := m.do(c, req)
			if resp.StatusCode != tc.status || resp.Header.Get("RateLimit") != tc.rateLimit || resp.Header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("%s: %d RateLimit %q Retry-After %q (%q), want %d %q %q", tc.path, resp.StatusCode,
					resp.Header.Get("RateLimit"), resp.Header.Get("Retry-After"), body, tc.status, tc.rateLimit, tc.retryAfter)
			}
		}
	}
	mu.Lock()
	if len(backendSaw) != 2 || backendSaw[0] != "/free" || backendSaw[1] != "/free" {
		t.Errorf("backend saw %q, want only the two allowed requests", backendSaw)
	}
	mu.Unlock()
	lim.mu.Lock()
	defer lim.mu.Unlock()
	for _, r := range lim.seen {
		if r.Rule == nil || r.Rule.Name != "all" || r.Rule.Route.Name != "r" || r.Service == nil || r.Service.Name != "echo" ||
			r.Peer.String() != "spiffe://"+testTD+"/ns/"+testNS+"/sa/sleep" || r.Source != clientAddr.Addr() {
			t.Errorf("limiter saw service %v rule %+v peer %v source %v", r.Service, r.Rule, r.Peer, r.Source)
		}
	}
	s := m.scrape()
	if v, ok := metricValue(s, "istio_requests_total", `response_code="429"`, `response_flags="RL"`); !ok || v != 2 {
		t.Errorf("istio_requests_total{response_code=429,response_flags=RL} = %v, want 2:\n%s", v, grepLines(s, "istio_requests_total"))
	}
}

// gRPC callers read a refusal from grpc-status: a rate-limited call ends
// with RESOURCE_EXHAUSTED and a denied one with PERMISSION_DENIED, both
// over HTTP status 200.
func TestGRPCRefusals(t *testing.T) {
	const vip, addr = "10.96.3.44", "127.77.44.1:8080"
	st := meshstate.Config{Services: []*meshstate.Service{service("greeter", vip, 80, 8080)}, Workloads: []*meshstate.Workload{
		workload("greeter-0", addr, "greeter", hostname("greeter"), 80),
	}}
	svc := wpService("greeter", vip, 80, 8080, "grpc")
	svc.Policies = []*waypointapi.L7Authorization{l7Policy("no-check", securityapi.Action_DENY,
		&waypointapi.L7Match{Paths: []*securityapi.StringMatch{exact("/grpc.health.v1.Health/Check")}})}
	m := newMesh(t, &waypointapi.Waypoint{Services: []*waypointapi.Service{svc}}, st, meshOptions{proxy: func(c *Config) { c.Limiter = &stubLimiter{} }})
	m.startGRPCEndpoint("greeter-0", addr, "greeter")
	client := healthpb.NewHealthClient(m.grpcClient(vip + ":80"))

	_, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "RBAC: access denied" {
		t.Errorf("denied call: %v %q, want PermissionDenied", st.Code(), st.Message())
	}
	stream, err := client.Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "rate limited" {
		t.Errorf("limited call: %v %q, want ResourceExhausted", st.Code(), st.Message())
	}
	s := m.scrape()
	for _, code := range []string{"7", "8"} {
		if _, ok := metricValue(s, "istio_requests_total", `grpc_response_status="`+code+`"`, `response_code="200"`); !ok {
			t.Errorf("no istio_requests_total series with grpc_response_status=%s:\n%s", code, grepLines(s, "istio_requests_total"))
		}
	}
}
