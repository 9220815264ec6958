package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/ztunnel/internal/route"
)

// endpoint is one side of a connection as ztunnel knows it.
type endpoint struct {
	addr netip.AddrPort
	w    *meshstate.Workload
	id   spiffeid.ID
}

// record collects what the access log and metrics report about one
// connection.
type record struct {
	p         *Proxy
	start     time.Time
	inbound   bool
	src, dst  endpoint
	hboneAddr netip.AddrPort // the tunnel's server, when tunnelled
	svc       *meshstate.Service
	kind      route.Kind
	mtls      bool
	// transport carried the connection between the proxies (HBONE over
	// TCP or QUIC); TCP for plain connections.
	transport hbone.Transport
	flags     string
	// sent is client to server, recv server to client.
	sent, recv int64

	attrs  attribute.Set
	opened bool
}

func (p *Proxy) newRecord(inbound bool, src netip.AddrPort) *record {
	return &record{p: p, start: time.Now(), inbound: inbound, src: endpoint{addr: src}}
}

// open counts the connection as opened, once its two ends are known.
func (r *record) open(ctx context.Context) {
	if r.prepare() {
		r.p.cfg.Metrics.Opened(ctx, r.attrs)
	}
}

// prepare sets the labels; it reports whether the opening is to be counted.
func (r *record) prepare() bool {
	if r.opened || r.p.cfg.Metrics == nil {
		r.opened = true
		return false
	}
	r.opened = true
	r.attrs = r.p.attributes(metricLabels{r.labels(), r.transport})
	return true
}

// finish records the end of the connection, err being why it failed or
// ended abnormally (nil for a clean close).
func (r *record) finish(err error) {
	ctx := context.Background()
	if m := r.p.cfg.Metrics; m != nil {
		r.open(ctx)
		m.Bytes(ctx, r.attrs, r.sent, r.recv)
		m.Closed(ctx, r.attrs)
	}
	level, msg := slog.LevelInfo, "connection complete"
	if err != nil && !benign(err) {
		level, msg = slog.LevelWarn, "connection failed"
	}
	dir := "outbound"
	if r.inbound {
		dir = "inbound"
	}
	attrs := make([]slog.Attr, 0, 21)
	attrs = append(attrs,
		slog.String("direction", dir),
		slog.String("src.addr", r.src.addr.String()))
	attrs = appendPeer(attrs, "src", r.src)
	attrs = append(attrs, slog.String("dst.addr", r.dst.addr.String()))
	if r.hboneAddr.IsValid() {
		attrs = append(attrs, slog.String("dst.hbone_addr", r.hboneAddr.String()))
	}
	if r.svc != nil {
		attrs = append(attrs, slog.String("dst.service", r.svc.Hostname))
	}
	attrs = appendPeer(attrs, "dst", r.dst)
	if !r.inbound {
		attrs = append(attrs, slog.String("route", r.kind.String()))
	}
	attrs = append(attrs,
		slog.String("transport", r.transport.String()),
		slog.Int64("bytes_sent", r.sent),
		slog.Int64("bytes_recv", r.recv),
		slog.Duration("duration", time.Since(r.start)))
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	r.p.cfg.AccessLog.LogAttrs(ctx, level, msg, attrs...)
}

func appendPeer(attrs []slog.Attr, prefix string, e endpoint) []slog.Attr {
	if e.w != nil {
		attrs = append(attrs,
			slog.String(prefix+".workload", e.w.Name),
			slog.String(prefix+".namespace", e.w.Namespace))
	}
	if !e.id.IsZero() {
		attrs = append(attrs, slog.String(prefix+".identity", e.id.String()))
	}
	return attrs
}

// benign errors end connections normally.
func benign(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

func (r *record) labels() telemetry.Labels {
	l := telemetry.Labels{
		Reporter:        telemetry.ReporterSrc,
		Source:          r.p.peer(r.src),
		Destination:     r.p.peer(r.dst),
		RequestProtocol: telemetry.ProtocolTCP,
		ResponseFlags:   r.flags,
	}
	if r.inbound {
		l.Reporter = telemetry.ReporterDst
	}
	if r.mtls {
		l.SecurityPolicy = telemetry.MutualTLS
	}
	// Without a service the labels stay "unknown", never the address.
	if r.svc != nil {
		l.DestinationService = r.svc.Hostname
		l.DestinationServiceName = r.svc.Name
		l.DestinationServiceNamespace = r.svc.Namespace
	}
	return l
}

func (p *Proxy) peer(e endpoint) telemetry.Peer {
	var out telemetry.Peer
	if !e.id.IsZero() {
		out.Principal = e.id.String()
		if ns, _, err := identity.ParseWorkloadID(e.id); err == nil {
			out.Namespace = ns
		}
	}
	if w := e.w; w != nil {
		out.Workload = firstOf(w.WorkloadName, w.Name)
		out.Namespace = w.Namespace
		out.App = firstOf(w.CanonicalName, w.Name)
		out.Version = firstOf(w.CanonicalRevision, "latest")
		out.Cluster = firstOf(w.ClusterID, p.cfg.ClusterID)
	}
	return out
}

func firstOf(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// baggage describes the source for the destination's metrics, as Istio's
// ztunnel sends it.
func baggage(w *meshstate.Workload, cluster string) string {
	if w == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("k8s.cluster.name=")
	b.WriteString(firstOf(w.ClusterID, cluster))
	b.WriteString(",k8s.namespace.name=")
	b.WriteString(w.Namespace)
	b.WriteString(",k8s.pod.name=")
	b.WriteString(w.Name)
	b.WriteString(",service.name=")
	b.WriteString(firstOf(w.CanonicalName, w.Name))
	b.WriteString(",service.version=")
	b.WriteString(firstOf(w.CanonicalRevision, "latest"))
	return b.String()
}

// maxAttrSets bounds the cache of metric label sets.
const maxAttrSets = 4096

// LabelTransport is the label, beside Istio's, that says which transport
// carried a connection between the proxies: "quic" for HBONE over QUIC,
// "tcp" for HBONE over TCP and for plain TCP (told apart by
// connection_security_policy). Istio has no such label; its metric
// names and its labels are kept as they are.
const LabelTransport = "transport"

// metricLabels are the labels of ztunnel's connection metrics.
type metricLabels struct {
	telemetry.Labels
	transport hbone.Transport
}

// attributes returns the attribute set for l, shared by every connection
// with the same labels: building one per connection costs a kilobyte and
// more for as long as the connection lives.
func (p *Proxy) attributes(l metricLabels) attribute.Set {
	p.attrMu.Lock()
	defer p.attrMu.Unlock()
	if s, ok := p.attrSets[l]; ok {
		return s
	}
	if len(p.attrSets) >= maxAttrSets {
		clear(p.attrSets)
	}
	set := l.Labels.Set()
	s := attribute.NewSet(append(set.ToSlice(), attribute.String(LabelTransport, l.transport.String()))...)
	p.attrSets[l] = s
	return s
}
