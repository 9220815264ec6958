package retry

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
)

func response(status int) Outcome { return Outcome{Kind: Response, Status: status, GRPCStatus: -1} }

func grpcResponse(code int) Outcome { return Outcome{Kind: Response, Status: 200, GRPCStatus: code} }

func kind(k OutcomeKind) Outcome { return Outcome{Kind: k, GRPCStatus: -1} }

func TestRetryable(t *testing.T) {
	route := FromRoute(&config.Retry{Attempts: 3, Codes: []int{500, 502}, Backoff: 100 * time.Millisecond})
	tests := []struct {
		name string
		p    Policy
		o    Outcome
		ok   bool
	}{
		{"default: connect failure", Default(), kind(ConnectFailure), true},
		{"default: refused stream", Default(), kind(RefusedStream), true},
		{"default: reset may have done work", Default(), kind(Reset), false},
		{"default: timeout may have done work", Default(), kind(Timeout), false},
		{"default: 503", Default(), response(503), true},
		{"default: 500", Default(), response(500), false},
		{"default: 502", Default(), response(502), false},
		{"default: 200", Default(), response(200), false},
		{"default: gRPC UNAVAILABLE", Default(), grpcResponse(14), true},
		{"default: gRPC INTERNAL", Default(), grpcResponse(13), false},
		{"default: gRPC OK", Default(), grpcResponse(0), false},
		{"default: no outcome", Default(), Outcome{}, false},
		{"default: unknown kind", Default(), kind(OutcomeKind(99)), false},
		{"route: listed 500", route, response(500), true},
		{"route: listed 502", route, response(502), true},
		{"route: unlisted 503", route, response(503), false},
		{"route: gRPC UNAVAILABLE is not an HTTP status", route, grpcResponse(14), false},
		{"route: connect failure", route, kind(ConnectFailure), true},
		{"route: refused stream", route, kind(RefusedStream), true},
		{"route: reset (GEP-1731)", route, kind(Reset), true},
		{"route: timeout (GEP-1731)", route, kind(Timeout), true},
		{"zero policy: connect failure", Policy{}, kind(ConnectFailure), false},
		{"no attempts", Policy{On: KindsOf(ConnectFailure), Codes: []int{503}}, response(503), false},
		{"negative status never listed", Policy{Attempts: 1, GRPCCodes: []int{-1}}, response(200), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Retryable(tt.o); got != tt.ok {
				t.Fatalf("Retryable(%+v) = %v, want %v", tt.o, got, tt.ok)
			}
		})
	}
}

