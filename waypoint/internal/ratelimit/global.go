package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
)

// Descriptor entry keys sent to the rate-limit service.
const (
	EntryPolicy         = "policy"
	EntrySourceIdentity = "source_identity"
	EntrySourceIP       = "source_ip"
	EntryHeader         = "header"
)

// dial makes the service client. grpc.NewClient does not connect: the
// first call does. The backoff between reconnections is short, so that a
// service back up is used again within a second, not after gRPC's default
// of up to two minutes.
func (l *Limiter) dial(addr string) error {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return fmt.Errorf("ratelimit: rate-limit service client for %q: %w", addr, err)
	}
	l.conn, l.rls = conn, rlsv3.NewRateLimitServiceClient(conn)
	return nil
}

// reasonOpts is the attribute option for one failure reason, made once.
func reasonOpts(reason string) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(LabelReason, reason)))}
}

// askService asks the rate-limit service about r's GLOBAL limits, and
// fills in their status. deny is set when the service failed and a limit
// that applies fails closed; over when a limit is over.
func (l *Limiter) askService(ctx context.Context, r *proxy.LimitRequest, ap []applied) (deny, over bool) {
	reason, err := l.ask(ctx, r, ap)
	if err == nil {
		for i := range ap {
			over = over || ap[i].over
		}
		return false, over
	}
	if ctx.Err() == nil { // a client that went away is no failure of the service
		l.failed(ctx, reason, err)
	}
	for i := range ap {
		a := &ap[i]
		if a.lim.global {
			a.known, a.over = false, false
			deny = deny || a.lim.failDeny
		}
	}
	return deny, false
}

var errBadResponse = errors.New("the answer does not match the request")

// ask calls ShouldRateLimit with a descriptor per GLOBAL limit of ap and
// sets their status from the answer. On failure it says why, as a
// LabelReason value.
func (l *Limiter) ask(ctx context.Context, r *proxy.LimitRequest, ap []applied) (string, error) {
	if l.rls == nil {
		return ReasonNoService, errNoService
	}
	req := &rlsv3.RateLimitRequest{Domain: l.domain}
	for i := range ap {
		if ap[i].lim.global {
			req.Descriptors = append(req.Descriptors, descriptor(&ap[i], r))
		}
	}
	callCtx := ctx
	if l.timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	start := l.now()
	resp, err := l.rls.ShouldRateLimit(callCtx, req)
	l.calls.Record(ctx, l.now().Sub(start).Seconds())
	if err != nil {
		switch grpcstatus.Code(err) {
		case codes.DeadlineExceeded:
			return ReasonTimeout, err
		case codes.Unavailable:
			return ReasonUnavailable, err
		}
		return ReasonError, err
	}
	statuses := resp.GetStatuses()
	if resp.GetOverallCode() == rlsv3.RateLimitResponse_UNKNOWN || len(statuses) != len(req.Descriptors) {
		return ReasonBadResponse, fmt.Errorf("%w: overall code %v, %d statuses for %d descriptors",
			errBadResponse, resp.GetOverallCode(), len(statuses), len(req.Descriptors))
	}
	for _, s := range statuses {
		// Without a current limit the service matched no limit at all:
		// it lets everything through, and would do so for good. That is
		// a domain missing from its configuration.
		if s.GetCurrentLimit() == nil || unitSeconds(s.GetCurrentLimit().GetUnit()) == 0 {
			return ReasonBadResponse, fmt.Errorf("%w: no limit for a descriptor; does the service's configuration have domain %q?",
				errBadResponse, l.domain)
		}
	}
	j, anyOver := 0, false
	for i := range ap {
		a := &ap[i]
		if !a.lim.global {
			continue
		}
		s := statuses[j]
		j++
		a.st = globalStatus(a, s)
		a.known, a.over = true, s.GetCode() == rlsv3.RateLimitResponse_OVER_LIMIT
		anyOver = anyOver || a.over
	}
	if !anyOver && resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
		for i := range ap { // over, without saying which: all of them
			ap[i].over = ap[i].over || ap[i].lim.global
		}
	}
	return "", nil
}

// descriptor is what the service keys and counts a GLOBAL limit by: the
// policy, then the client's key (none for a GLOBAL key), with the
// policy's own limit as the override.
func descriptor(a *applied, r *proxy.LimitRequest) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{
		Entries: make([]*ratelimitv3.RateLimitDescriptor_Entry, 1, 2),
		Limit:   &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: a.q.perUnit, Unit: a.q.unit},
	}
	d.Entries[0] = &ratelimitv3.RateLimitDescriptor_Entry{Key: EntryPolicy, Value: validUTF8(a.lim.name)}
	key, value := "", ""
	switch {
	case a.p != nil || a.lim.key == keyIdentity:
		key, value = EntrySourceIdentity, r.Peer.String()
	case a.lim.key == keyIP:
		key = EntrySourceIP
		if r.Source.IsValid() {
			value = r.Source.Unmap().String()
		}
	case a.lim.key == keyHeader:
		key, value = EntryHeader, headerValue(r.Request, a.lim.header)
	}
	if key != "" {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: key, Value: validUTF8(value)})
	}
	return d
}

// validUTF8 makes s fit a protobuf string: a header value may hold any
// byte, and a value that fails to encode would fail the call, so that a
// client could pick the failure mode. Replacing bad bytes only merges
// keys, which limits more, not less.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// globalStatus is where a GLOBAL limit stands after the service's answer.
// The quota announced is the one the service applied (its current limit),
// which is ours unless its configuration overrides it.
func globalStatus(a *applied, s *rlsv3.RateLimitResponse_DescriptorStatus) status {
	h := &a.q.header
	cl := s.GetCurrentLimit()
	window := unitSeconds(cl.GetUnit())
	if cl.GetRequestsPerUnit() != a.q.perUnit || int32(cl.GetUnit()) != int32(a.q.unit) {
		qh := newQuotaHeader(a.lim.name, uint64(cl.GetRequestsPerUnit()), window)
		h = &qh
	}
	wait := time.Duration(window) * time.Second
	if d := s.GetDurationUntilReset(); d != nil {
		wait = max(d.AsDuration(), 0)
	}
	return status{h: h, remaining: uint64(s.GetLimitRemaining()), wait: wait}
}
