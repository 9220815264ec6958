package telemetry

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The waypoint's own metrics: Istio has no names for these, so they carry
// Skiff's (the Prometheus exporter adds "_total" to counters).
const (
	WaypointRetries               = "skiff_waypoint_retries"
	WaypointRetryBudgetExhausted  = "skiff_waypoint_retry_budget_exhausted"
	WaypointOutlierEjections      = "skiff_waypoint_outlier_ejections"
	WaypointOutlierEjectedCurrent = "skiff_waypoint_outlier_ejected"
)

// Label names of the waypoint's own metrics, besides
// LabelDestinationService.
const (
	LabelReason  = "reason"
	LabelOutcome = "outcome"
)

// Values of LabelReason: why a request was retried. They mirror the
// outcomes a retry policy tells apart; keep the set small and fixed, as
// each value is a series per service.
const (
	RetryConnectFailure = "connect_failure" // no connection to the endpoint
	RetryRefusedStream  = "refused_stream"  // the endpoint refused the stream unprocessed
	RetryReset          = "reset"           // the stream was reset mid-request
	RetryTimeout        = "timeout"         // the attempt's own timeout ran out
	RetryStatus         = "status"          // a retryable HTTP status or gRPC code
)

// Values of LabelOutcome on skiff_waypoint_outlier_ejections_total.
const (
	// OutlierEjected counts endpoints taken out of balancing.
	OutlierEjected = "ejected"
	// OutlierSkippedByCap counts endpoints that failed enough to be
	// ejected but stayed in because the service had its maximum share of
	// endpoints ejected already.
	OutlierSkippedByCap = "skipped_by_cap"
)

// WaypointMetrics records the waypoint's retries and outlier ejections,
// one method per event. These events are rare next to requests, so each
// builds its small attribute set when it happens.
type WaypointMetrics struct {
	retries, budgetExhausted, ejections metric.Int64Counter
	ejected                             metric.Int64Gauge
}

// NewWaypointMetrics creates the instruments on m.
func NewWaypointMetrics(m metric.Meter) (*WaypointMetrics, error) {
	var w WaypointMetrics
	var err error
	for _, c := range []struct {
		dst         *metric.Int64Counter
		name, descr string
	}{
		{&w.retries, WaypointRetries, "Requests sent again to the destination service, by reason"},
		{&w.budgetExhausted, WaypointRetryBudgetExhausted, "Retries the destination service's retry budget refused"},
		{&w.ejections, WaypointOutlierEjections, "Endpoints found to be outliers: ejected, or left in by the ejection cap"},
	} {
		if *c.dst, err = m.Int64Counter(c.name, metric.WithDescription(c.descr)); err != nil {
			return nil, fmt.Errorf("telemetry: creating %s: %w", c.name, err)
		}
	}
	w.ejected, err = m.Int64Gauge(WaypointOutlierEjectedCurrent,
		metric.WithDescription("Endpoints of the destination service ejected now"))
	if err != nil {
		return nil, fmt.Errorf("telemetry: creating %s: %w", WaypointOutlierEjectedCurrent, err)
	}
	return &w, nil
}

// Retry counts a request sent again to service (its hostname) for reason,
// one of the Retry* values.
func (w *WaypointMetrics) Retry(ctx context.Context, service, reason string) {
	w.retries.Add(ctx, 1, metric.WithAttributes(
		attribute.String(LabelDestinationService, or(service, Unknown)),
		attribute.String(LabelReason, or(reason, Unknown))))
}

// RetryBudgetExhausted counts a retry that service's retry budget refused:
// the request was retryable but got its failed response instead.
func (w *WaypointMetrics) RetryBudgetExhausted(ctx context.Context, service string) {
	w.budgetExhausted.Add(ctx, 1, metric.WithAttributes(
		attribute.String(LabelDestinationService, or(service, Unknown))))
}

// OutlierEjection counts an endpoint of service found to be an outlier:
// ejected, or not because of the cap on ejected endpoints (skippedByCap).
func (w *WaypointMetrics) OutlierEjection(ctx context.Context, service string, skippedByCap bool) {
	outcome := OutlierEjected
	if skippedByCap {
		outcome = OutlierSkippedByCap
	}
	w.ejections.Add(ctx, 1, metric.WithAttributes(
		attribute.String(LabelDestinationService, or(service, Unknown)),
		attribute.String(LabelOutcome, outcome)))
}

// OutlierEjected sets how many of service's endpoints are ejected now.
// Call it when the number changes, including back to 0: the gauge keeps
// the last value set.
func (w *WaypointMetrics) OutlierEjected(ctx context.Context, service string, n int) {
	w.ejected.Record(ctx, int64(n), metric.WithAttributes(
		attribute.String(LabelDestinationService, or(service, Unknown))))
}
