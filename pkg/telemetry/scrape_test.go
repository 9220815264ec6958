package telemetry

import (
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/metric"
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

// sideBySide records the same measurements through record twice, on a
// Provider's Meter (sdk false) and on the SDK's own instruments (sdk true),
// and returns the lines of each scrape that contain family.
func sideBySide(t *testing.T, family string, record func(m metric.Meter, sdk bool)) (provider, sdk string) {
	t.Helper()
	var got [2]string
	for i, useSDK := range []bool{false, true} {
		p, err := NewProvider(ProviderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Shutdown(context.Background())
		m := p.Meter("test")
		if useSDK {
			m = p.mp.Meter("test") // not recognized: the SDK's instruments
		}
		record(m, useSDK)
		var b strings.Builder
		for line := range strings.Lines(scrape(t, p)) {
			if strings.Contains(line, family) {
				b.WriteString(line)
			}
		}
		got[i] = b.String()
	}
	return got[0], got[1]
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

// BenchmarkScrape is one Prometheus scrape of a ztunnel's metrics: the
// four TCP counters over series, with the Go and process collectors.
func BenchmarkScrape(b *testing.B) {
	for _, series := range []int{4, 40} {
		b.Run(fmt.Sprintf("series=%d", series), func(b *testing.B) {
			p, err := NewProvider(ProviderOptions{ProcessMetrics: true})
			if err != nil {
				b.Fatal(err)
			}
			m, err := NewTCPMetrics(p.Meter("ztunnel"))
			if err != nil {
				b.Fatal(err)
			}
			for i := range series {
				l := Labels{Reporter: ReporterDst, Source: Peer{Workload: fmt.Sprintf("load-%d", i), Namespace: "ns", Principal: "spiffe://cluster.local/ns/ns/sa/default"},
					Destination: Peer{Workload: "echo", Namespace: "ns"}, DestinationService: "echo.ns.svc.cluster.local", RequestProtocol: ProtocolTCP}
				s := l.Set()
				m.Opened(context.Background(), s)
				m.Closed(context.Background(), s)
				m.Bytes(context.Background(), s, 100, 200)
			}
			h := p.Handler()
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			}
		})
	}
}
