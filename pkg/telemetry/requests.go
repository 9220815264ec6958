package telemetry

import (
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Istio's request metrics are aggregated here rather than by the SDK's
// synchronous instruments: the SDK (v1.47) normalizes a measurement's
// attribute set on every call, walking each of the request labels through
// reflection, which cost a waypoint about 2.4 µs per request for four
// instruments. A requestStore counts each label set's requests in one
// place under one lock, and writes the totals to a scrape itself (see
// exposition.go). The figures are those the SDK would report: cumulative,
// histograms exact (every value counted in its bucket, sum and count), the
// same bucket bounds, names, descriptions and labels, and the SDK's
// default limit on label sets per metric.

// requestStore holds one meter's request series.
type requestStore struct {
	bounds []float64
	series seriesMap[requestSeries]
}

func newRequestStore() *requestStore {
	st := &requestStore{bounds: istioBuckets()}
	st.series.newSeries = st.newSeries
	return st
}

// requestSeries is one label set's requests. One lock covers its four
// metrics, so a scrape sees each request whole: the counter and every
// histogram's count agree.
type requestSeries struct {
	labels seriesLabels

	mu       sync.Mutex
	requests int64
	duration histogramData[float64]
	reqBytes histogramData[int64]
	rspBytes histogramData[int64]
}

// histogramData is an explicit-bucket histogram's state.
type histogramData[N int64 | float64] struct {
	count  uint64
	counts []uint64 // len(bounds)+1: the last is (bounds[len-1], +Inf)
	sum    N
}

func (h *histogramData[N]) record(bounds []float64, v N) {
	// The first bound at or above v: buckets are upper-inclusive, as the
	// SDK's and Prometheus's are.
	h.counts[sort.SearchFloat64s(bounds, float64(v))]++
	h.count++
	h.sum += v
}

func (st *requestStore) newSeries(attrs attribute.Set) *requestSeries {
	n := len(st.bounds) + 1
	counts := make([]uint64, 3*n) // one allocation for the three histograms
	return &requestSeries{
		labels:   newSeriesLabels(attrs),
		duration: histogramData[float64]{counts: counts[:n:n]},
		reqBytes: histogramData[int64]{counts: counts[n : 2*n : 2*n]},
		rspBytes: histogramData[int64]{counts: counts[2*n:]},
	}
}

// record counts one request; withSizes is false for callers that measured
// no sizes (RequestMetrics.Request), whose label sets then have no size
// series, as with the SDK's instruments.
func (st *requestStore) record(attrs attribute.Set, d time.Duration, reqBytes, rspBytes int64, withSizes bool) {
	s := st.series.lookup(attrs)
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

// requestPoint is one series' figures at a scrape, taken under its lock
// so that its four metrics agree.
type requestPoint struct {
	labels             *seriesLabels
	requests           int64
	duration           histogramData[float64]
	reqBytes, rspBytes histogramData[int64]
}

func (h histogramData[N]) clone() histogramData[N] {
	h.counts = slices.Clone(h.counts)
	return h
}

// points appends the figures of every series with requests.
func (st *requestStore) points(out []requestPoint) []requestPoint {
	for _, s := range st.series.appendAll(nil) {
		s.mu.Lock()
		if s.requests > 0 {
			out = append(out, requestPoint{labels: &s.labels, requests: s.requests,
				duration: s.duration.clone(), reqBytes: s.reqBytes.clone(), rspBytes: s.rspBytes.clone()})
		}
		s.mu.Unlock()
	}
	return out
}

// writeRequests writes the request families of stores, leaving out those
// without series.
func writeRequests(t *textWriter, stores []*requestStore) {
	var points []requestPoint
	for _, st := range stores {
		points = st.points(points)
	}
	if len(points) == 0 {
		return
	}
	bounds := stores[0].bounds
	slices.SortFunc(points, func(a, b requestPoint) int { return compareSeries(a.labels, b.labels) })
	sized := slices.ContainsFunc(points, func(p requestPoint) bool { return p.reqBytes.count > 0 })
	if sized {
		t.family(RequestBytes, requestBytesDescription, "histogram")
		for i := range points {
			if p := &points[i]; p.reqBytes.count > 0 {
				writeHistogram(t, RequestBytes, p.labels, bounds, &p.reqBytes)
			}
		}
	}
	t.family(RequestDuration, durationDescription, "histogram")
	for i := range points {
		writeHistogram(t, RequestDuration, points[i].labels, bounds, &points[i].duration)
	}
	t.family(Requests+"_total", requestsDescription, "counter")
	for i := range points {
		t.sample(Requests, "_total", points[i].labels, math.NaN(), float64(points[i].requests))
	}
	if sized {
		t.family(ResponseBytes, responseBytesDescription, "histogram")
		for i := range points {
			if p := &points[i]; p.rspBytes.count > 0 {
				writeHistogram(t, ResponseBytes, p.labels, bounds, &p.rspBytes)
			}
		}
	}
}

// writeHistogram writes one series of histogram name: its cumulative
// buckets, the +Inf bucket, the sum and the count.
func writeHistogram[N int64 | float64](t *textWriter, name string, l *seriesLabels, bounds []float64, h *histogramData[N]) {
	var cum uint64
	for i, b := range bounds {
		cum += h.counts[i]
		t.sample(name, "_bucket", l, b, float64(cum))
	}
	t.sample(name, "_bucket", l, math.Inf(+1), float64(h.count))
	t.sample(name, "_sum", l, math.NaN(), float64(h.sum))
	t.sample(name, "_count", l, math.NaN(), float64(h.count))
}
