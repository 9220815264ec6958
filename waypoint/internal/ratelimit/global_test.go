package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// fakeRLS is an in-process rate-limit service that records requests and
// answers as told.
type fakeRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	mu       sync.Mutex
	requests []*rlsv3.RateLimitRequest
	answer   func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
}

func (f *fakeRLS) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	answer := f.answer
	f.mu.Unlock()
	return answer(req)
}

func (f *fakeRLS) calls() []*rlsv3.RateLimitRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*rlsv3.RateLimitRequest(nil), f.requests...)
}

// startFakeRLS serves f on a loopback port and returns its address.
func startFakeRLS(t *testing.T, f *fakeRLS) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// okWith answers every descriptor OK, with its own override as the
// current limit, remaining left and reset after reset.
func okWith(remaining uint32, reset time.Duration) func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return func(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
		for _, d := range req.Descriptors {
			resp.Statuses = append(resp.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{
				Code: rlsv3.RateLimitResponse_OK,
				CurrentLimit: &rlsv3.RateLimitResponse_RateLimit{
					RequestsPerUnit: d.GetLimit().GetRequestsPerUnit(),
					Unit:            rlsv3.RateLimitResponse_RateLimit_Unit(d.GetLimit().GetUnit()),
				},
				LimitRemaining:     remaining,
				DurationUntilReset: durationpb.New(reset),
			})
		}
		return resp, nil
	}
}

func global(policy string, requests, intervalMs uint32, k waypointapi.RateLimitKey_Type) *waypointapi.RateLimit {
	return &waypointapi.RateLimit{Policy: policy, Requests: requests, FillIntervalMs: intervalMs,
		Key: &waypointapi.RateLimitKey{Type: k, Header: "x-tenant"}, Mode: waypointapi.RateLimit_GLOBAL}
}

