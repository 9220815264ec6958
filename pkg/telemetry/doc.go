// Package telemetry sets up metrics for Skiff's proxies: the OpenTelemetry
// SDK exporting through its Prometheus exporter, and Istio's standard metric
// names and labels, so that dashboards built for Istio work unchanged.
//
// TCPMetrics records istio_tcp_connections_opened_total,
// istio_tcp_connections_closed_total, istio_tcp_received_bytes_total and
// istio_tcp_sent_bytes_total (ztunnel, and the waypoint for TCP routes).
// RequestMetrics records istio_requests_total and
// istio_request_duration_milliseconds (the waypoint). Both take their labels
// as a Labels value, converted once per connection or request with
// Labels.Set.
package telemetry
