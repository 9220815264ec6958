package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/waypoint/internal/authz"
	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/filter"
	"github.com/skiffmesh/skiff/waypoint/internal/http1"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
	"github.com/skiffmesh/skiff/waypoint/internal/pathnorm"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
	"github.com/skiffmesh/skiff/waypoint/internal/route"
	"github.com/skiffmesh/skiff/waypoint/internal/upstream"
)

// handler serves the HTTP requests of one tunnel.
func (p *Proxy) handler(t *tunnel) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveRequest(t, w, r) })
}

// serveRequest takes one request through authorization, routing, limits
// and filters, then forwards it.
func (p *Proxy) serveRequest(t *tunnel, w http.ResponseWriter, r *http.Request) {
	rec, r := p.cfg.Telemetry.startRequest(t, r)
	defer rec.finish()
	var src *countingBody
	// A body of length 0 (an HTTP/2 GET, say) has nothing to count.
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		src = &countingBody{ReadCloser: r.Body, n: &rec.received}
		r.Body = src
	}
	cfg := p.cfg.Waypoint()
	snap := p.cfg.Mesh.Snapshot()
	tgt, ok := resolve(cfg, snap, t.dst)
	if !ok {
		p.refuse(w, rec, http.StatusServiceUnavailable, flagNoRoute, "destination no longer served by this waypoint")
		return
	}
	rec.target(tgt)
	switch {
	case headerFields(r.Header) > p.cfg.MaxHeaderCount:
		p.refuse(w, rec, http.StatusRequestHeaderFieldsTooLarge, flagDownstreamProtocol, "too many header fields")
		return
	case r.Method == http.MethodConnect:
		p.refuse(w, rec, http.StatusMethodNotAllowed, flagDownstreamProtocol, "CONNECT is not proxied by the waypoint")
		return
	case r.Host == "":
		p.refuse(w, rec, http.StatusBadRequest, flagDownstreamProtocol, "missing host")
		return
	}
	if !(r.Method == http.MethodOptions && r.RequestURI == "*") {
		np, err := pathnorm.Normalize(r.URL.EscapedPath())
		if err != nil {
			p.refuse(w, rec, http.StatusBadRequest, flagDownstreamProtocol, "bad path: "+err.Error())
			return
		}
		setEscapedPath(r.URL, np)
	}

	var svcPolicies []*policy.Policy
	if tgt.svc != nil {
		svcPolicies = tgt.svc.Policies
	}
	if len(cfg.Policies)+len(svcPolicies) > 0 {
		d := authz.Decide(cfg.Policies, svcPolicies, policy.Conn{
			SrcIP: t.src.Addr(), DstIP: t.dst.Addr(), DstPort: t.dst.Port(), Peer: t.peer,
			Request: &policy.Request{Method: r.Method, Path: r.URL.EscapedPath(), Host: r.Host, Header: r.Header},
		})
		rec.audit(d.Audit)
		if !d.Allowed {
			rec.deny(d)
			p.refuse(w, rec, http.StatusForbidden, flagDenied, "RBAC: access denied")
			return
		}
	}

	var dec route.Decision
	if tgt.svc != nil {
		dec = route.Resolve(tgt.svc, t.peer, t.dst.Port(), r)
	}
	if dec.NotFound {
		p.refuse(w, rec, http.StatusNotFound, flagNoRoute, "no route matches")
		return
	}
	rule := dec.Rule
	if rule == nil {
		rule = p.defaultRule(tgt)
	}
	rec.rule(rule)

	if p.cfg.Limiter != nil {
		v := p.cfg.Limiter.Limit(r.Context(), LimitRequest{Service: tgt.svc, Rule: dec.Rule, Peer: t.peer, Source: t.src.Addr(), Request: r})
		// The limit's fields go on every answer, refused or not, so that
		// clients can pace themselves.
		v.addTo(w.Header())
		switch {
		case v.Allowed:
		case v.Status == http.StatusTooManyRequests:
			p.refuse(w, rec, v.Status, flagRateLimited, "rate limited")
			return
		default:
			p.refuse(w, rec, v.Status, flagRateLimitServiceError, "rate limit service unavailable")
			return
		}
	}

	f := &rule.Filters
	if f.Redirect != nil {
		w.Header().Set("Location", filter.RedirectLocation(r, "http", t.dst.Port(), f.Redirect, dec.Prefix))
		code := f.Redirect.StatusCode
		if code == 0 {
			code = http.StatusFound
		}
		rec.status(code)
		w.WriteHeader(code)
		return
	}
	upgrade := websocketUpgrade(r)
	out := p.outbound(t, r)
	rec.inject(out.Header)
	if f.RequestHeaders != nil {
		filter.Headers(out.Header, f.RequestHeaders)
	}
	if f.Rewrite != nil {
		filter.Rewrite(out, f.Rewrite, dec.Prefix)
	}
	if upgrade {
		out.Header["Connection"] = connUpgrade
		out.Header["Upgrade"] = upgradeWS
		p.forwardUpgrade(w, r, out, t, tgt, rule, rec)
		return
	}
	p.forward(w, r, out, src, t, tgt, rule, rec)
}

