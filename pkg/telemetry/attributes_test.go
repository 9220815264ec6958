package telemetry

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

func TestAttributeCache(t *testing.T) {
	a := Labels{Reporter: ReporterWaypoint, ResponseCode: "200"}
	b := Labels{Reporter: ReporterWaypoint, ResponseCode: "503", ResponseFlags: "UF"}
	c := Labels{Reporter: ReporterWaypoint, ResponseCode: "200", GRPCResponseStatus: "0"}
	for _, tc := range []struct {
		name    string
		size    int
		gets    []Labels
		wantLen int
	}{
		{"one entry per distinct label set", 8, []Labels{a, b, a, c, b}, 3},
		{"repeats stay one entry", 8, []Labels{a, a, a}, 1},
		{"full cache starts again", 2, []Labels{a, b, c}, 1},
		{"size 0 means the default", 0, []Labels{a, b, c}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := NewAttributeCache(tc.size)
			for _, l := range tc.gets {
				got, want := cache.Get(l).Set(), l.Set()
				if !got.Equals(&want) {
					t.Errorf("Get(%+v) = %s, want %s", l, got.Encoded(attribute.DefaultEncoder()), want.Encoded(attribute.DefaultEncoder()))
				}
			}
			if n := cache.Len(); n != tc.wantLen {
				t.Errorf("Len = %d, want %d", n, tc.wantLen)
			}
		})
	}
}

func TestAttributeCacheConcurrent(t *testing.T) {
	cache := NewAttributeCache(16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				l := Labels{ResponseCode: fmt.Sprint(200 + (g+i)%24)}
				got, want := cache.Get(l).Set(), l.Set()
				if !got.Equals(&want) {
					t.Errorf("Get(%+v) returned another label set", l)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := cache.Len(); n > 16 {
		t.Errorf("Len = %d, beyond the bound 16", n)
	}
}

// TestRecordDoesNotAllocate holds the per-request path to its promise: a
// cache hit and Record allocate nothing.
func TestRecordDoesNotAllocate(t *testing.T) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	req, err := NewRequestMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	cache := NewAttributeCache(0)
	l := Labels{Reporter: ReporterWaypoint, ResponseCode: "200", DestinationService: "echo.b.svc.cluster.local"}
	ctx := context.Background()
	s := RequestSample{Duration: 2 * time.Millisecond, RequestBytes: 300, ResponseBytes: 4000}
	req.Record(ctx, cache.Get(l), s) // the first creates the series
	if n := testing.AllocsPerRun(100, func() { req.Record(ctx, cache.Get(l), s) }); n != 0 {
		t.Errorf("cache hit and Record: %v allocations per request, want 0", n)
	}
}

func benchLabels() Labels {
	return Labels{
		Reporter:                    ReporterWaypoint,
		Source:                      Peer{Workload: "sleep", Namespace: "a", Principal: "spiffe://cluster.local/ns/a/sa/sleep", App: "sleep", Version: "v1"},
		Destination:                 Peer{Workload: "echo", Namespace: "b", Principal: "spiffe://cluster.local/ns/b/sa/echo", App: "echo", Version: "v1"},
		DestinationService:          "echo.b.svc.cluster.local",
		DestinationServiceName:      "echo",
		DestinationServiceNamespace: "b",
		RequestProtocol:             ProtocolHTTP,
		ResponseCode:                "200",
		SecurityPolicy:              MutualTLS,
	}
}

// BenchmarkLabelsSet is what a request would pay without a cache.
func BenchmarkLabelsSet(b *testing.B) {
	l := benchLabels()
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Set()
	}
}

// BenchmarkAttributeCacheHit is what it pays with one.
func BenchmarkAttributeCacheHit(b *testing.B) {
	l := benchLabels()
	c := NewAttributeCache(0)
	c.Get(l)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = c.Get(l)
		}
	})
}

func newBenchMetrics(b *testing.B) *RequestMetrics {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	req, err := NewRequestMetrics(p.Meter("bench"))
	if err != nil {
		b.Fatal(err)
	}
	return req
}

func BenchmarkRecord(b *testing.B) {
	req := newBenchMetrics(b)
	a := benchLabels().Attributes()
	ctx := context.Background()
	s := RequestSample{Duration: 2 * time.Millisecond, RequestBytes: 300, ResponseBytes: 4000}
	b.ReportAllocs()
	for b.Loop() {
		req.Record(ctx, a, s)
	}
}

// BenchmarkRequestWithSet is the older call with an attribute.Set, which
// records two metrics of the four.
func BenchmarkRequestWithSet(b *testing.B) {
	req := newBenchMetrics(b)
	set := benchLabels().Set()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		req.Request(ctx, set, 2*time.Millisecond)
	}
}

// BenchmarkRecordCachedParallel is the waypoint's per-request cost:
// look the labels up, record the request.
func BenchmarkRecordCachedParallel(b *testing.B) {
	req := newBenchMetrics(b)
	c := NewAttributeCache(0)
	l := benchLabels()
	ctx := context.Background()
	s := RequestSample{Duration: 2 * time.Millisecond, RequestBytes: 300, ResponseBytes: 4000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req.Record(ctx, c.Get(l), s)
		}
	})
}
