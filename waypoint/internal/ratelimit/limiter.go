package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
)

// Defaults of the zero Options fields.
const (
	DefaultMaxKeys     = 10_000
	DefaultDomain      = "skiff"
	DefaultTimeout     = 20 * time.Millisecond
	DefaultLogInterval = 10 * time.Second
)

// Metric names (the Prometheus exporter adds "_total" to counters) and
// their labels.
const (
	// MetricRateLimited counts requests refused because a policy was over
	// its limit, by policy ("<namespace>/<name>"): a request several
	// policies refused counts once under each.
	MetricRateLimited = "skiff_rate_limited_requests"
	// MetricServiceErrors counts calls to the rate-limit service that gave
	// no usable answer, by reason (one of the Reason* values).
	MetricServiceErrors = "skiff_rate_limit_service_errors"
	// MetricServiceDuration is a histogram of the calls to the rate-limit
	// service, answered or not, in seconds (the exporter adds "_seconds"):
	// the latency a GLOBAL limit adds to a request.
	MetricServiceDuration = "skiff_rate_limit_service_duration"
	LabelPolicy           = "policy"
	LabelReason           = "reason"
)

// serviceDurationBounds are the histogram's bucket bounds, in seconds:
// fine below the default timeout, where the calls are.
func serviceDurationBounds() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25}
}

// Values of LabelReason.
const (
	// ReasonTimeout: no answer within Options.Timeout.
	ReasonTimeout = "timeout"
	// ReasonUnavailable: the service could not be reached.
	ReasonUnavailable = "unavailable"
	// ReasonError: the service answered with an error.
	ReasonError = "error"
	// ReasonBadResponse: the answer did not fit the request, or carried
	// no limit for a descriptor (the service knows no such domain).
	ReasonBadResponse = "bad_response"
	// ReasonNoService: a GLOBAL limit applies but no service address is
	// configured.
	ReasonNoService = "no_service"
)

var reasons = []string{ReasonTimeout, ReasonUnavailable, ReasonError, ReasonBadResponse, ReasonNoService}

// Options configure a Limiter. The zero value is a Limiter with local
// limits only, the real clock, and no metrics or logs.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxKeys bounds the buckets each policy keeps (one per client key);
	// 0 means DefaultMaxKeys.
	MaxKeys int
	// ServiceAddress is the rate-limit service's gRPC address (host:port,
	// or any gRPC target), spoken to in plaintext; "" means none, and
	// GLOBAL limits then fail as if it were down.
	ServiceAddress string
	// Domain is the domain sent with every request; "" means
	// DefaultDomain.
	Domain string
	// Timeout bounds each call to the service; 0 means DefaultTimeout,
	// negative only the request's own context.
	Timeout time.Duration
	// LogInterval is the least time between two log lines about service
	// failures; 0 means DefaultLogInterval.
	LogInterval time.Duration
	// Meter makes the counters; nil means none.
	Meter metric.Meter
	// Logger gets warnings: limits that cannot be enforced as written,
	// and service failures; nil means none.
	Logger *slog.Logger
}

// Limiter applies a waypoint's rate limits. It implements proxy.Limiter;
// Limit is safe for concurrent use, Update may run beside it.
type Limiter struct {
	now      func() time.Time
	epoch    time.Time
	maxKeys  int
	domain   string
	timeout  time.Duration
	log      *slog.Logger
	seed     maphash.Seed
	rejected metric.Int64Counter
	errs     metric.Int64Counter
	errOpts  map[string][]metric.AddOption
	calls    metric.Float64Histogram

	conn *grpc.ClientConn
	rls  rlsv3.RateLimitServiceClient

	snap     atomic.Pointer[snapshot]
	updateMu sync.Mutex

	failures      failureLog
	noServiceOnce sync.Once
}

var _ proxy.Limiter = (*Limiter)(nil)

// snapshot is the limits of one configuration.
type snapshot struct {
	services map[serviceKey][]*limit
	// states are the buckets by limit.stateKey, for the next Update.
	states map[string]*state
}

type serviceKey struct{ namespace, hostname string }