func TestFromRoute(t *testing.T) {
	codes := []int{500, 503}
	tests := []struct {
		name string
		r    *config.Retry
		want Policy
	}{
		{"nil is the default", nil, Default()},
		{"everything given", &config.Retry{Attempts: 5, Codes: codes, Backoff: time.Second}, Policy{
			Attempts: 5, On: KindsOf(ConnectFailure, RefusedStream, Reset, Timeout), Codes: codes, Backoff: time.Second,
		}},
		{"attempts and backoff left out", &config.Retry{Codes: codes}, Policy{
			Attempts: DefaultAttempts, On: KindsOf(ConnectFailure, RefusedStream, Reset, Timeout), Codes: codes, Backoff: DefaultBackoff,
		}},
		{"no codes: connection failures only", &config.Retry{Attempts: 1}, Policy{
			Attempts: 1, On: KindsOf(ConnectFailure, RefusedStream, Reset, Timeout), Backoff: DefaultBackoff,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FromRoute(tt.r); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("FromRoute = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	const ms = time.Millisecond
	d := Default()
	tests := []struct {
		name   string
		p      Policy
		retry  int
		jitter float64
		want   time.Duration
	}{
		{"first retry, no jitter: the minimum", d, 1, 0, 25 * ms},
		{"first retry, most jitter: under twice", d, 1, 0.999, 49975 * time.Microsecond},
		{"second retry", d, 2, 0, 50 * ms},
		{"third retry", d, 3, 0.5, 150 * ms},
		{"capped at ten backoffs", d, 4, 0, 125 * ms},
		{"capped, most jitter", d, 4, 0.999, 249875 * time.Microsecond},
		{"far retry stays capped", d, 1000, 0, 125 * ms},
		{"retry 0 counts as the first", d, 0, 0, 25 * ms},
		{"negative retry counts as the first", d, -3, 0, 25 * ms},
		{"NaN jitter counts as 0", d, 1, math.NaN(), 25 * ms},
		{"jitter 1 counts as 0", d, 1, 1, 25 * ms},
		{"negative jitter counts as 0", d, 1, -0.5, 25 * ms},
		{"MaxBackoff", Policy{Backoff: 10 * ms, MaxBackoff: 30 * ms}, 5, 0, 15 * ms},
		{"MaxBackoff below Backoff: Backoff is the minimum", Policy{Backoff: 100 * ms, MaxBackoff: 10 * ms}, 3, 0.9, 100 * ms},
		{"MaxBackoff below twice Backoff", Policy{Backoff: 100 * ms, MaxBackoff: 150 * ms}, 1, 0, 100 * ms},
		{"no backoff", Policy{}, 3, 0.5, 0},
		{"negative backoff", Policy{Backoff: -time.Second}, 3, 0.5, 0},
		{"huge backoff does not overflow", Policy{Backoff: math.MaxInt64 / 4}, 3, 0, math.MaxInt64 / 2},
		{"huge MaxBackoff does not overflow", Policy{Backoff: time.Second, MaxBackoff: math.MaxInt64}, 80, 0, math.MaxInt64 / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Delay(tt.retry, func() float64 { return tt.jitter }); got != tt.want {
				t.Fatalf("Delay(%d, %v) = %v, want %v", tt.retry, tt.jitter, got, tt.want)
			}
		})
	}
	if got := d.Delay(2, nil); got != 50*ms {
		t.Fatalf("Delay with nil jitter = %v, want 50ms", got)
	}
}

// FuzzDelay checks Delay's bounds for any policy, retry and jitter: never
// below Backoff (GEP-1731's minimum), never above the larger of the cap and
// Backoff, and never shorter for a later retry with the same jitter.
func FuzzDelay(f *testing.F) {
	f.Add(int64(25*time.Millisecond), int64(0), 1, 0.5)
	f.Add(int64(time.Second), int64(time.Millisecond), 3, 0.0)
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), 64, 0.999)
	f.Fuzz(func(t *testing.T, backoff, maxBackoff int64, retry int, jitter float64) {
		p := Policy{Backoff: time.Duration(backoff), MaxBackoff: time.Duration(maxBackoff)}
		j := func() float64 { return jitter }
		got := p.Delay(retry, j)
		base := max(p.Backoff, 0)
		limit := p.MaxBackoff
		if limit <= 0 {
			limit = math.MaxInt64
			if base <= math.MaxInt64/MaxBackoffFactor {
				limit = MaxBackoffFactor * base
			}
		}
		if got < base || got > max(limit, base) {
			t.Fatalf("Delay = %v, outside [%v, %v]", got, base, max(limit, base))
		}
		if retry < math.MaxInt && p.Delay(retry+1, j) < got {
			t.Fatalf("retry %d waits %v, less than retry %d's %v", retry+1, p.Delay(retry+1, j), retry, got)
		}
	})
}

func TestOutcomeOutlier(t *testing.T) {
	tests := []struct {
		o    Outcome
		want outlier.Outcome
	}{
		{kind(ConnectFailure), outlier.LocalFailure},
		{kind(RefusedStream), outlier.LocalFailure},
		{kind(Reset), outlier.LocalFailure},
		{kind(Timeout), outlier.LocalFailure},
		{response(200), outlier.Success},
		{response(404), outlier.Success},
		{response(503), outlier.GatewayFailure},
		{response(500), outlier.ServerError},
		{grpcResponse(14), outlier.GatewayFailure},
		{Outcome{}, outlier.Neutral},
	}
	for _, tt := range tests {
		if got := tt.o.Outlier(); got != tt.want {
			t.Errorf("%+v.Outlier() = %v, want %v", tt.o, got, tt.want)
		}
	}
}

func TestKinds(t *testing.T) {
	s := KindsOf(Reset, Response, OutcomeKind(0), OutcomeKind(200))
	for k := range OutcomeKind(10) {
		if got, want := s.Has(k), k == Reset || k == Response; got != want {
			t.Errorf("Has(%v) = %v, want %v", k, got, want)
		}
	}
}
