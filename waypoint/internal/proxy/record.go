package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/telemetry/tracing"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
)

// Response flags, as Envoy reports them in Istio's response_flags label.
const (
	flagNoRoute              = "NR"
	flagNoHealthy            = "UH"
	flagConnect              = "UF"
	flagTimeout              = "UT"
	flagUpstreamReset        = "UR"
	flagReset                = "UC"
	flagRateLimited          = "RL"
	flagDownstreamDisconnect = "DC"
	flagDownstreamProtocol   = "DPE"
	flagUpstreamProtocol     = "UPE"
	// flagDenied marks a request refused by authorization (Envoy reports
	// no flag for RBAC; the access log says which policy).
	flagDenied = "-"
)

// Telemetry is where the waypoint reports requests and connections: the
// access log (one line each), Istio's metrics and the waypoint's own
// counters.
type Telemetry struct {
	Requests *telemetry.RequestMetrics
	TCP      *telemetry.TCPMetrics
	Waypoint *telemetry.WaypointMetrics
	// Tracing makes a span per request (a disabled Provider costs
	// nothing); nil means none.
	Tracing *tracing.Provider
	// AccessLog gets one line per request and connection; nil for none.
	AccessLog *slog.Logger
	Logger    *slog.Logger
	// Cluster is reported as source and destination cluster.
	Cluster string

	attrsOnce sync.Once
	attrs     *telemetry.AttributeCache
}

// maxCachedLabelSets bounds the label combinations whose attributes are
// kept: building them allocates, and a waypoint sees few combinations.
const maxCachedLabelSets = 4096

func (t *Telemetry) attributes(l telemetry.Labels) telemetry.Attributes {
	t.attrsOnce.Do(func() { t.attrs = telemetry.NewAttributeCache(maxCachedLabelSets) })
	return t.attrs.Get(l)
}

// requestRecord follows one request.
type requestRecord struct {
	t     *Telemetry
	tun   *tunnel
	r     *http.Request
	start time.Time

	tgt       target
	rl        *config.Rule
	code      int
	grpc      string
	flags     string
	why       string
	denied    string
	audited   []string
	endpoint  endpoint
	attempts  int
	noRetryBc string
	sent      int64
	// received is added to by whoever reads the request body, which may
	// be a transport's goroutine still running when the request ends.
	received atomic.Int64
	span     trace.Span
}

// startRequest begins a request's record and, with tracing, its span;
// the returned request carries the span's context.
func (t *Telemetry) startRequest(tun *tunnel, r *http.Request) (*requestRecord, *http.Request) {
	rec := &requestRecord{t: t, tun: tun, r: r, start: time.Now()}
	if t.Tracing != nil && t.Tracing.Enabled() {
		ctx, span := t.Tracing.StartRequest(r.Context(), r, "waypoint")
		rec.span = span
		r = r.WithContext(ctx)
		rec.r = r
	}
	return rec, r
}

// inject writes the request's trace context into an outgoing header.
func (rec *requestRecord) inject(h http.Header) {
	if rec.span != nil {
		rec.t.Tracing.Inject(rec.r.Context(), h)
	}
}

func (rec *requestRecord) target(tgt target)     { rec.tgt = tgt }
func (rec *requestRecord) rule(r *config.Rule)   { rec.rl = r }
func (rec *requestRecord) status(code int)       { rec.code = code }
func (rec *requestRecord) reason(msg string)     { rec.why = msg }
func (rec *requestRecord) audit(keys []string)   { rec.audited = keys }
func (rec *requestRecord) deny(d authz.Decision) { rec.denied = d.Policy }
func (rec *requestRecord) noRetry(why string)    { rec.noRetryBc = why }
func (rec *requestRecord) requestBytes(n int64)  { rec.received.Add(n) }
func (rec *requestRecord) responseBytes(n int64) { rec.sent += n }
func (rec *requestRecord) attempt(e endpoint, _ error) {
	rec.attempts++
	if e.host != nil {
		rec.endpoint = e
	}
}

