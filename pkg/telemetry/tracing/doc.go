// Package tracing sets up request tracing for Skiff's proxies: the
// OpenTelemetry trace SDK exporting over OTLP/gRPC to a collector, and the
// W3C traceparent and baggage headers that Istio's proxies propagate.
//
// It decides three things. Whether to trace at all: without a collector
// endpoint a Provider is off, and a request costs nothing, not even an
// allocation. What to sample: new traces by a ratio, and a request that
// arrives with a trace context by its caller's decision (parent-based), so
// that a trace sampled upstream is never left with a hole at the proxy.
// And how a span looks: one server span per request, named by the caller,
// with OTel's HTTP attributes, its status an error for 5xx responses, and
// the parent of the request the proxy sends upstream (StartRequest,
// EndRequest, Inject).
//
// Nothing is global: the OTel SDK's global provider, propagator and error
// handler are left alone, and export failures go to the Provider's own
// logger, at most once a minute while they last.
//
// It is a package of its own, apart from the metrics of package telemetry,
// because the exporter links gRPC and the OTLP protocol: a binary that
// only serves metrics does not carry them.
package tracing
