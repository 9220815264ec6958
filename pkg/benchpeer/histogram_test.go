package benchpeer

import (
	"math"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestHistogramQuantile(t *testing.T) {
	h := Histogram{Bounds: []float64{1, 2, 4}, Counts: []uint64{50, 90, 99}, Count: 100}
	for _, tc := range []struct {
		q, want float64
	}{
		{0.25, 0.5},  // halfway into the first bucket, from 0
		{0.5, 1},     // its top
		{0.7, 1.5},   // halfway through (1, 2]
		{0.99, 4},    // the top of the last bucket
		{0.995, 4},   // above every bound: the largest
		{0.945, 3.0}, // halfway through (2, 4]
	} {
		if got := h.Quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (Histogram{}).Quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty Quantile = %v, want NaN", got)
	}
	if got := h.Within(2); got != 0.9 {
		t.Errorf("Within(2) = %v, want 0.9", got)
	}
	if got := h.Within(3); !math.IsNaN(got) {
		t.Errorf("Within(3), not a bound, = %v, want NaN", got)
	}
}

// A scrape of a real registry, two series summed, and the difference of
// two scrapes.
func TestScrapeHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	hv := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "calls_seconds", Buckets: []float64{0.001, 0.01},
	}, []string{"kind"})
	reg.MustRegister(hv)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	hv.WithLabelValues("a").Observe(0.0005)
	before, err := ScrapeHistogram(t.Context(), srv.URL, "calls_seconds")
	if err != nil {
		t.Fatal(err)
	}
	hv.WithLabelValues("a").Observe(0.005)
	hv.WithLabelValues("b").Observe(0.0001)
	hv.WithLabelValues("b").Observe(1)
	after, err := ScrapeHistogram(t.Context(), srv.URL, "calls_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != 4 || after.Counts[0] != 2 || after.Counts[1] != 3 {
		t.Fatalf("after = %+v, want 4 in all, 2 ≤ 1 ms, 3 ≤ 10 ms", after)
	}
	d := after.Sub(before)
	if d.Count != 3 || d.Counts[0] != 1 || d.Counts[1] != 2 {
		t.Fatalf("difference = %+v, want 3 in all, 1 ≤ 1 ms, 2 ≤ 10 ms", d)
	}
	if _, err := ScrapeHistogram(t.Context(), srv.URL, "missing_seconds"); err == nil {
		t.Error("a missing family scraped without an error")
	}
}
