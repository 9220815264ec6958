package tracing

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"
)

// Options configures New.
type Options struct {
	// Endpoint is the OTLP collector's gRPC address, host:port. Empty
	// turns tracing off.
	Endpoint string
	// Insecure sends spans in plaintext. Without it the connection uses
	// TLS, verified against the system's roots, whatever the
	// OTEL_EXPORTER_OTLP_* environment says.
	Insecure bool
	// ServiceName is the service.name of every span's resource; required
	// with an Endpoint.
	ServiceName string
	// SampleRatio is the share of new traces sampled, from 0 to 1. A
	// request that arrives with a trace context follows its caller's
	// decision instead, so a trace is never left with holes.
	SampleRatio float64
	// Logger gets export failures; nil discards them.
	Logger *slog.Logger
}

// Provider holds a proxy's tracer provider and propagator. Nothing is
// registered globally: the proxy passes its Provider where spans are made.
type Provider struct {
	tp   trace.TracerProvider
	sdk  *sdktrace.TracerProvider // nil when tracing is off
	prop propagation.TextMapPropagator
}

// New returns a Provider exporting to o.Endpoint over OTLP/gRPC, or,
// when o.Endpoint is empty, one that is off: its tracers are no-ops and
// StartRequest, EndRequest and Inject do nothing at no cost. It does not
// wait for the collector: spans are batched and sent in the background,
// and dropped, never waited for, when the collector falls behind.
//
// The exporter still reads OTEL_EXPORTER_OTLP_* variables for what o does
// not set (headers, compression, timeout).
func New(ctx context.Context, o Options) (*Provider, error) {
	return newProvider(ctx, o, nil)
}

// newProvider is New with extra exporter options, for tests.
func newProvider(ctx context.Context, o Options, extra []otlptracegrpc.Option) (*Provider, error) {
	if o.Endpoint == "" {
		return &Provider{tp: noop.NewTracerProvider(), prop: newPropagator()}, nil
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(o.Endpoint)}
	if o.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		// Explicit credentials, so that OTEL_EXPORTER_OTLP_INSECURE cannot
		// turn TLS off behind the caller's back.
		opts = append(opts, otlptracegrpc.WithTLSCredentials(
			credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})))
	}
	exp, err := otlptracegrpc.New(ctx, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("tracing: creating OTLP trace exporter for %s: %w", o.Endpoint, err)
	}
	return newSDKProvider(exp, o), nil
}

// newSDKProvider builds the SDK provider around exp.
func newSDKProvider(exp sdktrace.SpanExporter, o Options) *Provider {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(newLoggingExporter(exp, log, time.Now)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
		// Schemaless and built here: resource.Default would add the SDK's
		// attributes and read OTEL_RESOURCE_ATTRIBUTES.
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(o.ServiceName))),
	)
	return &Provider{tp: tp, sdk: tp, prop: newPropagator()}
}

func (o Options) validate() error {
	if strings.Contains(o.Endpoint, "://") {
		return fmt.Errorf("tracing: tracing endpoint %q: want host:port, not a URL", o.Endpoint)
	}
	host, port, err := net.SplitHostPort(o.Endpoint)
	if err != nil {
		return fmt.Errorf("tracing: tracing endpoint %q: want host:port: %w", o.Endpoint, err)
	}
	if host == "" {
		return fmt.Errorf("tracing: tracing endpoint %q: no host", o.Endpoint)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("tracing: tracing endpoint %q: port %q is not a number from 1 to 65535", o.Endpoint, port)
	}
	if math.IsNaN(o.SampleRatio) || o.SampleRatio < 0 || o.SampleRatio > 1 {
		return fmt.Errorf("tracing: tracing sample ratio %v is not between 0 and 1", o.SampleRatio)
	}
	if o.ServiceName == "" {
		return errors.New("tracing: tracing needs a service name")
	}
	return nil
}

// newPropagator reads and writes W3C trace context and baggage, the
// headers Istio's proxies and ztunnel pass on.
func newPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Enabled reports whether spans are exported.
func (p *Provider) Enabled() bool { return p.sdk != nil }

// Tracer returns a named tracer: a no-op one when tracing is off.
func (p *Provider) Tracer(name string) trace.Tracer { return p.tp.Tracer(name) }

// Propagator returns the W3C trace context and baggage propagator.
func (p *Provider) Propagator() propagation.TextMapPropagator { return p.prop }

// Shutdown sends the spans still batched and stops exporting; ctx bounds
// how long it waits for the collector.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutting tracing down: %w", err)
	}
	return nil
}

// exportErrorInterval spaces the logging of a failing collector: one line
// per interval, with the count of batches lost since the last line.
const exportErrorInterval = time.Minute

// loggingExporter reports export failures to a logger, at most once per
// exportErrorInterval while they last and once when exporting recovers.
// It swallows the errors: returned, the SDK would hand them to OTel's
// global error handler too, which logs through the process-wide logger.
type loggingExporter struct {
	sdktrace.SpanExporter
	log *slog.Logger
	now func() time.Time

	mu          sync.Mutex
	failing     bool
	lastLog     time.Time
	lostSpans   int // since the last line
	lostBatches int
}

func newLoggingExporter(exp sdktrace.SpanExporter, log *slog.Logger, now func() time.Time) *loggingExporter {
	return &loggingExporter{SpanExporter: exp, log: log, now: now}
}

// ExportSpans exports spans, and logs how it went if that is news.
func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if err == nil {
		if e.failing {
			e.log.Info("trace export recovered", "lost_spans", e.lostSpans, "lost_batches", e.lostBatches)
			e.failing, e.lostSpans, e.lostBatches = false, 0, 0
		}
		return nil
	}
	e.lostSpans += len(spans)
	e.lostBatches++
	if !e.failing || now.Sub(e.lastLog) >= exportErrorInterval {
		e.log.Warn("trace export failed", "err", err, "lost_spans", e.lostSpans, "lost_batches", e.lostBatches)
		e.failing, e.lastLog, e.lostSpans, e.lostBatches = true, now, 0, 0
	}
	return nil
}
