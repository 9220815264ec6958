package telemetry

import (
	"context"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Envoy's default histogram bounds, which Istio's histograms use: written
// out again here so that a change to the package's copy is caught.
var wantIstioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

func TestRequestSeries(t *testing.T) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	req, err := NewRequestMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	grpc := Labels{
		Reporter:                    ReporterWaypoint,
		Source:                      Peer{Workload: "sleep", Namespace: "a", Principal: "spiffe://cluster.local/ns/a/sa/sleep"},
		Destination:                 Peer{Workload: "echo", Namespace: "b", Principal: "spiffe://cluster.local/ns/b/sa/echo", App: "echo", Version: "v1"},
		DestinationService:          "echo.b.svc.cluster.local",
		DestinationServiceName:      "echo",
		DestinationServiceNamespace: "b",
		RequestProtocol:             ProtocolGRPC,
		ResponseCode:                "200",
		GRPCResponseStatus:          GRPCStatus(14),
		SecurityPolicy:              MutualTLS,
	}
	http := grpc
	http.RequestProtocol, http.GRPCResponseStatus, http.ResponseCode = ProtocolHTTP, "", "503"

	cache := NewAttributeCache(0)
	ctx := context.Background()
	req.Record(ctx, cache.Get(grpc), RequestSample{Duration: 3 * time.Millisecond, RequestBytes: 700, ResponseBytes: 20})
	req.Record(ctx, cache.Get(grpc), RequestSample{Duration: 40 * time.Millisecond, RequestBytes: 70000, ResponseBytes: 5})
	req.Record(ctx, cache.Get(http), RequestSample{Duration: time.Second, RequestBytes: 0, ResponseBytes: 1 << 20})

	grpcLabels := map[string]string{
		"reporter":                       "waypoint",
		"source_workload":                "sleep",
		"source_workload_namespace":      "a",
		"source_principal":               "spiffe://cluster.local/ns/a/sa/sleep",
		"source_app":                     "unknown",
		"source_version":                 "unknown",
		"source_cluster":                 "unknown",
		"destination_service":            "echo.b.svc.cluster.local",
		"destination_service_name":       "echo",
		"destination_service_namespace":  "b",
		"destination_workload":           "echo",
		"destination_workload_namespace": "b",
		"destination_principal":          "spiffe://cluster.local/ns/b/sa/echo",
		"destination_app":                "echo",
		"destination_version":            "v1",
		"destination_cluster":            "unknown",
		"request_protocol":               "grpc",
		"response_code":                  "200",
		"grpc_response_status":           "14",
		"response_flags":                 "-",
		"connection_security_policy":     "mutual_tls",
	}
	httpLabels := maps.Clone(grpcLabels)
	httpLabels["request_protocol"], httpLabels["grpc_response_status"], httpLabels["response_code"] = "http", "", "503"

	mfs := families(t, p)
	for _, tc := range []struct {
		family string
		labels map[string]string
		count  uint64
		sum    float64
		// buckets are the cumulative counts at wantIstioBuckets.
		buckets []uint64
	}{
		{"istio_requests_total", grpcLabels, 2, 0, nil},
		{"istio_requests_total", httpLabels, 1, 0, nil},
		{"istio_request_duration_milliseconds", grpcLabels, 2, 43,
			[]uint64{0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}},
		{"istio_request_duration_milliseconds", httpLabels, 1, 1000,
			[]uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"istio_request_bytes", grpcLabels, 2, 70700,
			[]uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2}},
		{"istio_request_bytes", httpLabels, 1, 0,
			[]uint64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"istio_response_bytes", grpcLabels, 2, 25,
			[]uint64{0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}},
		{"istio_response_bytes", httpLabels, 1, 1 << 20,
			[]uint64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}},
	} {
		t.Run(tc.family+"/"+tc.labels["request_protocol"], func(t *testing.T) {
			if tc.buckets == nil {
				m := series(t, mfs, tc.family, dto.MetricType_COUNTER, tc.labels)
				if got := m.GetCounter().GetValue(); got != float64(tc.count) {
					t.Errorf("value %v, want %v", got, tc.count)
				}
				return
			}
			h := series(t, mfs, tc.family, dto.MetricType_HISTOGRAM, tc.labels).GetHistogram()
			if h.GetSampleCount() != tc.count || h.GetSampleSum() != tc.sum {
				t.Errorf("count %d sum %v, want %d and %v", h.GetSampleCount(), h.GetSampleSum(), tc.count, tc.sum)
			}
			var bounds []float64
			var counts []uint64
			for _, b := range h.GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
				counts = append(counts, b.GetCumulativeCount())
			}
			// The text format ends with the +Inf bucket, which holds all.
			if want := append(slices.Clone(wantIstioBuckets), math.Inf(1)); !slices.Equal(bounds, want) {
				t.Errorf("bucket bounds %v, want Istio's %v", bounds, want)
			}
			if want := append(slices.Clone(tc.buckets), tc.count); !slices.Equal(counts, want) {
				t.Errorf("bucket counts %v, want %v", counts, want)
			}
		})
	}
}