// headerFields counts the fields of h: a name sent n times is n fields,
// as HTTP/1.1's parser counts them (HTTP/2 has no other limit on how many
// times a name repeats).
func headerFields(h http.Header) int {
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	return n
}

// setEscapedPath sets u's path from its escaped form.
func setEscapedPath(u *url.URL, escaped string) {
	if escaped == u.EscapedPath() {
		return
	}
	if p, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = p, escaped
		if u.EscapedPath() != escaped {
			u.RawPath = ""
		}
	}
}

// defaultRule sends a request that no route claims to the service it was
// addressed to, or to the workload.
func (p *Proxy) defaultRule(tgt target) *config.Rule {
	if tgt.svc == nil {
		return &workloadRule
	}
	if r, ok := p.defaults.Load(tgt.svc); ok {
		return r.(*config.Rule)
	}
	r := &config.Rule{Backends: []config.Backend{config.ServiceBackend(tgt.svc)}}
	v, _ := p.defaults.LoadOrStore(tgt.svc, r)
	return v.(*config.Rule)
}

// workloadRule is the rule of workload-addressed traffic: no backend
// service, the workload itself.
var workloadRule = config.Rule{}

// outbound is the request sent upstream: r's method, path, query, host and
// body, its header without hop-by-hop fields, and the client in the
// forwarding headers.
func (p *Proxy) outbound(t *tunnel, r *http.Request) *http.Request {
	h := r.Header.Clone()
	te := removeHopHeaders(h)
	if te && r.ProtoMajor == 2 {
		h["Te"] = teTrailers
	}
	addForwarded(h, t)
	if _, ok := h["X-Request-Id"]; !ok {
		h["X-Request-Id"] = []string{newRequestID()}
	}
	// The request and its URL in one allocation.
	o := &struct {
		req http.Request
		url url.URL
	}{url: url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}}
	if r.Method == http.MethodOptions && r.RequestURI == "*" {
		o.url = url.URL{Opaque: "*"}
	}
	out := &o.req
	*out = http.Request{
		Method:        r.Method,
		URL:           &o.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          r.Host,
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Trailer:       r.Trailer,
	}
	if out.Body == nil {
		out.Body = http.NoBody
	}
	return out
}

// newRequestID is an x-request-id for requests that come without one, so
// that the access logs of every hop can be joined.
func newRequestID() string {
	var b [32]byte
	const hexdigits = "0123456789abcdef"
	for i, v := 0, rand.Uint64(); i < 16; i, v = i+1, v>>4 {
		b[i] = hexdigits[v&15]
	}
	for i, v := 16, rand.Uint64(); i < 32; i, v = i+1, v>>4 {
		b[i] = hexdigits[v&15]
	}
	return string(b[:])
}

// upstreamProtocol speaks HTTP/2 to endpoints of a port declared HTTP/2 or
// gRPC, and otherwise the client's own protocol.
func upstreamProtocol(port config.Protocol, r *http.Request) upstream.Protocol {
	switch {
	case port == config.HTTP2 || port == config.GRPC:
		return upstream.HTTP2
	case port == config.HTTP:
		return upstream.HTTP1
	case r.ProtoMajor == 2:
		return upstream.HTTP2
	}
	return upstream.HTTP1
}

// attempt is one try of a request.
type attempt struct {
	e       endpoint
	backend *config.Backend
	resp    *http.Response
	err     error
	outcome retry.Outcome
	cancel  context.CancelFunc
}

