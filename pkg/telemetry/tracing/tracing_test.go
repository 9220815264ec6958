package tracing

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// collector is an OTLP trace receiver speaking the real protocol, as an
// OpenTelemetry collector does, on loopback.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer

	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string // service.name of each span's resource
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, s)
				c.services = append(c.services, service)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) received() ([]*tracepb.Span, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans, c.services
}

// startCollector serves a collector on a loopback port until the test
// ends.
func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return c, lis.Addr().String()
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func attrInt(kvs []*commonpb.KeyValue, key string) (int64, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetIntValue(), true
		}
	}
	return 0, false
}

// proxyHandler is the tiny proxy of the tests: it traces each request, and
// reports in its response the traceparent it would send upstream.
func proxyHandler(tr *Provider, status int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tr.StartRequest(r.Context(), r, "echo.b.svc.cluster.local:80/*")
		upstream := http.Header{}
		tr.Inject(ctx, upstream)
		w.Header().Set("X-Upstream-Traceparent", upstream.Get("Traceparent"))
		w.WriteHeader(status)
		tr.EndRequest(span, status)
	})
}

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

var traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$`)

func TestTracingExportsRequestSpans(t *testing.T) {
	for _, tc := range []struct {
		name        string
		traceparent string
		ratio       float64
		status      int
		// wantSpan: a span reaches the collector; wantParent: as a child
		// of the traceparent's span, else as a root.
		wantSpan, wantParent bool
		wantError            bool
	}{
		{name: "a sampled caller is traced whatever the ratio", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
			ratio: 0, status: 200, wantSpan: true, wantParent: true},
		{name: "an unsampled caller is not, whatever the ratio", traceparent: "00-" + parentTrace + "-" + parentSpan + "-00",
			ratio: 1, status: 200},
		{name: "a new trace by ratio 1", ratio: 1, status: 200, wantSpan: true},
		{name: "no new trace by ratio 0", ratio: 0, status: 200},
		{name: "a malformed traceparent starts a new trace", traceparent: "00-zz-" + parentSpan + "-01",
			ratio: 1, status: 200, wantSpan: true},
		{name: "a 5xx marks the span as an error", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
			ratio: 0, status: 503, wantSpan: true, wantParent: true, wantError: true},
		{name: "a 4xx does not", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
			ratio: 0, status: 404, wantSpan: true, wantParent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col, addr := startCollector(t)
			tr, err := New(context.Background(), Options{
				Endpoint: addr, Insecure: true, ServiceName: "waypoint-test", SampleRatio: tc.ratio,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !tr.Enabled() {
				t.Fatal("tracing with an endpoint is not enabled")
			}
			req := httptest.NewRequest("GET", "http://echo.b.svc.cluster.local:80/hello?q=1", nil)
			if tc.traceparent != "" {
				req.Header.Set("Traceparent", tc.traceparent)
			}
			rec := httptest.NewRecorder()
			proxyHandler(tr, tc.status).ServeHTTP(rec, req)
			// Shutdown sends what is batched: after it the collector has
			// every span it will get.
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans, services := col.received()

			upstream := traceparentRE.FindStringSubmatch(rec.Header().Get("X-Upstream-Traceparent"))
			if upstream == nil {
				t.Fatalf("upstream traceparent %q is malformed", rec.Header().Get("X-Upstream-Traceparent"))
			}
			if tc.wantParent && upstream[1] != parentTrace {
				t.Errorf("upstream trace %s, want the caller's %s", upstream[1], parentTrace)
			}
			if sampled := upstream[3] == "1"; sampled != tc.wantSpan {
				t.Errorf("upstream sampled flag %v, want %v", sampled, tc.wantSpan)
			}

			if !tc.wantSpan {
				if len(spans) != 0 {
					t.Fatalf("collector got %d spans, want none", len(spans))
				}
				return
			}
			if len(spans) != 1 {
				t.Fatalf("collector got %d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.GetName() != "echo.b.svc.cluster.local:80/*" || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
				t.Errorf("span %q of kind %v, want the request's server span", s.GetName(), s.GetKind())
			}
			if services[0] != "waypoint-test" {
				t.Errorf("service.name %q, want waypoint-test", services[0])
			}
			traceID, spanID, parentID := hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetSpanId()), hex.EncodeToString(s.GetParentSpanId())
			if tc.wantParent {
				if traceID != parentTrace || parentID != parentSpan {
					t.Errorf("span in trace %s under %s, want trace %s under %s", traceID, parentID, parentTrace, parentSpan)
				}
			} else if parentID != "" {
				t.Errorf("span has parent %s, want a root", parentID)
			}
			if upstream[1] != traceID || upstream[2] != spanID {
				t.Errorf("upstream traceparent names %s/%s, want the proxy's span %s/%s", upstream[1], upstream[2], traceID, spanID)
			}
			for key, want := range map[string]string{
				"http.request.method": "GET",
				"url.path":            "/hello",
				"server.address":      "echo.b.svc.cluster.local",
			} {
				if got := attrString(s.GetAttributes(), key); got != want {
					t.Errorf("attribute %s = %q, want %q", key, got, want)
				}
			}
			if code, ok := attrInt(s.GetAttributes(), "http.response.status_code"); !ok || code != int64(tc.status) {
				t.Errorf("http.response.status_code = %d (present %v), want %d", code, ok, tc.status)
			}
			if isErr := s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR; isErr != tc.wantError {
				t.Errorf("span status %v, want error %v", s.GetStatus().GetCode(), tc.wantError)
			}
		})
	}
}

func TestTracingOff(t *testing.T) {
	tr, err := New(context.Background(), Options{SampleRatio: 1, ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Error("tracing without an endpoint is enabled")
	}
	req := httptest.NewRequest("GET", "/", nil)
	in := "00-" + parentTrace + "-" + parentSpan + "-01"
	req.Header.Set("Traceparent", in)
	upstream := http.Header{"Traceparent": {in}}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, span := tr.StartRequest(ctx, req, "x")
		tr.Inject(c, upstream)
		tr.EndRequest(span, 200)
	})
	if allocs != 0 {
		t.Errorf("a request costs %v allocations with tracing off, want 0", allocs)
	}
	if got := upstream.Get("Traceparent"); got != in {
		t.Errorf("upstream traceparent %q, want the caller's %q passed through", got, in)
	}
	_, span := tr.StartRequest(ctx, req, "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Error("the span of tracing off records or has an identity")
	}
	if _, s := tr.Tracer("t").Start(ctx, "x"); s.IsRecording() {
		t.Error("the tracer of tracing off records")
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestOptionsErrors(t *testing.T) {
	ok := Options{Endpoint: "collector.observability:4317", ServiceName: "waypoint", SampleRatio: 0.5}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string // in the error; empty for none
	}{
		{"valid", func(*Options) {}, ""},
		{"IPv6", func(o *Options) { o.Endpoint = "[::1]:4317" }, ""},
		{"ratio 0 and 1 are fine", func(o *Options) { o.SampleRatio = 1 }, ""},
		{"a URL", func(o *Options) { o.Endpoint = "http://collector:4317" }, "not a URL"},
		{"no port", func(o *Options) { o.Endpoint = "collector" }, "want host:port"},
		{"no host", func(o *Options) { o.Endpoint = ":4317" }, "no host"},
		{"port not a number", func(o *Options) { o.Endpoint = "collector:otlp" }, "not a number"},
		{"port 0", func(o *Options) { o.Endpoint = "collector:0" }, "not a number"},
		{"port too big", func(o *Options) { o.Endpoint = "collector:65536" }, "not a number"},
		{"negative ratio", func(o *Options) { o.SampleRatio = -0.1 }, "sample ratio"},
		{"ratio above 1", func(o *Options) { o.SampleRatio = 1.5 }, "sample ratio"},
		{"NaN ratio", func(o *Options) { o.SampleRatio = math.NaN() }, "sample ratio"},
		{"no service name", func(o *Options) { o.ServiceName = "" }, "service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			tr, err := New(context.Background(), o)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // nothing was recorded: nothing to wait for
				tr.Shutdown(ctx)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// chanHandler is a slog handler that sends each record's message.
type chanHandler struct{ ch chan<- string }

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	h.ch <- r.Message
	return nil
}
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h chanHandler) WithGroup(string) slog.Handler      { return h }

// TestTracingTLSFailsClosed: without Insecure, spans go over TLS or not at
// all, even when the environment asks for plaintext. The collector speaks
// plaintext, so the export must fail and the collector see nothing.
func TestTracingTLSFailsClosed(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true")
	col, addr := startCollector(t)
	logged := make(chan string, 4)
	tr, err := newProvider(context.Background(), Options{
		Endpoint: addr, ServiceName: "waypoint-test", SampleRatio: 1,
		Logger: slog.New(chanHandler{logged}),
	}, []otlptracegrpc.Option{otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	proxyHandler(tr, 200).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if msg := <-logged; msg != "trace export failed" {
		t.Errorf("logged %q, want the export failure", msg)
	}
	if spans, _ := col.received(); len(spans) != 0 {
		t.Errorf("a plaintext collector got %d spans from a TLS exporter", len(spans))
	}
}

// fakeExporter fails while its err is set.
type fakeExporter struct{ err error }

func (f *fakeExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return f.err }
func (f *fakeExporter) Shutdown(context.Context) error                             { return nil }

func TestLoggingExporter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	fake := &fakeExporter{}
	now := time.Unix(0, 0)
	e := newLoggingExporter(fake, log, func() time.Time { return now })
	spans := make([]sdktrace.ReadOnlySpan, 3)
	down := errors.New("collector down")
	for _, step := range []struct {
		advance time.Duration
		err     error
		want    string // the line logged, if any
	}{
		{0, nil, ""},
		{0, down, `level=WARN msg="trace export failed" err="collector down" lost_spans=3 lost_batches=1`},
		{time.Second, down, ""},
		{10 * time.Second, down, ""},
		{exportErrorInterval, down, `level=WARN msg="trace export failed" err="collector down" lost_spans=9 lost_batches=3`},
		{time.Second, down, ""},
		{time.Second, nil, `level=INFO msg="trace export recovered" lost_spans=3 lost_batches=1`},
		{time.Second, nil, ""},
		{time.Second, down, `level=WARN msg="trace export failed" err="collector down" lost_spans=3 lost_batches=1`},
	} {
		now = now.Add(step.advance)
		fake.err = step.err
		buf.Reset()
		if err := e.ExportSpans(context.Background(), spans); err != nil {
			t.Errorf("ExportSpans returned %v: errors are logged, not returned", err)
		}
		if got := strings.TrimSpace(buf.String()); got != step.want {
			t.Errorf("at %v with err %v logged\n%q\nwant\n%q", now.Sub(time.Unix(0, 0)), step.err, got, step.want)
		}
	}
}

// v00 reports whether tp is a well-formed version 00 traceparent with
// non-zero IDs, and its trace ID and sampled flag.
func v00(tp string) (traceID string, sampled, ok bool) {
	m := traceparentRE.FindStringSubmatch(strings.ToLower(tp))
	if m == nil || tp != strings.ToLower(tp) || m[1] == strings.Repeat("0", 32) || m[2] == strings.Repeat("0", 16) {
		return "", false, false
	}
	return m[1], m[3] == "1", true
}

// FuzzStartRequest feeds arbitrary trace headers to a proxy with tracing
// on. Whatever they hold, the upstream request gets a well-formed
// traceparent; a well-formed one from the caller is continued with its
// trace ID and sampling decision (the ratio is 0, so only the caller can
// sample); and any baggage sent upstream parses.
func FuzzStartRequest(f *testing.F) {
	f.Add("00-"+parentTrace+"-"+parentSpan+"-01", "", "")
	f.Add("00-"+parentTrace+"-"+parentSpan+"-00", "vendor=x", "user=alice,tenant=a%20b")
	f.Add("01-"+parentTrace+"-"+parentSpan+"-01-extra", "a=b,c=d", "k=v;prop")
	f.Add("00-00000000000000000000000000000000-"+parentSpan+"-01", "", "==")
	f.Add("ff-"+parentTrace+"-"+parentSpan+"-01", "\x00", "k=\xff")
	f.Fuzz(func(t *testing.T, traceparent, tracestate, bag string) {
		tr := newSDKProvider(tracetest.NewNoopExporter(), Options{ServiceName: "fuzz", SampleRatio: 0})
		defer tr.Shutdown(context.Background())
		req := httptest.NewRequest("GET", "/", nil)
		req.Header["Traceparent"] = []string{traceparent}
		req.Header["Tracestate"] = []string{tracestate}
		req.Header["Baggage"] = []string{bag}
		ctx, span := tr.StartRequest(context.Background(), req, "fuzz")
		up := http.Header{}
		tr.Inject(ctx, up)
		tr.EndRequest(span, 200)

		outID, outSampled, ok := v00(up.Get("Traceparent"))
		if !ok {
			t.Fatalf("upstream traceparent %q is malformed", up.Get("Traceparent"))
		}
		if inID, inSampled, ok := v00(traceparent); ok {
			if outID != inID || outSampled != inSampled {
				t.Errorf("caller %q continued as %q", traceparent, up.Get("Traceparent"))
			}
		}
		// At ratio 0 only a caller's decision samples, so a sampled trace
		// is the caller's: its ID sits at the same place in every version.
		if outSampled && (len(traceparent) < 35 || traceparent[3:35] != outID) {
			t.Errorf("trace %s sampled at ratio 0, but the caller's traceparent is %q", outID, traceparent)
		}
		if b := up.Get("Baggage"); b != "" {
			if _, err := baggage.Parse(b); err != nil {
				t.Errorf("upstream baggage %q does not parse: %v", b, err)
			}
		}
	})
}

func BenchmarkStartRequestOff(b *testing.B) {
	tr, err := New(context.Background(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchStartRequest(b, tr)
}

func BenchmarkStartRequestOn(b *testing.B) {
	tr := newSDKProvider(tracetest.NewNoopExporter(), Options{ServiceName: "bench", SampleRatio: 1})
	defer tr.Shutdown(context.Background())
	benchStartRequest(b, tr)
}

func benchStartRequest(b *testing.B, tr *Provider) {
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	up := http.Header{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, span := tr.StartRequest(ctx, req, "bench")
		tr.Inject(c, up)
		tr.EndRequest(span, 200)
	}
}
