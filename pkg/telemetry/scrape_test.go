package telemetry

import (
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// families scrapes p's handler, as Prometheus would, and parses the text.
func families(t *testing.T, p *Provider) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parsing the scrape: %v\n%s", err, rec.Body.String())
	}
	return mfs
}

// labelsOf returns m's labels as name → value.
func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// series finds the one series of family name whose labels are exactly want,
// failing if the family, its type or the series is missing.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, typ dto.MetricType, want map[string]string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("no family %s; have %v", name, slices.Sorted(maps.Keys(mfs)))
	}
	if mf.GetType() != typ {
		t.Fatalf("%s is a %v, want %v", name, mf.GetType(), typ)
	}
	for _, m := range mf.GetMetric() {
		if maps.Equal(labelsOf(m), want) {
			return m
		}
	}
	var have []map[string]string
	for _, m := range mf.GetMetric() {
		have = append(have, labelsOf(m))
	}
	t.Fatalf("%s has no series with labels\n%v\nhave\n%v", name, want, have)
	return nil
}