// forward sends out, retrying as the rule's policy and the budget allow,
// and streams the answer back.
func (p *Proxy) forward(w http.ResponseWriter, in, out *http.Request, src *countingBody, t *tunnel, tgt target, rule *config.Rule, rec *requestRecord) {
	ctx := in.Context()
	if rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.RequestTimeout)
		defer cancel()
	}
	pol := retry.Default()
	if rule.Retry != nil {
		pol = retry.FromRoute(rule.Retry)
	}
	budget := p.budget(tgt.name())
	budget.Deposit()

	var replay *retry.ReplayBody
	if out.Body != http.NoBody && out.ContentLength != 0 {
		replay = retry.NewReplayBody(out.Body, out.ContentLength, p.cfg.ReplayLimit)
		defer replay.Close()
		out.Body, _ = replay.Replay()
	}
	proto := upstreamProtocol(tgt.port.Protocol, in)
	snap := p.cfg.Mesh.Snapshot()
	var tried []*balance.Host
	for n := 0; ; n++ {
		a := p.try(ctx, out, src, t, tgt, rule, proto, snap, tried)
		if a.e.host != nil {
			tried = append(tried, a.e.host)
		}
		rec.attempt(a.e, a.err)
		if n < pol.Attempts && pol.Retryable(a.outcome) {
			body, replayable := out.Body, true
			if replay != nil {
				body, replayable = replay.Replay()
			}
			switch {
			case !replayable:
				rec.noRetry("body too large to replay")
			case !budget.Withdraw():
				rec.noRetry("retry budget exhausted")
				p.cfg.Telemetry.budgetExhausted(tgt.name())
			default:
				a.discard()
				p.cfg.Telemetry.retried(tgt.name(), a.outcome)
				if !sleepCtx(ctx, pol.Delay(n, rand.Float64)) {
					p.fail(w, rec, ctx.Err(), nil)
					return
				}
				out.Body = body
				continue
			}
		}
		if a.err != nil {
			a.discard()
			if err := src.failed(); err != nil {
				p.failDownstream(w, rec, err)
				return
			}
			p.fail(w, rec, a.err, ctx.Err())
			return
		}
		p.mirror(in, out, rule, replay, t, tgt)
		p.respond(w, in, a, rule, rec)
		return
	}
}

// try makes one attempt: a backend by weight, one of its endpoints, and
// the round trip, bounded by the rule's per-attempt timeout. The endpoint
// stays "in flight" until the response body is done. src is the client's
// request body (nil for none): an attempt that failed because reading it
// failed says nothing about the endpoint.
func (p *Proxy) try(ctx context.Context, out *http.Request, src *countingBody, t *tunnel, tgt target, rule *config.Rule, proto upstream.Protocol, snap *meshstate.Snapshot, tried []*balance.Host) attempt {
	var a attempt
	var eps *endpointSet
	if tgt.svc == nil {
		eps = p.targetEndpoints(snap, tgt, t.dst)
	} else {
		i := balance.PickBackend(rule.Backends, rand.Uint64)
		if i < 0 {
			a.err = errNoBackend
			a.outcome = retry.Outcome{} // nothing to retry on
			return a
		}
		a.backend = &rule.Backends[i]
		port := a.backend.Port
		if port == 0 {
			port = t.dst.Port()
		}
		eps = p.endpoints(snap, a.backend.Key(), port, t.dst.Addr().Is4())
	}
	e, ok := eps.pick(tried)
	if !ok && len(tried) > 0 {
		// Every endpoint was tried: a retry goes to one of them again
		// rather than fail a request that a second try may serve (the
		// only endpoint of a service, most often).
		e, ok = eps.pick(nil)
	}
	if !ok {
		a.err = errNoEndpoint
		a.outcome = retry.Outcome{}
		return a
	}
	a.e = e
	req := out
	if a.backend != nil && a.backend.Filters.RequestHeaders != nil {
		req = out.Clone(out.Context())
		req.Body = out.Body
		filter.Headers(req.Header, a.backend.Filters.RequestHeaders)
	}
	actx, cancel := ctx, context.CancelFunc(func() {})
	if rule.BackendTimeout > 0 {
		actx, cancel = context.WithTimeout(ctx, rule.BackendTimeout)
	}
	a.cancel = cancel
	e.host.Begin()
	a.resp, a.err = p.cfg.Upstream.RoundTrip(actx, e.ep, proto, req, t.upHeader)
	a.outcome = classify(a.resp, a.err, actx)
	if a.err != nil && src.failed() != nil {
		// The client's body broke (malformed, or the client went away):
		// not the endpoint's failure, and not one a retry mends.
		a.outcome = retry.Outcome{}
	}
	if a.err != nil {
		e.host.End(a.outcome.Outlier())
		cancel()
	}
	return a
}

