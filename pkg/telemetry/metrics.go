package telemetry

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Istio's metric names (the Prometheus exporter adds "_total" to counters).
const (
	TCPConnectionsOpened = "istio_tcp_connections_opened"
	TCPConnectionsClosed = "istio_tcp_connections_closed"
	TCPReceivedBytes     = "istio_tcp_received_bytes"
	TCPSentBytes         = "istio_tcp_sent_bytes"
	Requests             = "istio_requests"
	RequestDuration      = "istio_request_duration_milliseconds"
)

// requestDurationBuckets are Istio's bucket bounds for request durations,
// in milliseconds.
var requestDurationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

var durationView = sdkmetric.NewView(
	sdkmetric.Instrument{Name: RequestDuration},
	sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: requestDurationBuckets}},
)

// TCPMetrics records Istio's TCP metrics. Received bytes are those sent by
// the client towards the server, sent bytes those going back, whichever
// side reports.
type TCPMetrics struct {
	opened, closed, received, sent metric.Int64Counter
}

// NewTCPMetrics creates the instruments on m.
func NewTCPMetrics(m metric.Meter) (*TCPMetrics, error) {
	var t TCPMetrics
	var err error
	for _, c := range []struct {
		dst         *metric.Int64Counter
		name, descr string
	}{
		{&t.opened, TCPConnectionsOpened, "Total TCP connections opened"},
		{&t.closed, TCPConnectionsClosed, "Total TCP connections closed"},
		{&t.received, TCPReceivedBytes, "Total bytes received, from client to server"},
		{&t.sent, TCPSentBytes, "Total bytes sent, from server to client"},
	} {
		if *c.dst, err = m.Int64Counter(c.name, metric.WithDescription(c.descr)); err != nil {
			return nil, fmt.Errorf("telemetry: creating %s: %w", c.name, err)
		}
	}
	return &t, nil
}

// Opened counts a connection opened.
func (t *TCPMetrics) Opened(ctx context.Context, attrs attribute.Set) {
	t.opened.Add(ctx, 1, metric.WithAttributeSet(attrs))
}

// Closed counts a connection closed.
func (t *TCPMetrics) Closed(ctx context.Context, attrs attribute.Set) {
	t.closed.Add(ctx, 1, metric.WithAttributeSet(attrs))
}

// Bytes adds bytes transferred: received from the client, sent to it.
func (t *TCPMetrics) Bytes(ctx context.Context, attrs attribute.Set, received, sent int64) {
	opt := metric.WithAttributeSet(attrs)
	if received > 0 {
		t.received.Add(ctx, received, opt)
	}
	if sent > 0 {
		t.sent.Add(ctx, sent, opt)
	}
}

// RequestMetrics records Istio's HTTP and gRPC request metrics.
type RequestMetrics struct {
	requests metric.Int64Counter
	duration metric.Float64Histogram
}

// NewRequestMetrics creates the instruments on m.
func NewRequestMetrics(m metric.Meter) (*RequestMetrics, error) {
	req, err := m.Int64Counter(Requests, metric.WithDescription("Total requests"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", Requests, err)
	}
	dur, err := m.Float64Histogram(RequestDuration, metric.WithDescription("Request duration in milliseconds"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", RequestDuration, err)
	}
	return &RequestMetrics{requests: req, duration: dur}, nil
}

// Request records one completed request; attrs should include the
// response code (Labels.ResponseCode).
func (r *RequestMetrics) Request(ctx context.Context, attrs attribute.Set, d time.Duration) {
	opt := metric.WithAttributeSet(attrs)
	r.requests.Add(ctx, 1, opt)
	r.duration.Record(ctx, float64(d)/float64(time.Millisecond), opt)
}