// New makes a Limiter. It connects to the rate-limit service lazily, on
// the first request a GLOBAL limit applies to.
func New(opts Options) (*Limiter, error) {
	l := &Limiter{
		now:     opts.Now,
		maxKeys: opts.MaxKeys,
		domain:  opts.Domain,
		timeout: opts.Timeout,
		log:     opts.Logger,
		seed:    maphash.MakeSeed(),
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.epoch = l.now()
	if l.maxKeys <= 0 {
		l.maxKeys = DefaultMaxKeys
	}
	if l.domain == "" {
		l.domain = DefaultDomain
	}
	if l.timeout == 0 {
		l.timeout = DefaultTimeout
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.failures.interval = opts.LogInterval
	if l.failures.interval <= 0 {
		l.failures.interval = DefaultLogInterval
	}
	m := opts.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("ratelimit")
	}
	var err error
	if l.rejected, err = m.Int64Counter(MetricRateLimited,
		metric.WithDescription("Requests refused because a rate-limit policy was over its limit, by policy")); err != nil {
		return nil, fmt.Errorf("ratelimit: creating %s: %w", MetricRateLimited, err)
	}
	if l.errs, err = m.Int64Counter(MetricServiceErrors,
		metric.WithDescription("Calls to the rate-limit service that gave no usable answer, by reason")); err != nil {
		return nil, fmt.Errorf("ratelimit: creating %s: %w", MetricServiceErrors, err)
	}
	if l.calls, err = m.Float64Histogram(MetricServiceDuration, metric.WithUnit("s"),
		metric.WithDescription("Time the calls to the rate-limit service took, answered or not"),
		metric.WithExplicitBucketBoundaries(serviceDurationBounds()...)); err != nil {
		return nil, fmt.Errorf("ratelimit: creating %s: %w", MetricServiceDuration, err)
	}
	l.errOpts = make(map[string][]metric.AddOption, len(reasons))
	for _, r := range reasons {
		l.errOpts[r] = reasonOpts(r)
	}
	if opts.ServiceAddress != "" {
		if err := l.dial(opts.ServiceAddress); err != nil {
			return nil, err
		}
	}
	l.snap.Store(&snapshot{})
	return l, nil
}

// Close closes the connection to the rate-limit service. Limit must not
// be called after.
func (l *Limiter) Close() error {
	if l.conn == nil {
		return nil
	}
	if err := l.conn.Close(); err != nil {
		return fmt.Errorf("ratelimit: closing the rate-limit service client: %w", err)
	}
	return nil
}

// nanos is the clock as nanoseconds since New, monotonic when the clock
// is.
func (l *Limiter) nanos() int64 { return int64(l.now().Sub(l.epoch)) }

// Update installs the limits of a configuration. Call it with each
// configuration before the proxy routes requests by it: a service the
// last Update did not have is not limited. A policy whose name, mode,
// limit, key and overrides are unchanged keeps its buckets (and its
// clients their remaining tokens); any other starts with full buckets.
// Limits that cannot be enforced as written are logged and enforced more
// strictly (see compile).
func (l *Limiter) Update(w *config.Waypoint) {
	l.updateMu.Lock()
	defer l.updateMu.Unlock()
	old := l.snap.Load()
	next := &snapshot{services: map[serviceKey][]*limit{}, states: map[string]*state{}}
	now := l.nanos()
	noService := false
	if w != nil {
		for _, svc := range w.Services {
			if svc == nil || len(svc.RateLimits) == 0 {
				continue
			}
			key := serviceKey{svc.Namespace, svc.Hostname}
			limits := make([]*limit, 0, len(svc.RateLimits))
			for i, rl := range svc.RateLimits {
				if rl == nil {
					continue
				}
				lim, warns := compile(rl, now, l.maxKeys)
				for _, msg := range warns {
					l.log.Warn("rate limit not enforced as written", "service", svc.Namespace+"/"+svc.Hostname,
						"index", i, "policy", rl.GetPolicy(), "problem", msg)
				}
				if st := next.states[lim.stateKey]; st != nil {
					lim.st = st
				} else if st := old.states[lim.stateKey]; st != nil {
					lim.st = st
				}
				next.states[lim.stateKey] = lim.st
				limits = append(limits, lim)
				noService = noService || (lim.global && l.rls == nil)
			}
			next.services[key] = append(next.services[key], limits...)
		}
	}
	l.snap.Store(next)
	if noService {
		l.noServiceOnce.Do(func() {
			l.log.Warn("GLOBAL rate limits apply but no rate-limit service address is configured: each request they cover takes its policy's failure mode")
		})
	}
}

// allowed is the verdict when no limit applies.
var allowed = proxy.LimitVerdict{Allowed: true}

// applied is one limit applied to one request.
type applied struct {
	lim *limit
	q   *quota
	p   *principal // the override's bucket; nil for the key's
	key uint64
	// st is where the limit stands once checked (known).
	st                 status
	known, taken, over bool
}

// Limit applies to r every limit of its service that covers its rule:
// the request goes on only if all of them allow it. Local limits are
// checked first; the rate-limit service is asked only if they all allow
// it. A refused request takes no tokens from the local limits that
// allowed it (the service counts its own).
//
// The verdict carries the RateLimit and RateLimit-Policy fields
// of the limit with the least remaining quota, for the proxy to add to
// the response, with Retry-After when refused (status 429). A GLOBAL limit
// whose service fails with failure mode DENY refuses with 500 and no
// fields. A service without limits costs no allocation.
func (l *Limiter) Limit(ctx context.Context, r proxy.LimitRequest) proxy.LimitVerdict {
	svc := r.Service
	if svc == nil || len(svc.RateLimits) == 0 {
		return allowed
	}
	var buf [4]applied
	ap := buf[:0]
	for _, lim := range l.snap.Load().services[serviceKey{svc.Namespace, svc.Hostname}] {
		if lim.applies(r.Rule) && !seen(ap, lim.st) {
			ap = append(ap, l.resolve(lim, &r))
		}
	}
	if len(ap) == 0 {
		return allowed
	}

	now := l.nanos()
	over, global := false, false
	for i := range ap {
		if ap[i].lim.global {
			global = true
		} else if !ap[i].take(now) {
			over = true
		}
	}
	if !over && global {
		var deny bool
		if deny, over = l.askService(ctx, &r, ap); deny {
			giveBack(ap)
			return proxy.LimitVerdict{Status: http.StatusInternalServerError}
		}
	}
	if over {
		giveBack(ap)
		return l.refuse(ctx, ap)
	}
	return report(ap)
}

// seen reports whether a limit sharing st was applied already: a policy
// that targets both a service and one of its routes counts a request once.
func seen(ap []applied, st *state) bool {
	for i := range ap {
		if ap[i].lim.st == st {
			return true
		}
	}
	return false
}

// resolve finds the quota and bucket key lim has for r's client.
func (l *Limiter) resolve(lim *limit, r *proxy.LimitRequest) applied {
	a := applied{lim: lim, q: lim.quota}
	if len(lim.st.principals) > 0 {
		if p := lim.st.principals[r.Peer.String()]; p != nil {
			a.p, a.q = p, p.q
			return a
		}
	}
	if lim.global {
		return a // the service gets the key's value in the descriptor
	}
	switch lim.key {
	case keyIdentity:
		a.key = maphash.String(l.seed, r.Peer.String())
	case keyIP:
		ip := r.Source.Unmap().As16()
		a.key = maphash.Bytes(l.seed, ip[:])
	case keyHeader:
		a.key = maphash.String(l.seed, headerValue(r.Request, lim.header))
	}
	return a
}

// headerValue is the first value of the request's header field key
// (canonical); "" when it is missing, so that leaving the header out puts
// a client in the bucket of all who do, not in none.
func headerValue(r *http.Request, key string) string {
	if r == nil {
		return ""
	}
	if v := r.Header[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// take takes a token from a local limit's bucket.
func (a *applied) take(now int64) bool {
	var ok bool
	var rem uint64
	var wait time.Duration
	if a.p != nil {
		a.p.mu.Lock()
		ok, rem, wait = a.p.b.take(a.q.rate, now)
		a.p.mu.Unlock()
	} else {
		ok, rem, wait = a.lim.st.buckets.take(a.key, a.q.rate, now)
	}
	a.st = status{h: &a.q.header, remaining: rem, wait: wait}
	a.known, a.taken, a.over = true, ok, !ok
	return ok
}

// giveBack returns the tokens a refused request took.
func giveBack(ap []applied) {
	for i := range ap {
		a := &ap[i]
		if !a.taken {
			continue
		}
		if a.p != nil {
			a.p.mu.Lock()
			a.p.b.give(a.q.rate)
			a.p.mu.Unlock()
		} else {
			a.lim.st.buckets.give(a.key, a.q.rate)
		}
		a.taken = false
	}
}

// refuse answers 429 for the limits over their limit, reporting the one
// that frees up last: Retry-After then holds for all of them.
func (l *Limiter) refuse(ctx context.Context, ap []applied) proxy.LimitVerdict {
	var worst *applied
	for i := range ap {
		a := &ap[i]
		if !a.over {
			continue
		}
		l.rejected.Add(ctx, 1, a.lim.limited...)
		if worst == nil || a.st.wait > worst.st.wait {
			worst = a
		}
	}
	return worst.st.verdict(false)
}

// report answers an allowed request with the fields of the limit with the
// least remaining quota (on a tie, the longer wait).
func report(ap []applied) proxy.LimitVerdict {
	var best *applied
	for i := range ap {
		a := &ap[i]
		if !a.known {
			continue
		}
		if best == nil || a.st.remaining < best.st.remaining ||
			(a.st.remaining == best.st.remaining && a.st.wait > best.st.wait) {
			best = a
		}
	}
	if best == nil {
		return allowed
	}
	return best.st.verdict(true)
}

// failureLog logs service failures at most once per interval, with how
// many there were since the last line.
type failureLog struct {
	interval time.Duration
	mu       sync.Mutex
	count    int
	logged   bool
	last     int64
}

// failed counts a failed call and logs it if the interval has passed.
// A missing address is logged once, by Update, not here.
func (l *Limiter) failed(ctx context.Context, reason string, err error) {
	l.errs.Add(ctx, 1, l.errOpts[reason]...)
	if reason == ReasonNoService {
		return // Update said so, once
	}
	now := l.nanos()
	f := &l.failures
	f.mu.Lock()
	f.count++
	if f.logged && now-f.last < int64(f.interval) {
		f.mu.Unlock()
		return
	}
	n := f.count
	f.count, f.logged, f.last = 0, true, now
	f.mu.Unlock()
	l.log.Warn("rate-limit service failed; GLOBAL limits took their failure mode",
		"failures", n, "reason", reason, "error", err, "next_log_after", f.interval)
}

var errNoService = errors.New("no rate-limit service address is configured")