// discard ends an attempt whose answer is not used.
func (a *attempt) discard() {
	if a.resp != nil {
		a.resp.Body.Close()
		a.e.host.End(a.outcome.Outlier())
		a.resp = nil
	}
	if a.cancel != nil {
		a.cancel()
	}
}

var errNoBackend = errors.New("the route has no backend with a weight")

// classify says what happened to an attempt, for the retry policy and
// outlier detection.
func classify(resp *http.Response, err error, ctx context.Context) retry.Outcome {
	if err == nil {
		o := retry.Outcome{Kind: retry.Response, Status: resp.StatusCode, GRPCStatus: -1}
		// A trailers-only gRPC answer carries its status in the headers.
		if v := resp.Header.Get("Grpc-Status"); v != "" {
			if n, err := strconv.Atoi(v); err == nil {
				o.GRPCStatus = n
			}
		}
		return o
	}
	var ce *upstream.ConnectError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return retry.Outcome{Kind: retry.Timeout}
	case ctx.Err() != nil:
		// The client went away: nothing to retry, and nothing learnt
		// about the endpoint (outlier detection must not count it, or
		// clients that cancel would eject healthy endpoints).
		return retry.Outcome{}
	case errors.As(err, &ce):
		return retry.Outcome{Kind: retry.ConnectFailure}
	case errors.Is(err, upstream.ErrRefused):
		return retry.Outcome{Kind: retry.RefusedStream}
	}
	return retry.Outcome{Kind: retry.Reset}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fail answers a request that got no response from any endpoint.
func (p *Proxy) fail(w http.ResponseWriter, rec *requestRecord, err, ctxErr error) {
	var ce *upstream.ConnectError
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		p.refuse(w, rec, http.StatusGatewayTimeout, flagTimeout, "upstream request timeout")
	case errors.Is(err, errNoBackend):
		// Gateway API: a rule whose backends are all invalid (or carry
		// no weight) answers 500; istiod-lite and Compile send rules they
		// could not apply that way, so that they fail closed.
		p.refuse(w, rec, http.StatusInternalServerError, flagNoRoute, "the route has no usable backend")
	case errors.Is(err, errNoEndpoint):
		p.refuse(w, rec, http.StatusServiceUnavailable, flagNoHealthy, "no healthy upstream")
	case errors.As(err, &ce):
		p.refuse(w, rec, http.StatusServiceUnavailable, flagConnect, "upstream connect error: "+ce.Err.Error())
	case errors.Is(ctxErr, context.Canceled):
		rec.flag(flagDownstreamDisconnect)
	default:
		p.refuse(w, rec, http.StatusServiceUnavailable, flagReset, "upstream reset before response: "+err.Error())
	}
}

// failDownstream answers a request whose body could not be read from the
// client: a malformed body (a chunked framing error) gets the status its
// parser chose, and the connection closes; a client that went away gets
// nothing it would read, but the record says so.
func (p *Proxy) failDownstream(w http.ResponseWriter, rec *requestRecord, err error) {
	if pe, ok := errors.AsType[*http1.ProtocolError](err); ok && pe.Status >= 400 && pe.Status < 500 {
		p.refuse(w, rec, pe.Status, flagDownstreamProtocol, "bad request body: "+pe.Reason)
		return
	}
	rec.flag(flagDownstreamDisconnect)
	p.refuse(w, rec, http.StatusBadRequest, flagDownstreamProtocol, "request body incomplete")
}

