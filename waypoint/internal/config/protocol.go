package config

import "strings"

// portProtocol decides how the waypoint handles a service port, following
// Istio's explicit protocol selection
// (https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/):
// appProtocol takes precedence over the port name; a name selects a
// protocol by its prefix before the first "-" ("http-web" is http); the
// supported protocols are http, http2, https, tcp, tls, grpc, grpc-web,
// mongo, mysql and redis. The Kubernetes-defined appProtocols of KEP-3726
// (kubernetes.io/h2c, kubernetes.io/ws, kubernetes.io/wss) are mapped as
// Istio maps them.
//
// Two choices differ from Istio on purpose. An appProtocol the waypoint
// does not speak is passed through as TCP rather than sniffed: the
// Service owner said what the port carries, and it is not HTTP. A port
// with neither hint is sniffed (Detect), except on the well-known ports of
// server-first protocols (SMTP, DNS, MySQL, MongoDB), which Istio also
// treats as TCP because a sniffer would wait for a client that never
// speaks first.
func portProtocol(name, appProtocol string, port uint16) Protocol {
	if appProtocol != "" {
		switch strings.ToLower(appProtocol) {
		case "http", "kubernetes.io/ws":
			return HTTP
		case "http2", "h2c", "kubernetes.io/h2c":
			return HTTP2
		case "grpc", "grpc-web":
			return GRPC
		}
		return TCP
	}
	prefix, _, _ := strings.Cut(strings.ToLower(name), "-")
	switch prefix {
	case "http":
		return HTTP
	case "http2":
		return HTTP2
	case "grpc": // also grpc-web, whose prefix is grpc
		return GRPC
	case "tcp", "tls", "https", "mongo", "mysql", "redis":
		return TCP
	}
	switch port {
	case 25, 53, 3306, 27017:
		return TCP
	}
	return Detect
}
