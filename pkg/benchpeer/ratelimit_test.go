package benchpeer

import (
	"slices"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The real envoyproxy/ratelimit, configured with nothing but a domain,
// enforces the limit a descriptor carries as its override: the
// configuration the waypoint's README gives.
func TestRateLimitService(t *testing.T) {
	if _, _, err := RateLimitTools(""); err != nil {
		t.Skip(err)
	}
	p, err := StartRateLimitService(t.Context(), RateLimitService{Dir: t.TempDir(), Configs: map[string]string{"skiff": "domain: skiff\n"}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cc, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := rlsv3.NewRateLimitServiceClient(cc)
	req := &rlsv3.RateLimitRequest{Domain: "skiff", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "policy", Value: "ns/p"}},
		Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 2, Unit: typev3.RateLimitUnit_MINUTE},
	}}}
	var codes []rlsv3.RateLimitResponse_Code
	for range 3 {
		resp, err := client.ShouldRateLimit(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, resp.OverallCode)
	}
	if codes[0] != rlsv3.RateLimitResponse_OK || codes[1] != rlsv3.RateLimitResponse_OK || codes[2] != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("answers %v, want OK OK OVER_LIMIT", codes)
	}

	lat, err := p.Latencies(t.Context(), "skiff", 100, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 20 || slices.Contains(lat, 0) {
		t.Errorf("latencies %v, want 20 calls timed", lat)
	}
}
