package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/metric"
)

// TestRequestStoreMatchesSDK holds the Provider's own aggregation to what
// the SDK's instruments report for the same measurements: the same
// families, labels, bucket counts, counts and sums, byte for byte.
func TestRequestStoreMatchesSDK(t *testing.T) {
	base := Labels{Reporter: ReporterWaypoint, RequestProtocol: ProtocolHTTP, ResponseCode: "200", SecurityPolicy: MutualTLS, DestinationService: "echo.b.svc.cluster.local"}
	with := func(f func(*Labels)) Labels { l := base; f(&l); return l }
	type call struct {
		labels Labels
		sample RequestSample
		// countOnly records through Request, without sizes.
		countOnly bool
	}
	var bounds []call
	for _, b := range istioBuckets() {
		// On a bound, just under and just over: buckets are upper-inclusive.
		for _, d := range []time.Duration{time.Duration(b * float64(time.Millisecond)), time.Duration(b*float64(time.Millisecond)) - 1, time.Duration(b*float64(time.Millisecond)) + 1} {
			bounds = append(bounds, call{labels: base, sample: RequestSample{Duration: d, RequestBytes: int64(b), ResponseBytes: int64(b) + 1}})
		}
	}
	var many []call
	for i := range seriesLimit + 50 {
		many = append(many, call{labels: with(func(l *Labels) { l.Source.Workload = fmt.Sprint("w", i) }), sample: RequestSample{Duration: time.Duration(i) * time.Microsecond, RequestBytes: int64(i)}})
	}
	for _, tc := range []struct {
		name  string
		calls []call
	}{
		{"none", nil},
		{"one", []call{{labels: base, sample: RequestSample{Duration: 3 * time.Millisecond, RequestBytes: 700, ResponseBytes: 20}}}},
		{"bucket bounds", bounds},
		{"negative and zero", []call{
			{labels: base, sample: RequestSample{Duration: -time.Second, RequestBytes: -5, ResponseBytes: -1}},
			{labels: base, sample: RequestSample{}},
		}},
		{"large", []call{{labels: base, sample: RequestSample{Duration: 100 * time.Hour, RequestBytes: 1 << 40, ResponseBytes: 1 << 50}}}},
		{"count only", []call{
			{labels: with(func(l *Labels) { l.ResponseCode = "503" }), sample: RequestSample{Duration: time.Millisecond}, countOnly: true},
			{labels: base, sample: RequestSample{Duration: 2 * time.Millisecond, RequestBytes: 1}},
			{labels: base, sample: RequestSample{Duration: 7 * time.Millisecond}, countOnly: true},
		}},
		{"several label sets", []call{
			{labels: base, sample: RequestSample{Duration: time.Millisecond}},
			{labels: with(func(l *Labels) { l.ResponseFlags = "UF,URX" }), sample: RequestSample{Duration: 30 * time.Second}},
			{labels: with(func(l *Labels) { l.RequestProtocol, l.GRPCResponseStatus = ProtocolGRPC, "14" }), sample: RequestSample{Duration: 9 * time.Millisecond}},
			{labels: base, sample: RequestSample{Duration: 1500 * time.Microsecond}},
		}},
		{"beyond the label set limit", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			got[0], got[1] = sideBySide(t, "istio_request", func(m metric.Meter, sdk bool) {
				req, err := NewRequestMetrics(m)
				if err != nil {
					t.Fatal(err)
				}
				if (req.store == nil) != sdk {
					t.Fatalf("SDK meter %v: local aggregation %v", sdk, req.store != nil)
				}
				cache := NewAttributeCache(0)
				for _, c := range tc.calls {
					if c.countOnly {
						req.Request(context.Background(), c.labels.Set(), c.sample.Duration)
					} else {
						req.Record(context.Background(), cache.Get(c.labels), c.sample)
					}
				}
			})
			if got[0] != got[1] {
				t.Errorf("the Provider's aggregation scrapes\n%s\nthe SDK's\n%s", got[0], got[1])
			}
			if len(tc.calls) > 0 && !strings.Contains(got[0], "istio_requests_total{") {
				t.Errorf("no requests in\n%s", got[0])
			}
		})
	}
}

// TestRequestStoreConcurrent records from many goroutines while scraping:
// every scrape sees whole requests (each histogram's count equals the
// counter) and the last sees them all.
func TestRequestStoreConcurrent(t *testing.T) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	req, err := NewRequestMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	// A second RequestMetrics on the same meter is the same instrument.
	req2, err := NewRequestMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	cache := NewAttributeCache(0)
	const goroutines, each = 8, 500
	check := func(final bool) {
		mfs := families(t, p)
		if _, ok := mfs["istio_requests_total"]; !ok {
			if final {
				t.Fatal("no istio_requests_total")
			}
			return
		}
		for _, m := range mfs["istio_requests_total"].GetMetric() {
			want := labelsOf(m)
			n := uint64(m.GetCounter().GetValue())
			for _, fam := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
				h := series(t, mfs, fam, dto.MetricType_HISTOGRAM, want).GetHistogram()
				if h.GetSampleCount() != n {
					t.Errorf("%s count %d, counter %d", fam, h.GetSampleCount(), n)
				}
			}
			if final && n != goroutines*each/2 {
				t.Errorf("%v: %d requests, want %d", want["response_code"], n, goroutines*each/2)
			}
		}
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := req
			if g%2 == 1 {
				r = req2
			}
			for i := range each {
				l := Labels{Reporter: ReporterWaypoint, ResponseCode: fmt.Sprint(200 + i%2)}
				r.Record(context.Background(), cache.Get(l), RequestSample{Duration: time.Duration(i) * time.Millisecond, RequestBytes: int64(i), ResponseBytes: 1})
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			check(false)
		}
	})
	wg.Wait()
	check(true)
}

// BenchmarkRecordSDK is Record through the SDK's instruments (a Meter the
// Provider did not hand out), for comparison with BenchmarkRecord.
func BenchmarkRecordSDK(b *testing.B) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	req, err := NewRequestMetrics(p.mp.Meter("bench"))
	if err != nil {
		b.Fatal(err)
	}
	a := benchLabels().Attributes()
	ctx := context.Background()
	s := RequestSample{Duration: 2 * time.Millisecond, RequestBytes: 300, ResponseBytes: 4000}
	b.ReportAllocs()
	for b.Loop() {
		req.Record(ctx, a, s)
	}
}
