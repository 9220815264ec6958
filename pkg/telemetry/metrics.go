package telemetry

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
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
	RequestBytes         = "istio_request_bytes"
	ResponseBytes        = "istio_response_bytes"
)

// istioBuckets are the bucket bounds of Istio's histograms: Istio's proxy
// records them as Envoy histograms, and Istio's bootstrap sets no
// histogram_bucket_settings unless a pod asks for its own with the
// sidecar.istio.io/statsHistogramBuckets annotation, so durations (in
// milliseconds) and request and response sizes (in bytes) alike get Envoy's
// default bounds (HistogramSettingsImpl::defaultBuckets in Envoy's
// source/common/stats/histogram_impl.cc).
func istioBuckets() []float64 {
	return []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
}

// istioViews give Istio's histograms Istio's bucket bounds.
func istioViews() []sdkmetric.View {
	var views []sdkmetric.View
	for _, name := range []string{RequestDuration, RequestBytes, ResponseBytes} {
		views = append(views, sdkmetric.NewView(
			sdkmetric.Instrument{Name: name},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: istioBuckets()}},
		))
	}
	return views
}

// TCPMetrics records Istio's TCP metrics. Received bytes are those sent by
// the client towards the server, sent bytes those going back, whichever
// side reports. On a Provider's Meter it counts them itself and the
// Provider writes them to a scrape (see exposition.go); on any other Meter
// it records through that Meter's instruments.
type TCPMetrics struct {
	store *tcpStore

	opened, closed, received, sent metric.Int64Counter
}

// Descriptions of Istio's TCP metrics.
const (
	tcpClosedDescription   = "Total TCP connections closed"
	tcpOpenedDescription   = "Total TCP connections opened"
	tcpReceivedDescription = "Total bytes received, from client to server"
	tcpSentDescription     = "Total bytes sent, from server to client"
)

// tcpFamilies are the TCP metrics as a scrape lists them, by name; a
// tcpSeries' counts are in this order.
var tcpFamilies = [...]struct{ name, descr string }{
	{TCPConnectionsClosed, tcpClosedDescription},
	{TCPConnectionsOpened, tcpOpenedDescription},
	{TCPReceivedBytes, tcpReceivedDescription},
	{TCPSentBytes, tcpSentDescription},
}

// NewTCPMetrics creates the instruments on m.
func NewTCPMetrics(m metric.Meter) (*TCPMetrics, error) {
	if pm, ok := m.(providerMeter); ok {
		return &TCPMetrics{store: pm.p.istio.tcpStore(pm.name)}, nil
	}
	var t TCPMetrics
	var err error
	for _, c := range []struct {
		dst         *metric.Int64Counter
		name, descr string
	}{
		{&t.opened, TCPConnectionsOpened, tcpOpenedDescription},
		{&t.closed, TCPConnectionsClosed, tcpClosedDescription},
		{&t.received, TCPReceivedBytes, tcpReceivedDescription},
		{&t.sent, TCPSentBytes, tcpSentDescription},
	} {
		if *c.dst, err = m.Int64Counter(c.name, metric.WithDescription(c.descr)); err != nil {
			return nil, fmt.Errorf("telemetry: creating %s: %w", c.name, err)
		}
	}
	return &t, nil
}

// Opened counts a connection opened.
func (t *TCPMetrics) Opened(ctx context.Context, attrs attribute.Set) {
	if t.store != nil {
		t.store.series.lookup(attrs).counts[tcpOpened].Add(1)
		return
	}
	t.opened.Add(ctx, 1, metric.WithAttributeSet(attrs))
}

// Closed counts a connection closed.
func (t *TCPMetrics) Closed(ctx context.Context, attrs attribute.Set) {
	if t.store != nil {
		t.store.series.lookup(attrs).counts[tcpClosed].Add(1)
		return
	}
	t.closed.Add(ctx, 1, metric.WithAttributeSet(attrs))
}

// Bytes adds bytes transferred: received from the client, sent to it.
func (t *TCPMetrics) Bytes(ctx context.Context, attrs attribute.Set, received, sent int64) {
	if received <= 0 && sent <= 0 {
		return
	}
	if t.store != nil {
		s := t.store.series.lookup(attrs)
		if received > 0 {
			s.counts[tcpReceived].Add(received)
		}
		if sent > 0 {
			s.counts[tcpSent].Add(sent)
		}
		return
	}
	opt := metric.WithAttributeSet(attrs)
	if received > 0 {
		t.received.Add(ctx, received, opt)
	}
	if sent > 0 {
		t.sent.Add(ctx, sent, opt)
	}
}

// The TCP counters of a tcpSeries, in tcpFamilies' order.
const (
	tcpClosed = iota
	tcpOpened
	tcpReceived
	tcpSent
)

// tcpStore holds one meter's TCP series.
type tcpStore struct {
	series seriesMap[tcpSeries]
}