func entries(kv ...string) []*ratelimitv3.RateLimitDescriptor_Entry {
	var out []*ratelimitv3.RateLimitDescriptor_Entry
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

// The descriptors sent: the policy, the client's key, the policy's own
// rate as the override, in the configured domain.
func TestGlobalDescriptors(t *testing.T) {
	withOverride := global("ns/g", 10, 1000, waypointapi.RateLimitKey_SOURCE_IP)
	withOverride.Overrides = []*waypointapi.RateLimitOverride{{Principals: []string{bob.String()}, Requests: 50, FillIntervalMs: 60_000}}
	mapped := netip.MustParseAddr("::ffff:192.0.2.7")
	for _, tc := range []struct {
		name       string
		limit      *waypointapi.RateLimit
		c          call
		want       []*ratelimitv3.RateLimitDescriptor_Entry
		perUnit    uint32
		unit       typev3.RateLimitUnit
		wantPolicy string
	}{
		{"global key", global("ns/g", 10, 1000, waypointapi.RateLimitKey_GLOBAL), call{peer: alice},
			entries("policy", "ns/g"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"identity", global("ns/g", 10, 60_000, waypointapi.RateLimitKey_SOURCE_IDENTITY), call{peer: alice},
			entries("policy", "ns/g", "source_identity", alice.String()), 10, typev3.RateLimitUnit_MINUTE, `"ns/g";q=10;w=60`},
		{"no identity", global("ns/g", 10, 3_600_000, waypointapi.RateLimitKey_SOURCE_IDENTITY), call{},
			entries("policy", "ns/g", "source_identity", ""), 10, typev3.RateLimitUnit_HOUR, `"ns/g";q=10;w=3600`},
		{"ip, unmapped", global("ns/g", 10, 1000, waypointapi.RateLimitKey_SOURCE_IP), call{src: mapped},
			entries("policy", "ns/g", "source_ip", "192.0.2.7"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"header", global("ns/g", 10, 1000, waypointapi.RateLimitKey_HEADER), call{header: http.Header{"X-Tenant": {"t1"}}},
			entries("policy", "ns/g", "header", "t1"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"header missing", global("ns/g", 10, 1000, waypointapi.RateLimitKey_HEADER), call{},
			entries("policy", "ns/g", "header", ""), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"header not UTF-8", global("ns/g", 10, 1000, waypointapi.RateLimitKey_HEADER), call{header: http.Header{"X-Tenant": {"a\xffb"}}},
			entries("policy", "ns/g", "header", "a\uFFFDb"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"override", withOverride, call{peer: bob, src: mapped},
			entries("policy", "ns/g", "source_identity", bob.String()), 50, typev3.RateLimitUnit_MINUTE, `"ns/g";q=50;w=60`},
		{"not overridden", withOverride, call{peer: alice, src: mapped},
			entries("policy", "ns/g", "source_ip", "192.0.2.7"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"half a second", global("ns/g", 5, 500, 0), call{}, entries("policy", "ns/g"), 10, typev3.RateLimitUnit_SECOND, `"ns/g";q=10;w=1`},
		{"90 seconds", global("ns/g", 3, 90_000, 0), call{}, entries("policy", "ns/g"), 2, typev3.RateLimitUnit_MINUTE, `"ns/g";q=2;w=60`},
		{"2 hours, 1 request", global("ns/g", 1, 7_200_000, 0), call{}, entries("policy", "ns/g"), 12, typev3.RateLimitUnit_DAY, `"ns/g";q=12;w=86400`},
		{"30 days", global("ns/g", 7, 2_592_000_000, 0), call{}, entries("policy", "ns/g"), 7, typev3.RateLimitUnit_MONTH, `"ns/g";q=7;w=2592000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRLS{answer: okWith(7, 30*time.Second)}
			svc := service(tc.limit)
			l := newLimiter(t, nil, Options{ServiceAddress: startFakeRLS(t, f), Domain: "mesh", Timeout: 10 * time.Second}, waypoint(svc))
			v := l.Limit(context.Background(), tc.c.request(svc))
			if !v.Allowed {
				t.Fatalf("verdict %+v, want allowed", v)
			}
			assertHeader(t, v.Header(), http.Header{
				HeaderRateLimitPolicy: {tc.wantPolicy},
				HeaderRateLimit:       {`"ns/g";r=7;t=30`},
			})
			calls := f.calls()
			if len(calls) != 1 || calls[0].Domain != "mesh" || len(calls[0].Descriptors) != 1 {
				t.Fatalf("calls = %v, want one in domain mesh with one descriptor", calls)
			}
			want := &ratelimitv3.RateLimitDescriptor{Entries: tc.want,
				Limit: &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: tc.perUnit, Unit: tc.unit}}
			if got := calls[0].Descriptors[0]; !proto.Equal(got, want) {
				t.Errorf("descriptor\n got %v\nwant %v", got, want)
			}
		})
	}
}

// collected returns the data of metric name, nil if it has none.
func collected(t *testing.T, r *sdkmetric.ManualReader, name string) metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Data
			}
		}
	}
	return nil
}

// collectCounter returns a counter's values by the value of label.
func collectCounter(t *testing.T, r *sdkmetric.ManualReader, name, label string) map[string]int64 {
	t.Helper()
	sum, _ := collected(t, r, name).(metricdata.Sum[int64])
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		v, _ := dp.Attributes.Value(attribute.Key(label))
		out[v.AsString()] += dp.Value
	}
	return out
}

// histogramCount returns how many values a histogram recorded.
func histogramCount(t *testing.T, r *sdkmetric.ManualReader, name string) uint64 {
	t.Helper()
	h, _ := collected(t, r, name).(metricdata.Histogram[float64])
	var n uint64
	for _, dp := range h.DataPoints {
		n += dp.Count
	}
	return n
}

func over(reset time.Duration, limit *rlsv3.RateLimitResponse_RateLimit) func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return func(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT,
			Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{
				Code: rlsv3.RateLimitResponse_OVER_LIMIT, CurrentLimit: limit, DurationUntilReset: durationpb.New(reset)}}}, nil
	}
}

// The service's answers: over the limit is 429 with the service's numbers;
// an answer that does not fit, or an error, is a failure.
func TestGlobalAnswers(t *testing.T) {
	perSec := &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_SECOND}
	for _, tc := range []struct {
		name       string
		answer     func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error)
		deny       bool
		wantStatus int // 0: allowed
		wantHeader http.Header
		wantReason string
	}{
		{name: "over", answer: over(2500*time.Millisecond, perSec), wantStatus: 429, wantHeader: http.Header{
			HeaderRateLimitPolicy: {`"ns/g";q=10;w=1`}, HeaderRateLimit: {`"ns/g";r=0;t=3`}, HeaderRetryAfter: {"3"}}},
		{name: "over with the service's own limit", answer: over(0, &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 100, Unit: rlsv3.RateLimitResponse_RateLimit_WEEK}),
			wantStatus: 429, wantHeader: http.Header{
				HeaderRateLimitPolicy: {`"ns/g";q=100;w=604800`}, HeaderRateLimit: {`"ns/g";r=0;t=0`}, HeaderRetryAfter: {"1"}}},
		{name: "over overall only", answer: func(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			resp, _ := okWith(0, time.Second)(req)
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			return resp, nil
		}, wantStatus: 429, wantHeader: http.Header{
			HeaderRateLimitPolicy: {`"ns/g";q=10;w=1`}, HeaderRateLimit: {`"ns/g";r=0;t=1`}, HeaderRetryAfter: {"1"}}},
		{name: "under", answer: okWith(3, time.Second), wantHeader: http.Header{
			HeaderRateLimitPolicy: {`"ns/g";q=10;w=1`}, HeaderRateLimit: {`"ns/g";r=3;t=1`}}},
		{name: "no current limit: unknown domain", answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK,
				Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: rlsv3.RateLimitResponse_OK}}}, nil
		}, wantReason: ReasonBadResponse},
		{name: "no current limit, deny", answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK,
				Statuses: []*rlsv3.RateLimitResponse_DescriptorStatus{{Code: rlsv3.RateLimitResponse_OK}}}, nil
		}, deny: true, wantStatus: 500, wantReason: ReasonBadResponse},
		{name: "statuses missing", answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
		}, deny: true, wantStatus: 500, wantReason: ReasonBadResponse},
		{name: "unknown overall code", answer: func(req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			resp, _ := okWith(3, time.Second)(req)
			resp.OverallCode = rlsv3.RateLimitResponse_UNKNOWN
			return resp, nil
		}, wantReason: ReasonBadResponse},
		{name: "error", answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return nil, grpcstatus.Error(codes.Internal, "redis is down")
		}, deny: true, wantStatus: 500, wantReason: ReasonError},
		{name: "error, allow", answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
			return nil, errors.New("boom")
		}, wantReason: ReasonError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
			rl := global("ns/g", 10, 1000, 0)
			if tc.deny {
				rl.FailureMode = waypointapi.RateLimit_DENY
			}
			svc := service(rl)
			l := newLimiter(t, nil, Options{ServiceAddress: startFakeRLS(t, &fakeRLS{answer: tc.answer}), Timeout: 10 * time.Second, Meter: meter}, waypoint(svc))
			v := l.Limit(context.Background(), call{}.request(svc))
			if tc.wantStatus == 0 {
				if !v.Allowed {
					t.Errorf("verdict %+v, want allowed", v)
				}
			} else if v.Allowed || v.Status != tc.wantStatus {
				t.Errorf("verdict %+v, want status %d", v, tc.wantStatus)
			}
			if tc.wantHeader != nil || v.Header() != nil {
				assertHeader(t, v.Header(), tc.wantHeader)
			}
			errs := collectCounter(t, reader, MetricServiceErrors, LabelReason)
			limited := collectCounter(t, reader, MetricRateLimited, LabelPolicy)
			if tc.wantReason != "" && (len(errs) != 1 || errs[tc.wantReason] != 1) {
				t.Errorf("service errors = %v, want one %s", errs, tc.wantReason)
			}
			if tc.wantReason == "" && len(errs) != 0 {
				t.Errorf("service errors = %v, want none", errs)
			}
			if wantLimited := tc.wantStatus == 429; wantLimited != (limited["ns/g"] == 1) {
				t.Errorf("rate-limited counter = %v", limited)
			}
			if n := histogramCount(t, reader, MetricServiceDuration); n != 1 {
				t.Errorf("%s counted %d calls, want 1", MetricServiceDuration, n)
			}
		})
	}
}

// Local limits come first: one that refuses spares the call; a GLOBAL
// refusal gives the local tokens back.
func TestGlobalAfterLocal(t *testing.T) {
	local := perSecond("ns/local", 1, 2, waypointapi.RateLimitKey_GLOBAL)
	f := &fakeRLS{answer: okWith(5, time.Second)}
	svc := service(local, global("ns/g", 10, 1000, 0))
	l := newLimiter(t, newFakeClock(), Options{ServiceAddress: startFakeRLS(t, f), Timeout: 10 * time.Second}, waypoint(svc))
	if got := count(l, svc, call{}, 5); got != 2 {
		t.Fatalf("%d allowed, want the local burst of 2", got)
	}
	if n := len(f.calls()); n != 2 {
		t.Errorf("%d calls to the service, want 2: none for requests the local limit refused", n)
	}

	f = &fakeRLS{answer: over(time.Second, &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_SECOND})}
	l = newLimiter(t, newFakeClock(), Options{ServiceAddress: startFakeRLS(t, f), Timeout: 10 * time.Second}, waypoint(svc))
	if got := count(l, svc, call{}, 5); got != 0 {
		t.Fatalf("%d allowed, want none", got)
	}
	// Without the GLOBAL limit, the local bucket is still full.
	l.Update(waypoint(service(local)))
	if got := count(l, service(local), call{}, 5); got != 2 {
		t.Errorf("local limit after GLOBAL refusals: %d allowed, want 2 (no tokens taken)", got)
	}
}

// A service that is down, one that never answers, and none configured:
// each GLOBAL limit takes its failure mode, and failures are counted.
func TestGlobalFailureModes(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := closed.Addr().String()
	closed.Close()

	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	t.Cleanup(func() {
		stalled.Close()
		held.Wait()
	})
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := stalled.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // accepted, never answered
		}
	})

	for _, tc := range []struct {
		name       string
		addr       string
		timeout    time.Duration
		wantReason string
	}{
		// A refused connection fails at once: a long timeout keeps the
		// reason from depending on the machine's speed.
		{"down", down, 10 * time.Second, ReasonUnavailable},
		{"never answers", stalled.Addr().String(), 0, ReasonTimeout},
		{"no address", "", 0, ReasonNoService},
	} {
		for _, mode := range []waypointapi.RateLimit_FailureMode{waypointapi.RateLimit_ALLOW, waypointapi.RateLimit_DENY} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				reader := sdkmetric.NewManualReader()
				meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
				rl := global("ns/g", 1, 1000, 0)
				rl.FailureMode = mode
				svc := service(rl)
				l := newLimiter(t, nil, Options{ServiceAddress: tc.addr, Timeout: tc.timeout, Meter: meter}, waypoint(svc))
				for i := range 3 {
					v := l.Limit(context.Background(), call{}.request(svc))
					if mode == waypointapi.RateLimit_ALLOW && (!v.Allowed || v.Header() != nil) {
						t.Errorf("request %d: %+v, want allowed without fields", i, v)
					}
					if mode == waypointapi.RateLimit_DENY && (v.Allowed || v.Status != http.StatusInternalServerError) {
						t.Errorf("request %d: %+v, want 500", i, v)
					}
				}
				if errs := collectCounter(t, reader, MetricServiceErrors, LabelReason); len(errs) != 1 || errs[tc.wantReason] != 3 {
					t.Errorf("service errors = %v, want 3 %s", errs, tc.wantReason)
				}
			})
		}
	}
}

// syncBuffer is a bytes.Buffer for a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for line := range strings.Lines(s.b.String()) {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// Failures are logged once per interval, with their number; a missing
// address is logged once.
func TestFailuresLoggedOncePerInterval(t *testing.T) {
	c := newFakeClock()
	var buf syncBuffer
	f := &fakeRLS{answer: func(*rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
		return nil, grpcstatus.Error(codes.Internal, "redis is down")
	}}
	svc := service(global("ns/g", 1, 1000, 0))
	l := newLimiter(t, c, Options{ServiceAddress: startFakeRLS(t, f), Timeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&buf, nil))}, waypoint(svc))
	count(l, svc, call{}, 5)
	c.Advance(9 * time.Second)
	count(l, svc, call{}, 3)
	if got := buf.lines("rate-limit service failed"); len(got) != 1 || !strings.Contains(got[0], "failures=1 ") {
		t.Fatalf("log after 8 failures within the interval: %q, want one line of 1 failure", got)
	}
	c.Advance(time.Second)
	count(l, svc, call{}, 1)
	got := buf.lines("rate-limit service failed")
	if len(got) != 2 || !strings.Contains(got[1], "failures=8 ") {
		t.Errorf("log after the interval: %q, want a second line counting 8", got)
	}

	var once syncBuffer
	l = newLimiter(t, c, Options{Logger: slog.New(slog.NewTextHandler(&once, nil))}, waypoint(svc))
	l.Update(waypoint(svc))
	count(l, svc, call{}, 5)
	if got := once.lines("WARN"); len(got) != 1 || !strings.Contains(got[0], "no rate-limit service address") {
		t.Errorf("log without an address: %q, want one line saying so", got)
	}
}
