package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, p *Provider) string {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestIstioNamesAndLabels(t *testing.T) {
	p, err := NewProvider(ProviderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	tcp, err := NewTCPMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := NewRequestMetrics(p.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	l := Labels{
		Reporter:        ReporterDst,
		Source:          Peer{Workload: "sleep", Namespace: "a", Principal: "spiffe://cluster.local/ns/a/sa/sleep"},
		Destination:     Peer{Workload: "echo", Namespace: "b", Principal: "spiffe://cluster.local/ns/b/sa/echo"},
		RequestProtocol: ProtocolTCP,
		SecurityPolicy:  MutualTLS,
	}
	set := l.Set()
	ctx := context.Background()
	tcp.Opened(ctx, set)
	tcp.Bytes(ctx, set, 100, 7)
	tcp.Closed(ctx, set)
	l.ResponseCode = "200"
	req.Request(ctx, l.Set(), 3*time.Millisecond)

	out := scrape(t, p)
	for _, want := range []string{
		`istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_app="unknown",`,
		`istio_tcp_received_bytes_total{`,
		`istio_tcp_sent_bytes_total{`,
		`istio_tcp_connections_closed_total{`,
		`source_principal="spiffe://cluster.local/ns/a/sa/sleep"`,
		`destination_principal="spiffe://cluster.local/ns/b/sa/echo"`,
		`reporter="destination"`,
		`response_flags="-"`,
		`istio_requests_total{`,
		`response_code="200"`,
		`istio_request_duration_milliseconds_bucket{`,
		`le="5"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"otel_scope", "target_info"} {
		if strings.Contains(out, bad) {
			t.Errorf("metrics contain %q", bad)
		}
	}
	if !strings.Contains(out, `istio_tcp_received_bytes_total{`) || !strings.Contains(out, "} 100") {
		t.Errorf("received bytes not 100:\n%s", out)
	}
}

// TestScrapeUncompressed: a scraper that offers gzip (Prometheus does)
// still gets plain text, so no gzip writer is kept between scrapes.
func TestScrapeUncompressed(t *testing.T) {
	p, err := NewProvider(ProviderOptions{ProcessMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	p.Handler().ServeHTTP(rec, req)
	if enc := rec.Header().Get("Content-Encoding"); enc != "" {
		t.Errorf("Content-Encoding %q, want none", enc)
	}
	if !strings.Contains(rec.Body.String(), "go_goroutines ") {
		t.Errorf("body is not the text format:\n%.200s", rec.Body.String())
	}
}