func newTCPStore() *tcpStore {
	return &tcpStore{series: seriesMap[tcpSeries]{newSeries: func(attrs attribute.Set) *tcpSeries {
		return &tcpSeries{labels: newSeriesLabels(attrs)}
	}}}
}

// tcpSeries is one label set's counters. Every count added is positive,
// so a counter at zero has had nothing added, and a scrape leaves it out,
// as the SDK does.
type tcpSeries struct {
	labels seriesLabels
	counts [4]atomic.Int64
}

// writeTCP writes the TCP families of stores, leaving out those without
// series.
func writeTCP(t *textWriter, stores []*tcpStore) {
	var series []*tcpSeries
	for _, st := range stores {
		series = st.series.appendAll(series)
	}
	slices.SortFunc(series, func(a, b *tcpSeries) int { return compareSeries(&a.labels, &b.labels) })
	for i, f := range tcpFamilies {
		started := false
		for _, s := range series {
			v := s.counts[i].Load()
			if v == 0 {
				continue
			}
			if !started {
				t.family(f.name+"_total", f.descr, "counter")
				started = true
			}
			t.sample(f.name, "_total", &s.labels, math.NaN(), float64(v))
		}
	}
}

// Descriptions of Istio's request metrics.
const (
	requestsDescription      = "Total requests"
	durationDescription      = "Request duration in milliseconds"
	requestBytesDescription  = "Request size in bytes"
	responseBytesDescription = "Response size in bytes"
)

// RequestMetrics records Istio's HTTP and gRPC request metrics:
// istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes and istio_response_bytes. On a Provider's Meter it
// aggregates them itself and the Provider writes them to a scrape (see
// requests.go: the SDK's instruments cost microseconds per request); on
// any other Meter it records through that Meter's instruments.
type RequestMetrics struct {
	store *requestStore

	requests           metric.Int64Counter
	duration           metric.Float64Histogram
	reqBytes, rspBytes metric.Int64Histogram
}

// NewRequestMetrics creates the instruments on m.
func NewRequestMetrics(m metric.Meter) (*RequestMetrics, error) {
	if pm, ok := m.(providerMeter); ok {
		return &RequestMetrics{store: pm.p.istio.requestStore(pm.name)}, nil
	}
	var r RequestMetrics
	var err error
	if r.requests, err = m.Int64Counter(Requests, metric.WithDescription(requestsDescription)); err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", Requests, err)
	}
	if r.duration, err = m.Float64Histogram(RequestDuration, metric.WithDescription(durationDescription)); err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", RequestDuration, err)
	}
	// No unit, as for the duration: the names are Istio's as they stand,
	// and with a unit the exporter could add a suffix of its own.
	if r.reqBytes, err = m.Int64Histogram(RequestBytes, metric.WithDescription(requestBytesDescription)); err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", RequestBytes, err)
	}
	if r.rspBytes, err = m.Int64Histogram(ResponseBytes, metric.WithDescription(responseBytesDescription)); err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", ResponseBytes, err)
	}
	return &r, nil
}

// RequestSample is what a proxy measured of one request.
type RequestSample struct {
	// Duration runs from the request's first byte to the response's last.
	Duration time.Duration
	// RequestBytes and ResponseBytes count what crossed the client's
	// connection for this request, headers included: Istio's proxy
	// records its downstream wire byte counts.
	RequestBytes, ResponseBytes int64
}

// Record records one completed request in all four metrics. a should come
// from Labels with ResponseCode set, through an AttributeCache; Record
// then does not allocate.
func (r *RequestMetrics) Record(ctx context.Context, a Attributes, s RequestSample) {
	d, reqBytes, rspBytes := max(s.Duration, 0), max(s.RequestBytes, 0), max(s.ResponseBytes, 0)
	if r.store != nil {
		r.store.record(a.set, d, reqBytes, rspBytes, true)
		return
	}
	r.requests.Add(ctx, 1, a.add...)
	r.duration.Record(ctx, float64(d)/float64(time.Millisecond), a.rec...)
	r.reqBytes.Record(ctx, reqBytes, a.rec...)
	r.rspBytes.Record(ctx, rspBytes, a.rec...)
}

// Request records one completed request's count and duration only, for
// callers holding an attribute.Set; attrs should include the response code
// (Labels.ResponseCode). Record records sizes too, and through the SDK's
// instruments it does not allocate where Request does.
func (r *RequestMetrics) Request(ctx context.Context, attrs attribute.Set, d time.Duration) {
	if r.store != nil {
		r.store.record(attrs, d, 0, 0, false)
		return
	}
	opt := metric.WithAttributeSet(attrs)
	r.requests.Add(ctx, 1, opt)
	r.duration.Record(ctx, float64(d)/float64(time.Millisecond), opt)
}
