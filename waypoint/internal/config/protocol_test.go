package config

import "testing"

func TestPortProtocol(t *testing.T) {
	tests := []struct {
		name, appProtocol string
		port              uint16
		want              Protocol
	}{
		// appProtocol wins over the name.
		{"tcp-x", "http", 80, HTTP},
		{"", "HTTP", 80, HTTP},
		{"", "kubernetes.io/ws", 80, HTTP},
		{"", "http2", 80, HTTP2},
		{"", "h2c", 80, HTTP2},
		{"", "kubernetes.io/h2c", 80, HTTP2},
		{"http", "grpc", 80, GRPC},
		{"", "grpc-web", 80, GRPC},
		{"http", "https", 443, TCP},
		{"", "tls", 443, TCP},
		{"", "kubernetes.io/wss", 443, TCP},
		{"", "tcp", 80, TCP},
		{"", "mongo", 80, TCP},
		{"", "mysql", 80, TCP},
		{"", "redis", 80, TCP},
		{"http", "example.com/custom", 80, TCP},
		// The name's prefix before "-", or the whole name.
		{"http", "", 8080, HTTP},
		{"http-web", "", 8080, HTTP},
		{"HTTP-web", "", 8080, HTTP},
		{"http2", "", 8080, HTTP2},
		{"http2-x", "", 8080, HTTP2},
		{"grpc", "", 8080, GRPC},
		{"grpc-web", "", 8080, GRPC},
		{"grpc-web-x", "", 8080, GRPC},
		{"tcp-db", "", 8080, TCP},
		{"tls", "", 8080, TCP},
		{"https-x", "", 8443, TCP},
		{"mongo", "", 8080, TCP},
		{"mysql-primary", "", 8080, TCP},
		{"redis", "", 8080, TCP},
		{"httpx", "", 8080, Detect},
		{"web", "", 8080, Detect},
		{"", "", 8080, Detect},
		// Server-first protocols' well-known ports are not sniffed.
		{"", "", 3306, TCP},
		{"db", "", 27017, TCP},
		{"smtp", "", 25, TCP},
		{"dns", "", 53, TCP},
		{"http", "", 3306, HTTP},
	}
	for _, tt := range tests {
		if got := portProtocol(tt.name, tt.appProtocol, tt.port); got != tt.want {
			t.Errorf("portProtocol(%q, %q, %d) = %v, want %v", tt.name, tt.appProtocol, tt.port, got, tt.want)
		}
	}
}
