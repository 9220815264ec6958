package telemetry

import (
	"context"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/metric"
)

// TestTCPStoreMatchesSDK holds the Provider's own TCP counters to what the
// SDK's instruments and the Prometheus exporter write for the same
// measurements, byte for byte.
func TestTCPStoreMatchesSDK(t *testing.T) {
	base := Labels{Reporter: ReporterDst, RequestProtocol: ProtocolTCP, SecurityPolicy: MutualTLS,
		Source:      Peer{Workload: "sleep", Namespace: "a", Principal: "spiffe://cluster.local/ns/a/sa/sleep"},
		Destination: Peer{Workload: "echo", Namespace: "b"}, DestinationService: "echo.b.svc.cluster.local"}
	with := func(f func(*Labels)) Labels { l := base; f(&l); return l }
	type call struct {
		labels         Labels
		open, close    bool
		received, sent int64
	}
	// The limit counts label sets over the four counters together, where
	// the SDK counts them per counter: the same once every label set
	// reaches each counter, as here.
	var many []call
	for i := range seriesLimit + 50 {
		many = append(many, call{labels: with(func(l *Labels) { l.Source.Workload = fmt.Sprint("w", i) }), open: true, received: int64(i) + 1})
	}
	for _, tc := range []struct {
		name  string
		calls []call
	}{
		{"none", nil},
		{"one connection", []call{{labels: base, open: true, close: true, received: 100, sent: 7}}},
		{"open only", []call{{labels: base, open: true}}},
		{"bytes one way", []call{{labels: base, open: true, sent: 5}, {labels: base, received: -3}}},
		{"large", []call{{labels: base, received: 1 << 50, sent: 123456789012}}},
		{"several label sets", []call{
			{labels: base, open: true},
			{labels: with(func(l *Labels) { l.Reporter = ReporterSrc }), open: true, close: true, sent: 1},
			{labels: with(func(l *Labels) { l.ResponseFlags = FlagDenied }), open: true, close: true},
			{labels: with(func(l *Labels) { l.Source.Workload = "sleep-2" }), received: 10},
			{labels: base, close: true, received: 1, sent: 2},
		}},
		{"values to escape", []call{
			{labels: with(func(l *Labels) { l.Source.Workload = "a\"b\\c\nd" }), open: true},
			{labels: with(func(l *Labels) { l.Source.Workload = "a" }), open: true},
			{labels: with(func(l *Labels) { l.Source.Workload = "a\"" }), open: true},
		}},
		{"beyond the label set limit", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			got[0], got[1] = sideBySide(t, "istio_tcp", func(m metric.Meter, sdk bool) {
				tcp, err := NewTCPMetrics(m)
				if err != nil {
					t.Fatal(err)
				}
				if (tcp.store == nil) != sdk {
					t.Fatalf("SDK meter %v: local aggregation %v", sdk, tcp.store != nil)
				}
				ctx := context.Background()
				for _, c := range tc.calls {
					set := c.labels.Set()
					if c.open {
						tcp.Opened(ctx, set)
					}
					tcp.Bytes(ctx, set, c.received, c.sent)
					if c.close {
						tcp.Closed(ctx, set)
					}
				}
			})
			if got[0] != got[1] {
				t.Errorf("the Provider's counters scrape\n%s\nthe SDK's\n%s", got[0], got[1])
			}
			if len(tc.calls) > 0 && got[0] == "" {
				t.Error("nothing scraped")
			}
		})
	}
}