// refuse answers with a short text body of the waypoint's own.
func (p *Proxy) refuse(w http.ResponseWriter, rec *requestRecord, code int, flag, msg string) {
	rec.flag(flag)
	rec.reason(msg)
	h := w.Header()
	if isGRPC(rec.r) {
		// A gRPC client reads the status from grpc-status, not the HTTP
		// one: answer trailers-only, as Envoy's local replies do.
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{strconv.Itoa(grpcCode(code))}
		h["Grpc-Message"] = []string{grpcMessage(msg)}
		rec.grpcStatus(h)
		rec.status(http.StatusOK)
		w.WriteHeader(http.StatusOK)
		return
	}
	rec.status(code)
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(msg) + 1)}
	if code == http.StatusBadRequest || code == http.StatusRequestHeaderFieldsTooLarge {
		h["Connection"] = []string{"close"}
	}
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// respond streams an endpoint's answer to the client, through the
// response filters.
func (p *Proxy) respond(w http.ResponseWriter, in *http.Request, a attempt, rule *config.Rule, rec *requestRecord) {
	resp := a.resp
	defer a.cancel()
	defer func() {
		resp.Body.Close()
		a.e.host.End(a.outcome.Outlier())
	}()
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, vv := range resp.Header {
		h[k] = vv
	}
	delete(h, "Content-Length")
	if resp.ContentLength >= 0 && in.Method != http.MethodHead && bodyAllowed(resp.StatusCode) {
		h["Content-Length"] = contentLength(resp)
	} else if in.Method == http.MethodHead {
		if v := resp.Header["Content-Length"]; len(v) > 0 {
			h["Content-Length"] = v
		}
	}
	if m := rule.Filters.ResponseHeaders; m != nil {
		filter.Headers(h, m)
	}
	if a.backend != nil && a.backend.Filters.ResponseHeaders != nil {
		filter.Headers(h, a.backend.Filters.ResponseHeaders)
	}
	rec.status(resp.StatusCode)
	rec.grpcStatus(resp.Header)
	w.WriteHeader(resp.StatusCode)
	n, err := copyBody(w, resp.Body, resp.ContentLength)
	rec.responseBytes(n)
	if err != nil {
		rec.flag(flagUpstreamReset)
		// The status line is out: the only way to tell the client the
		// body is cut short is to abort the stream (HTTP/2 RST_STREAM,
		// HTTP/1.1 a closed connection).
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	rec.grpcStatus(resp.Trailer)
}

// contentLength is the Content-Length field of resp's body: the one the
// endpoint sent when it says the same as resp.ContentLength (most often),
// else a new one.
func contentLength(resp *http.Response) []string {
	if v := resp.Header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n == resp.ContentLength {
			return v
		}
	}
	return []string{strconv.FormatInt(resp.ContentLength, 10)}
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// copyBufs holds the buffers bodies are copied through: each request's
// memory is bounded by one buffer, whatever the body's size.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies a response body of length bytes (-1: unknown). A body
// of unknown length streams (server-sent events, gRPC): each read is
// flushed to the client. A body of known length is flushed when a read
// comes up short of the buffer before the body is whole, a sign that
// the endpoint paused: the client then gets what there is (and the head)
// now rather than when the rest comes. A body read whole in one go is
// not flushed until the response ends, so it leaves in one write.
func copyBody(w http.ResponseWriter, body io.Reader, length int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var rc *http.ResponseController // made when first needed
	var total int64
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, nil // the client went away: nothing to tell it
			}
			if rerr == nil && (length < 0 || n < len(buf) && total < length) {
				if rc == nil {
					rc = http.NewResponseController(w)
				}
				if err := rc.Flush(); err != nil {
					return total, nil
				}
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// forwardUpgrade carries a WebSocket upgrade: one attempt, and once the
// endpoint answers 101, the two connections are spliced.
func (p *Proxy) forwardUpgrade(w http.ResponseWriter, in, out *http.Request, t *tunnel, tgt target, rule *config.Rule, rec *requestRecord) {
	ctx, cancel := context.WithTimeout(in.Context(), p.cfg.ConnectTimeout)
	a := p.try(ctx, out, nil, t, tgt, rule, upstream.HTTP1, p.cfg.Mesh.Snapshot(), nil)
	cancel()
	rec.attempt(a.e, a.err)
	if a.err != nil {
		p.fail(w, rec, a.err, nil)
		return
	}
	if a.resp.StatusCode != http.StatusSwitchingProtocols {
		p.respond(w, in, a, rule, rec)
		return
	}
	defer a.e.host.End(outlier.Success)
	up, ok := a.resp.Body.(io.ReadWriteCloser)
	if !ok {
		a.resp.Body.Close()
		p.refuse(w, rec, http.StatusBadGateway, flagUpstreamProtocol, "upstream upgrade without a connection")
		return
	}
	defer up.Close()
	h := w.Header()
	for k, vv := range a.resp.Header {
		h[k] = vv
	}
	rec.status(http.StatusSwitchingProtocols)
	w.WriteHeader(http.StatusSwitchingProtocols)
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	sent, recv := spliceStreams(client, up)
	rec.requestBytes(sent)
	rec.responseBytes(recv)
}

// spliceStreams copies both ways until both directions end.
func spliceStreams(client net.Conn, up io.ReadWriteCloser) (sent, recv int64) {
	done := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(up, client)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- n
	}()
	recv, _ = io.Copy(client, up)
	if cw, ok := client.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		client.Close()
	}
	sent = <-done
	return sent, recv
}

