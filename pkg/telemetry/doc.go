// Package telemetry sets up metrics for Skiff's proxies: the OpenTelemetry
// SDK exporting through its Prometheus exporter, under Istio's standard
// metric names and labels, so that dashboards built for Istio work
// unchanged. Traces are package tracing's, below this one, so that a
// binary serving only metrics does not link the trace exporter.
//
// # Istio's metrics
//
// TCPMetrics records istio_tcp_connections_opened_total,
// istio_tcp_connections_closed_total, istio_tcp_received_bytes_total and
// istio_tcp_sent_bytes_total (ztunnel, and the waypoint for TCP routes).
// RequestMetrics records istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes and
// istio_response_bytes (the waypoint), the histograms with Envoy's default
// bucket bounds, which Istio keeps.
//
// Both take their labels as a Labels value, converted once per connection
// with Labels.Set. Converting costs kilobytes, far more than recording, so
// per request the waypoint looks its labels up in an AttributeCache, whose
// Attributes RequestMetrics.Record takes without allocating. On a
// Provider's Meter, both aggregate their series themselves, exactly as the
// SDK would, and the Provider's handler writes them to a scrape, text
// rendered once per series: the SDK's synchronous instruments re-examine
// every attribute of a measurement, microseconds per request with Istio's
// label sets, and its Prometheus exporter rebuilds every series on every
// scrape, tens of kilobytes of garbage each. A waypoint
// reports reporter="waypoint" (ReporterWaypoint); request series carry
// grpc_response_status, the gRPC status number or empty for other
// requests, as Istio's do.
//
// # Skiff's waypoint metrics
//
// WaypointMetrics records what Istio has no names for:
//
//   - skiff_waypoint_retries_total{destination_service, reason}: requests
//     sent again, reason being one of the Retry* values.
//   - skiff_waypoint_retry_budget_exhausted_total{destination_service}:
//     retries the service's retry budget refused.
//   - skiff_waypoint_outlier_ejections_total{destination_service, outcome}:
//     endpoints found failing, outcome "ejected" or "skipped_by_cap" when
//     the cap on a service's ejected endpoints kept one in.
//   - skiff_waypoint_outlier_ejected{destination_service}: a gauge of the
//     endpoints ejected now.
package telemetry
