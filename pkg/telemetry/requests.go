package telemetry

import (
	"context"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Istio's request metrics are aggregated here rather than by the SDK's
// synchronous instruments: the SDK (v1.47) normalizes a measurement's
// attribute set on every call, walking each of the request labels through
// reflection, which cost a waypoint about 2.4 µs per request for four
// instruments. A requestStore counts each label set's requests in one
// place under one lock, and hands the totals to the Prometheus exporter
// as OpenTelemetry data (a metric.Producer) when it is scraped. The
// figures are those the SDK would report: cumulative, histograms exact
// (every value counted in its bucket, sum, count, min and max), the same
// bucket bounds, names, descriptions and labels, and the SDK's default
// limit on label sets per metric.

// seriesLimit is the most label sets a metric holds, the overflow set
// included, as the SDK's default cardinality limit: once it is reached,
// new label sets are counted under overflowAttrs.
const seriesLimit = 2000

// overflowAttrs is the label set of measurements beyond seriesLimit, as
// the SDK names it.
func overflowAttrs() attribute.Set {
	return attribute.NewSet(attribute.Bool("otel.metric.overflow", true))
}

// requestStore holds one meter's request series.
type requestStore struct {
	scope  instrumentation.Scope
	start  time.Time
	bounds []float64

	// series maps attribute.Distinct to *requestSeries; mu serializes
	// adding to it (reads take no lock).
	series   sync.Map
	mu       sync.Mutex
	n        int
	overflow *requestSeries
}

func newRequestStore(scope string) *requestStore {
	return &requestStore{scope: instrumentation.Scope{Name: scope}, start: time.Now(), bounds: istioBuckets()}
}

// requestSeries is one label set's requests. One lock covers its four
// metrics, so a scrape sees each request whole: the counter and every
// histogram's count agree.
type requestSeries struct {
	attrs attribute.Set

	mu       sync.Mutex
	requests int64
	duration histogramData[float64]
	reqBytes histogramData[int64]
	rspBytes histogramData[int64]
}

// histogramData is an explicit-bucket histogram's state.
type histogramData[N int64 | float64] struct {
	count    uint64
	counts   []uint64 // len(bounds)+1: the last is (bounds[len-1], +Inf)
	sum      N
	min, max N
}

func (h *histogramData[N]) record(bounds []float64, v N) {
	// The first bound at or above v: buckets are upper-inclusive, as the
	// SDK's and Prometheus's are.
	h.counts[sort.SearchFloat64s(bounds, float64(v))]++
	if h.count == 0 || v < h.min {
		h.min = v
	}
	if h.count == 0 || v > h.max {
		h.max = v
	}
	h.count++
	h.sum += v
}

func (h *histogramData[N]) point(attrs attribute.Set, bounds []float64, start, now time.Time) metricdata.HistogramDataPoint[N] {
	return metricdata.HistogramDataPoint[N]{
		Attributes:   attrs,
		StartTime:    start,
		Time:         now,
		Count:        h.count,
		Bounds:       bounds,
		BucketCounts: append([]uint64(nil), h.counts...),
		Min:          metricdata.NewExtrema(h.min),
		Max:          metricdata.NewExtrema(h.max),
		Sum:          h.sum,
	}
}

func (st *requestStore) newSeries(attrs attribute.Set) *requestSeries {
	n := len(st.bounds) + 1
	counts := make([]uint64, 3*n) // one allocation for the three histograms
	return &requestSeries{
		attrs:    attrs,
		duration: histogramData[float64]{counts: counts[:n:n]},
		reqBytes: histogramData[int64]{counts: counts[n : 2*n : 2*n]},
		rspBytes: histogramData[int64]{counts: counts[2*n:]},
	}
}

// lookup returns attrs' series, adding it if it is new and there is room.
func (st *requestStore) lookup(attrs attribute.Set) *requestSeries {
	key := attrs.Equivalent()
	if s, ok := st.series.Load(key); ok {
		return s.(*requestSeries)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.series.Load(key); ok {
		return s.(*requestSeries)
	}
	if st.n >= seriesLimit-1 {
		if st.overflow == nil {
			st.overflow = st.newSeries(overflowAttrs())
		}
		return st.overflow
	}
	s := st.newSeries(attrs)
	st.series.Store(key, s)
	st.n++
	return s
}

// record counts one request; withSizes is false for callers that measured
// no sizes (RequestMetrics.Request), whose label sets then have no size
// series, as with the SDK's instruments.
func (st *requestStore) record(attrs attribute.Set, d time.Duration, reqBytes, rspBytes int64, withSizes bool) {
	s := st.lookup(attrs)
	ms := float64(d) / float64(time.Millisecond)
	s.mu.Lock()
	s.requests++
	s.duration.record(st.bounds, ms)
	if withSizes {
		s.reqBytes.record(st.bounds, reqBytes)
		s.rspBytes.record(st.bounds, rspBytes)
	}
	s.mu.Unlock()
}

// collect appends the store's metrics, leaving out those without data.
func (st *requestStore) collect(now time.Time) metricdata.ScopeMetrics {
	var (
		requests          []metricdata.DataPoint[int64]
		durations         []metricdata.HistogramDataPoint[float64]
		reqSizes, rspSize []metricdata.HistogramDataPoint[int64]
	)
	each := func(s *requestSeries) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.requests == 0 {
			return
		}
		requests = append(requests, metricdata.DataPoint[int64]{Attributes: s.attrs, StartTime: st.start, Time: now, Value: s.requests})
		durations = append(durations, s.duration.point(s.attrs, st.bounds, st.start, now))
		if s.reqBytes.count > 0 {
			reqSizes = append(reqSizes, s.reqBytes.point(s.attrs, st.bounds, st.start, now))
			rspSize = append(rspSize, s.rspBytes.point(s.attrs, st.bounds, st.start, now))
		}
	}
	st.series.Range(func(_, v any) bool {
		each(v.(*requestSeries))
		return true
	})
	st.mu.Lock()
	overflow := st.overflow
	st.mu.Unlock()
	if overflow != nil {
		each(overflow)
	}
	sm := metricdata.ScopeMetrics{Scope: st.scope}
	if len(requests) > 0 {
		sm.Metrics = append(sm.Metrics,
			metricdata.Metrics{Name: Requests, Description: requestsDescription, Data: metricdata.Sum[int64]{
				DataPoints: requests, Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
			}},
			metricdata.Metrics{Name: RequestDuration, Description: durationDescription, Data: metricdata.Histogram[float64]{
				DataPoints: durations, Temporality: metricdata.CumulativeTemporality,
			}},
		)
	}
	if len(reqSizes) > 0 {
		sm.Metrics = append(sm.Metrics,
			metricdata.Metrics{Name: RequestBytes, Description: requestBytesDescription, Data: metricdata.Histogram[int64]{
				DataPoints: reqSizes, Temporality: metricdata.CumulativeTemporality,
			}},
			metricdata.Metrics{Name: ResponseBytes, Description: responseBytesDescription, Data: metricdata.Histogram[int64]{
				DataPoints: rspSize, Temporality: metricdata.CumulativeTemporality,
			}},
		)
	}
	return sm
}

// requestProducer hands the Prometheus exporter a Provider's request
// series, one store per meter name: instruments of one name on one meter
// are one instrument for the SDK, and so they are here.
type requestProducer struct {
	mu     sync.Mutex
	stores map[string]*requestStore
	order  []string // meter names in creation order, for a stable output
}

func (p *requestProducer) store(scope string) *requestStore {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.stores[scope]; ok {
		return st
	}
	if p.stores == nil {
		p.stores = make(map[string]*requestStore)
	}
	st := newRequestStore(scope)
	p.stores[scope] = st
	p.order = append(p.order, scope)
	return st
}

// Produce implements metric.Producer.
func (p *requestProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	p.mu.Lock()
	stores := make([]*requestStore, 0, len(p.order))
	for _, name := range p.order {
		stores = append(stores, p.stores[name])
	}
	p.mu.Unlock()
	now := time.Now()
	var out []metricdata.ScopeMetrics
	for _, st := range stores {
		if sm := st.collect(now); len(sm.Metrics) > 0 {
			out = append(out, sm)
		}
	}
	return out, nil
}
