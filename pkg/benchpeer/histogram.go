package benchpeer

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Histogram is a Prometheus histogram's cumulative buckets, summed over
// its series: Counts[i] observations were at most Bounds[i], Count in
// all (+Inf included).
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
}

// ScrapeHistogram fetches url, a Prometheus /metrics endpoint, and returns
// the histogram family name (as exported, "_seconds" and all).
func ScrapeHistogram(ctx context.Context, url, name string) (Histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Histogram{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Histogram{}, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Histogram{}, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return Histogram{}, fmt.Errorf("parsing %s: %w", url, err)
	}
	mf, ok := mfs[name]
	if !ok {
		return Histogram{}, fmt.Errorf("%s has no %s", url, name)
	}
	var h Histogram
	for _, m := range mf.GetMetric() {
		hm := m.GetHistogram()
		if hm == nil {
			return Histogram{}, fmt.Errorf("%s is not a histogram", name)
		}
		h.Count += hm.GetSampleCount()
		for _, b := range hm.GetBucket() {
			i, found := slices.BinarySearch(h.Bounds, b.GetUpperBound())
			if !found {
				h.Bounds = slices.Insert(h.Bounds, i, b.GetUpperBound())
				h.Counts = slices.Insert(h.Counts, i, 0)
			}
			h.Counts[i] += b.GetCumulativeCount()
		}
	}
	return h, nil
}

// Sub returns the observations h has beyond before, a scrape of the same
// histogram taken earlier.
func (h Histogram) Sub(before Histogram) Histogram {
	out := Histogram{Bounds: h.Bounds, Counts: slices.Clone(h.Counts), Count: h.Count - before.Count}
	for i, b := range h.Bounds {
		if j, ok := slices.BinarySearch(before.Bounds, b); ok {
			out.Counts[i] -= before.Counts[j]
		}
	}
	return out
}

// Quantile estimates the q-quantile (0 < q ≤ 1) as Prometheus's
// histogram_quantile does: linearly within the bucket it falls in, from 0
// in the first; the largest bound if it falls above it. It is NaN without
// observations.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	lower, below := 0.0, uint64(0)
	for i, b := range h.Bounds {
		if float64(h.Counts[i]) >= rank {
			in := h.Counts[i] - below
			if in == 0 {
				return b
			}
			return lower + (b-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = b, h.Counts[i]
	}
	return h.Bounds[len(h.Bounds)-1]
}

// Within returns the share of the observations that were at most bound,
// one of h.Bounds; NaN if it is none or there are no observations.
func (h Histogram) Within(bound float64) float64 {
	i, ok := slices.BinarySearch(h.Bounds, bound)
	if !ok || h.Count == 0 {
		return math.NaN()
	}
	return float64(h.Counts[i]) / float64(h.Count)
}
