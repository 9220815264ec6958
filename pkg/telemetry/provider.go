package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Provider is a MeterProvider whose metrics are served in the Prometheus
// text format by Handler. Each Provider has its own registry: nothing is
// registered globally.
type Provider struct {
	registry *prometheus.Registry
	mp       *sdkmetric.MeterProvider
	// istio holds the Istio metrics its meters' TCPMetrics and
	// RequestMetrics aggregate; Handler writes them.
	istio *istioStores
}

// ProviderOptions configures NewProvider.
type ProviderOptions struct {
	// ProcessMetrics adds the Go runtime and process collectors
	// (go_*, process_*), as every Prometheus target usually has.
	ProcessMetrics bool
}

// NewProvider returns a Provider. Metric names are exported as written
// (Istio's names already carry their unit), counters get the "_total"
// suffix, and no OpenTelemetry scope or target labels are added, so series
// look exactly like Istio's.
func NewProvider(opts ProviderOptions) (*Provider, error) {
	reg := prometheus.NewRegistry()
	if opts.ProcessMetrics {
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			return nil, fmt.Errorf("telemetry: registering Go collector: %w", err)
		}
		if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return nil, fmt.Errorf("telemetry: registering process collector: %w", err)
		}
	}
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating Prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exp),
		sdkmetric.WithView(istioViews()...),
	)
	return &Provider{registry: reg, mp: mp, istio: &istioStores{}}, nil
}

// Meter returns a named Meter. NewTCPMetrics and NewRequestMetrics
// recognize it, and record Istio's metrics on it without the SDK's
// per-measurement and per-scrape costs.
func (p *Provider) Meter(name string) metric.Meter {
	return providerMeter{Meter: p.mp.Meter(name), p: p, name: name}
}

// providerMeter is a Provider's Meter, known by the Provider and name.
type providerMeter struct {
	metric.Meter
	p    *Provider
	name string
}

// Handler serves the metrics (for /metrics) in the text format, Istio's
// first, uncompressed: scrapes stay inside the cluster and are a few
// kilobytes, and a gzip writer costs about a megabyte of heap, kept
// between scrapes, in every process.
func (p *Provider) Handler() http.Handler {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Gathered first, so that a failure is a 500, not half a scrape.
		mfs, err := p.registry.Gather()
		if err != nil {
			http.Error(w, "gathering metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(format))
		bw := bufio.NewWriter(w)
		p.istio.write(&textWriter{w: bw})
		enc := expfmt.NewEncoder(bw, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return // the scraper went away
			}
		}
		bw.Flush()
	})
}

// Shutdown flushes and stops the MeterProvider.
func (p *Provider) Shutdown(ctx context.Context) error { return p.mp.Shutdown(ctx) }

// istioStores holds a Provider's Istio series, one store per meter name and
// kind: instruments of one name on one meter are one instrument for the
// SDK, and so they are here. A scrape lists each family's series of all
// meters together.
type istioStores struct {
	mu       sync.Mutex
	tcp      map[string]*tcpStore
	requests map[string]*requestStore
}

func (s *istioStores) tcpStore(meter string) *tcpStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return storeFor(&s.tcp, meter, newTCPStore)
}

func (s *istioStores) requestStore(meter string) *requestStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return storeFor(&s.requests, meter, newRequestStore)
}

// storeFor returns the meter's store in *stores, adding one from newStore
// if it has none.
func storeFor[S any](stores *map[string]*S, meter string, newStore func() *S) *S {
	if st, ok := (*stores)[meter]; ok {
		return st
	}
	if *stores == nil {
		*stores = make(map[string]*S)
	}
	st := newStore()
	(*stores)[meter] = st
	return st
}

// write writes every Istio family with series, in name order.
func (s *istioStores) write(t *textWriter) {
	s.mu.Lock()
	tcp := slices.Collect(maps.Values(s.tcp))
	requests := slices.Collect(maps.Values(s.requests))
	s.mu.Unlock()
	// istio_request*, istio_response_bytes, then istio_tcp_*.
	writeRequests(t, requests)
	writeTCP(t, tcp)
}