func (rec *requestRecord) flag(f string) {
	if f == "" || f == "-" {
		return
	}
	if rec.flags == "" {
		rec.flags = f
	} else if !strings.Contains(rec.flags, f) {
		rec.flags += "," + f
	}
}

// grpcStatus notes the grpc-status of a header or trailer section.
func (rec *requestRecord) grpcStatus(h http.Header) {
	if v := h.Get("Grpc-Status"); v != "" {
		rec.grpc = v
	}
}

func (rec *requestRecord) finish() {
	d := time.Since(rec.start)
	code := rec.code
	if code == 0 {
		code = 200 // the handler wrote without our noting it: impossible by construction
	}
	if rec.t.Requests != nil {
		rec.t.Requests.Record(context.Background(), rec.t.attributes(rec.labels(code)),
			telemetry.RequestSample{Duration: d, RequestBytes: rec.received.Load(), ResponseBytes: rec.sent})
	}
	if rec.span != nil {
		rec.t.Tracing.EndRequest(rec.span, code)
	}
	if rec.t.AccessLog != nil {
		rec.log(code, d)
	}
}

func (rec *requestRecord) labels(code int) telemetry.Labels {
	l := telemetry.Labels{
		Reporter:        telemetry.ReporterWaypoint,
		RequestProtocol: telemetry.ProtocolHTTP,
		ResponseCode:    strconv.Itoa(code),
		ResponseFlags:   rec.flags,
		SecurityPolicy:  telemetry.MutualTLS,
	}
	if strings.HasPrefix(rec.r.Header.Get("Content-Type"), "application/grpc") {
		l.RequestProtocol = telemetry.ProtocolGRPC
		l.GRPCResponseStatus = rec.grpc
	}
	l.Source = peerLabels(rec.tun.srcWorkload, rec.t.Cluster)
	l.Source.Principal = rec.tun.peer.String()
	if rec.endpoint.w != nil {
		l.Destination = peerLabels(rec.endpoint.w, rec.t.Cluster)
		if !rec.endpoint.ep.ID.IsZero() {
			l.Destination.Principal = rec.endpoint.ep.ID.String()
		}
	}
	if svc := rec.tgt.svc; svc != nil {
		l.DestinationService, l.DestinationServiceName, l.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	return l
}

func peerLabels(w *meshstate.Workload, cluster string) telemetry.Peer {
	if w == nil {
		return telemetry.Peer{}
	}
	name := w.WorkloadName
	if name == "" {
		name = w.Name
	}
	return telemetry.Peer{Workload: name, Namespace: w.Namespace, App: w.CanonicalName, Version: w.CanonicalRevision, Cluster: cluster}
}

func (rec *requestRecord) log(code int, d time.Duration) {
	var buf [20]slog.Attr // room for every attribute below
	attrs := append(buf[:0],
		slog.String("method", rec.r.Method),
		slog.String("authority", rec.r.Host),
		slog.String("path", rec.r.URL.Path),
		slog.Int("status", code),
		slog.Duration("duration", d),
		slog.String("src.identity", rec.tun.peer.String()),
		slog.String("src.addr", rec.tun.srcText),
		slog.String("dst", rec.tun.dstText),
		slog.Int64("bytes_sent", rec.sent),
	)
	if rec.rl != nil && rec.rl.Route.Name != "" {
		attrs = append(attrs, slog.String("route", rec.rl.Route.String()), slog.Int("rule", rec.rl.Index))
		if rec.rl.Name != "" {
			attrs = append(attrs, slog.String("rule_name", rec.rl.Name))
		}
	}
	if rec.endpoint.host != nil {
		attrs = append(attrs, slog.String("upstream", rec.endpoint.addrText))
	}
	if rec.attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", rec.attempts))
	}
	if rec.flags != "" {
		attrs = append(attrs, slog.String("flags", rec.flags))
	}
	if rec.why != "" {
		attrs = append(attrs, slog.String("reason", rec.why))
	}
	if rec.denied != "" {
		attrs = append(attrs, slog.String("denied_by", rec.denied))
	}
	if len(rec.audited) > 0 {
		attrs = append(attrs, slog.String("audit", strings.Join(rec.audited, ",")))
	}
	if rec.noRetryBc != "" {
		attrs = append(attrs, slog.String("not_retried", rec.noRetryBc))
	}
	if rec.grpc != "" {
		attrs = append(attrs, slog.String("grpc_status", rec.grpc))
	}
	rec.t.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// connRecord follows one TCP connection passed through.
type connRecord struct {
	t        *Telemetry
	tun      *tunnel
	start    time.Time
	tgt      target
	endpoint endpoint
	denied   string
	sent     int64
	received int64
}

func (t *Telemetry) startConn(tun *tunnel) *connRecord {
	return &connRecord{t: t, tun: tun, start: time.Now()}
}

func (c *connRecord) labels() telemetry.Labels {
	l := telemetry.Labels{
		Reporter:        telemetry.ReporterWaypoint,
		RequestProtocol: telemetry.ProtocolTCP,
		SecurityPolicy:  telemetry.MutualTLS,
		Source:          peerLabels(c.tun.srcWorkload, c.t.Cluster),
	}
	l.Source.Principal = c.tun.peer.String()
	if c.endpoint.w != nil {
		l.Destination = peerLabels(c.endpoint.w, c.t.Cluster)
		if !c.endpoint.ep.ID.IsZero() {
			l.Destination.Principal = c.endpoint.ep.ID.String()
		}
	}
	if svc := c.tgt.svc; svc != nil {
		l.DestinationService, l.DestinationServiceName, l.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	return l
}

func (c *connRecord) target(tgt target) { c.tgt = tgt }

// upstream notes the endpoint the connection was opened to, and counts
// it opened.
func (c *connRecord) upstream(e endpoint) {
	c.endpoint = e
	if c.t.TCP != nil {
		c.t.TCP.Opened(context.Background(), c.t.attributes(c.labels()).Set())
	}
}
func (c *connRecord) bytes(sent, recv int64) { c.received, c.sent = sent, recv }

func (c *connRecord) deny(d authz.Decision) {
	c.denied = d.Policy
	c.finish(nil)
}

func (c *connRecord) finish(err error) {
	if c.t.TCP != nil && c.endpoint.host != nil {
		set := c.t.attributes(c.labels()).Set()
		c.t.TCP.Bytes(context.Background(), set, c.received, c.sent)
		c.t.TCP.Closed(context.Background(), set)
	}
	if c.t.AccessLog == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("src.identity", c.tun.peer.String()),
		slog.String("src.addr", c.tun.srcText),
		slog.String("dst", c.tun.dstText),
		slog.Duration("duration", time.Since(c.start)),
		slog.Int64("bytes_sent", c.sent),
		slog.Int64("bytes_received", c.received),
	}
	if c.endpoint.host != nil {
		attrs = append(attrs, slog.String("upstream", c.endpoint.addrText))
	}
	if c.denied != "" {
		attrs = append(attrs, slog.String("denied_by", c.denied))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	c.t.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "connection", attrs...)
}

func (t *Telemetry) retried(service string, o retry.Outcome) {
	if t.Waypoint == nil {
		return
	}
	reason := telemetry.RetryStatus
	switch o.Kind {
	case retry.ConnectFailure:
		reason = telemetry.RetryConnectFailure
	case retry.RefusedStream:
		reason = telemetry.RetryRefusedStream
	case retry.Reset:
		reason = telemetry.RetryReset
	case retry.Timeout:
		reason = telemetry.RetryTimeout
	}
	t.Waypoint.Retry(context.Background(), service, reason)
}

func (t *Telemetry) budgetExhausted(service string) {
	if t.Waypoint != nil {
		t.Waypoint.RetryBudgetExhausted(context.Background(), service)
	}
}

func (t *Telemetry) mirrorDropped(why string) {
	if t.Logger != nil {
		t.Logger.Debug("mirror dropped", "reason", why)
	}
}

func (t *Telemetry) h2Error(err error) {
	if t.Logger != nil {
		t.Logger.Debug("HTTP/2 connection ended", "err", err)
	}
}

func (t *Telemetry) h1Error(err error) {
	if t.Logger != nil {
		t.Logger.Debug("HTTP/1.1 connection ended", "err", err)
	}
}
