package tracing

import (
	"context"
	"net"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the request spans.
const tracerName = "github.com/skiffmesh/skiff/pkg/telemetry/tracing"

// StartRequest starts the span of one request a proxy received, named
// name (Istio's proxies name it after the destination, "host:port/*"). It
// continues the trace of r's traceparent and baggage headers, or starts a
// new one, and returns the context to pass to Inject for the upstream
// request and the span to pass to EndRequest. When tracing is off it
// returns ctx and a span that does nothing, allocating nothing.
func (p *Provider) StartRequest(ctx context.Context, r *http.Request, name string) (context.Context, trace.Span) {
	if p.sdk == nil {
		// The no-op span that SpanFromContext keeps for contexts without
		// one: the caller may End it, it records nothing.
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = p.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	return p.sdk.Tracer(tracerName).Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.URLPath(r.URL.Path),
			semconv.ServerAddress(hostOnly(r.Host)),
		))
}

// hostOnly drops the port from an authority, as server.address wants.
func hostOnly(authority string) string {
	if host, _, err := net.SplitHostPort(authority); err == nil {
		return host
	}
	return authority
}

// EndRequest records the response status on span and ends it. As OTel's
// HTTP conventions say for servers, a 5xx status marks the span as an
// error and a 4xx does not; status 0 means no response was sent, an error
// too.
func (p *Provider) EndRequest(span trace.Span, status int) {
	if span.IsRecording() {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 || status == 0 {
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// Inject writes ctx's trace context and baggage into h, the headers of the
// request going upstream, so that the upstream's spans are children of
// the proxy's. When tracing is off it leaves h as it is: headers the proxy
// copied from the downstream request pass through unchanged.
func (p *Provider) Inject(ctx context.Context, h http.Header) {
	if p.sdk == nil {
		return
	}
	p.prop.Inject(ctx, propagation.HeaderCarrier(h))
}