// sample draws whether a request is mirrored, for a fraction num/den
// (den 0 means a percentage).
func sample(num, den uint32) bool {
	if den == 0 {
		den = 100
	}
	return num >= den || rand.Uint32N(den) < num
}

// mirror sends copies of the request to the rule's mirror backends, in
// the background: a mirror never delays or fails the request. A body is
// mirrored only if it was kept whole for replay.
func (p *Proxy) mirror(in, out *http.Request, rule *config.Rule, replay *retry.ReplayBody, t *tunnel, tgt target) {
	for i := range rule.Filters.Mirrors {
		m := &rule.Filters.Mirrors[i]
		if !sample(m.Numerator, m.Denominator) {
			continue
		}
		var body []byte
		if replay != nil {
			b, ok := replay.Kept()
			if !ok {
				p.cfg.Telemetry.mirrorDropped("body not kept")
				continue
			}
			body = b
		}
		if p.mirrors.Add(1) > int64(p.cfg.MaxMirrors) {
			p.mirrors.Add(-1)
			p.cfg.Telemetry.mirrorDropped("too many mirrors in flight")
			continue
		}
		req := out.Clone(context.Background())
		req.Body, req.ContentLength = http.NoBody, 0
		if body != nil {
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		port := m.Backend.Port
		if port == 0 {
			port = t.dst.Port()
		}
		proto := upstreamProtocol(tgt.port.Protocol, in)
		if !p.enter() {
			p.mirrors.Add(-1)
			p.cfg.Telemetry.mirrorDropped("closing")
			continue
		}
		go func() {
			defer p.wg.Done()
			defer p.mirrors.Add(-1)
			p.sendMirror(req, m.Backend.Key(), port, proto, t)
		}()
	}
}

// sendMirror sends one mirrored request and drops its answer.
func (p *Proxy) sendMirror(req *http.Request, key string, port uint16, proto upstream.Protocol, t *tunnel) {
	ctx, cancel := context.WithTimeout(p.ctx, mirrorTimeout)
	defer cancel()
	snap := p.cfg.Mesh.Snapshot()
	e, ok := p.endpoints(snap, key, port, t.dst.Addr().Is4()).pick(nil)
	if !ok {
		p.cfg.Telemetry.mirrorDropped("no healthy endpoint")
		return
	}
	e.host.Begin()
	resp, err := p.cfg.Upstream.RoundTrip(ctx, e.ep, proto, req, t.upHeader)
	if err != nil {
		e.host.End(classify(nil, err, ctx).Outlier())
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	e.host.End(classify(resp, nil, ctx).Outlier())
}

// mirrorTimeout bounds a mirrored request.
const mirrorTimeout = 30 * time.Second

// countingBody counts the bytes read from a client's request body, and
// keeps the first error reading it, so that a failed attempt can be told
// apart: the client's fault (a malformed body, a client gone) or the
// endpoint's. Transports read it on goroutines of their own.
type countingBody struct {
	io.ReadCloser
	n   *atomic.Int64
	err atomic.Pointer[error]
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// failed returns the error reading the body met, if any; nil for a nil
// body.
func (b *countingBody) failed() error {
	if b == nil {
		return nil
	}
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

// isGRPC reports whether r is a gRPC call (any application/grpc content
// type, grpc-web included).
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// grpcCode is the gRPC status of a request the waypoint refuses with HTTP
// status code: Envoy's mapping, except that 429 is RESOURCE_EXHAUSTED (what
// a rate-limited gRPC client expects) rather than UNAVAILABLE.
func grpcCode(code int) int {
	switch code {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// grpcMessage percent-encodes msg as the grpc-message header requires:
// every byte outside printable ASCII, and '%' itself.
func grpcMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
