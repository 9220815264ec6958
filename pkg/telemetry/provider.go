package telemetry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	// requests holds the request metrics its meters' RequestMetrics
	// aggregate, for the exporter.
	requests *requestProducer
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
	requests := &requestProducer{}
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithProducer(requests),
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
	return &Provider{registry: reg, mp: mp, requests: requests}, nil
}

// Meter returns a named Meter. NewRequestMetrics recognizes it, and
// records Istio's request metrics on it without the SDK's per-measurement
// cost.
func (p *Provider) Meter(name string) metric.Meter {
	return providerMeter{Meter: p.mp.Meter(name), p: p, name: name}
}

// providerMeter is a Provider's Meter, known by the Provider and name.
type providerMeter struct {
	metric.Meter
	p    *Provider
	name string
}

// Handler serves the metrics (for /metrics), uncompressed: scrapes stay
// inside the cluster and are a few kilobytes, and a gzip writer costs
// about a megabyte of heap, kept between scrapes, in every process.
func (p *Provider) Handler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{DisableCompression: true})
}

// Gatherer exposes the registry, for tests and for adding collectors.
func (p *Provider) Gatherer() prometheus.Gatherer { return p.registry }

// Shutdown flushes and stops the MeterProvider.
func (p *Provider) Shutdown(ctx context.Context) error { return p.mp.Shutdown(ctx) }
