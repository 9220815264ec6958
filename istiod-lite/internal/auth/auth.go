// Package auth authenticates istiod-lite's gRPC callers: a Kubernetes
// service-account token, sent as "authorization: Bearer <token>", checked
// with a TokenReview against the apiserver for the required audiences.
//
// Answers are cached, so a node agent asking for many certificates costs one
// review; a success never outlives the token's own expiry. Tokens that are
// not JWTs, or already expired, are refused without a review, and failed
// reviews are rate-limited per caller address, so a client sending bad tokens
// cannot make istiod hammer the apiserver.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Extra keys the apiserver sets for pod-bound service-account tokens.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

// Defaults of a TokenReviewer's limits.
const (
	// DefaultMaxCacheEntries bounds the cache of review answers.
	DefaultMaxCacheEntries = 10_000
	// DefaultFailureTTL is how long a rejected token stays rejected without
	// another review.
	DefaultFailureTTL = 10 * time.Second
	// DefaultFailedReviewRate and DefaultFailedReviewBurst limit the
	// reviews of one caller address whose tokens keep being rejected.
	DefaultFailedReviewRate  = rate.Limit(1)
	DefaultFailedReviewBurst = 10
	// maxSources bounds the per-address limiters kept.
	maxSources = 10_000
)

// Caller is an authenticated service account.
type Caller struct {
	Namespace, ServiceAccount string
	// PodName, PodUID and NodeName are set for pod-bound tokens.
	PodName, PodUID, NodeName string
}

// Reviewer creates TokenReviews (the apiserver's TokenReview client).
type Reviewer interface {
	Create(ctx context.Context, tr *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}

// TokenReviewer authenticates bearer tokens with TokenReview.
type TokenReviewer struct {
	reviewer  Reviewer
	audiences []string
	ttl       time.Duration
	now       func() time.Time

	// Limits (the defaults above; tests lower them).
	maxEntries  int
	failureTTL  time.Duration
	failRate    rate.Limit
	failBurst   int
	maxLimiters int

	mu    sync.Mutex
	cache map[[32]byte]cached
	// inflight shares one review among concurrent callers with one token
	// (a node agent asking for many certificates at once).
	inflight map[[32]byte]*flight
	// failures limits the failed reviews per caller address.
	failures map[string]*rate.Limiter
}

type flight struct {
	done   chan struct{}
	caller *Caller
	err    error
}

type cached struct {
	caller  *Caller
	err     error
	expires time.Time
}

// NewTokenReviewer returns an authenticator that requires tokens for one of
// audiences (none: the apiserver's default) and caches each success for ttl
// (at most until the token expires) and each rejection for
// DefaultFailureTTL (at most ttl).
func NewTokenReviewer(r Reviewer, audiences []string, ttl time.Duration) *TokenReviewer {
	return &TokenReviewer{
		reviewer: r, audiences: audiences, ttl: ttl, now: time.Now,
		maxEntries: DefaultMaxCacheEntries, failureTTL: min(DefaultFailureTTL, ttl),
		failRate: DefaultFailedReviewRate, failBurst: DefaultFailedReviewBurst, maxLimiters: maxSources,
		cache: map[[32]byte]cached{}, inflight: map[[32]byte]*flight{}, failures: map[string]*rate.Limiter{},
	}
}

// ErrUnauthenticated is returned for missing, malformed or rejected tokens.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrTooManyFailures is returned, without a review, to a caller address
// whose recent tokens were rejected too often.
var ErrTooManyFailures = errors.New("too many failed authentications from this address; retry later")

// FromContext authenticates the bearer token in a gRPC call's metadata. Its
// errors are gRPC statuses (Unauthenticated; ResourceExhausted when the
// caller's address failed too often; Unavailable when the apiserver could
// not be asked).
func (t *TokenReviewer) FromContext(ctx context.Context) (*Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return nil, status.Error(codes.Unauthenticated, "missing bearer token")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return nil, status.Error(codes.Unauthenticated, "malformed authorization header")
	}
	c, err := t.Authenticate(ctx, strings.TrimSpace(tok))
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrTooManyFailures):
		return nil, status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return c, nil
}

// Authenticate reviews token. Errors wrapping ErrUnauthenticated mean the
// token is not acceptable; ErrTooManyFailures that the caller (its gRPC
// peer address in ctx) must wait; others that the review could not be made.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (*Caller, error) {
	now := t.now()
	exp, err := jwtExpiry(token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if !exp.IsZero() && !now.Before(exp) {
		return nil, fmt.Errorf("%w: token expired at %s", ErrUnauthenticated, exp.UTC().Format(time.RFC3339))
	}
	h := sha256.Sum256([]byte(token))
	src := source(ctx)
	t.mu.Lock()
	if c, ok := t.cache[h]; ok && now.Before(c.expires) {
		t.mu.Unlock()
		return c.caller, c.err
	}
	if f, ok := t.inflight[h]; ok {
		t.mu.Unlock()
		select {
		case <-f.done:
			return f.caller, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// Every review takes a token from the caller's budget up front (so
	// concurrent bad tokens are limited too); only a rejection keeps it.
	charge := t.limiter(src, now).ReserveN(now, 1)
	if !charge.OK() || charge.DelayFrom(now) > 0 {
		charge.CancelAt(now)
		t.mu.Unlock()
		return nil, ErrTooManyFailures
	}
	f := &flight{done: make(chan struct{})}
	t.inflight[h] = f
	t.mu.Unlock()

	f.caller, f.err = t.review(ctx, token)
	t.mu.Lock()
	delete(t.inflight, h)
	switch {
	case f.err == nil:
		charge.CancelAt(now)
		expires := now.Add(t.ttl)
		if !exp.IsZero() && exp.Before(expires) {
			expires = exp
		}
		t.store(h, cached{caller: f.caller, expires: expires}, now)
	case errors.Is(f.err, ErrUnauthenticated):
		t.store(h, cached{err: f.err, expires: now.Add(t.failureTTL)}, now)
	default:
		charge.CancelAt(now) // the apiserver's trouble, not the caller's
	}
	t.mu.Unlock()
	close(f.done)
	return f.caller, f.err
}

// store caches an answer, keeping the cache within maxEntries: expired
// entries go first, then arbitrary ones (an eighth, so a full cache is not
// swept on every insert). The caller holds t.mu.
func (t *TokenReviewer) store(h [32]byte, c cached, now time.Time) {
	if _, ok := t.cache[h]; !ok && len(t.cache) >= t.maxEntries {
		for k, e := range t.cache {
			if !now.Before(e.expires) {
				delete(t.cache, k)
			}
		}
		for k := range t.cache {
			if len(t.cache) < t.maxEntries-t.maxEntries/8 {
				break
			}
			delete(t.cache, k)
		}
	}
	t.cache[h] = c
}

// limiter returns src's budget of failed reviews, keeping at most
// maxLimiters. The caller holds t.mu.
func (t *TokenReviewer) limiter(src string, now time.Time) *rate.Limiter {
	if lim := t.failures[src]; lim != nil {
		return lim
	}
	if len(t.failures) >= t.maxLimiters {
		// A full budget holds no state worth keeping.
		for k, l := range t.failures {
			if l.TokensAt(now) >= float64(t.failBurst) {
				delete(t.failures, k)
			}
		}
		for k := range t.failures {
			if len(t.failures) < t.maxLimiters {
				break
			}
			delete(t.failures, k)
		}
	}
	lim := rate.NewLimiter(t.failRate, t.failBurst)
	t.failures[src] = lim
	return lim
}

// source is the caller's address without its port ("" when unknown).
func source(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	s := p.Addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

func (t *TokenReviewer) review(ctx context.Context, token string) (*Caller, error) {
	tr, err := t.reviewer.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: t.audiences}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	return callerFrom(tr, t.audiences)
}

func callerFrom(tr *authnv1.TokenReview, audiences []string) (*Caller, error) {
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "token rejected"
		}
		return nil, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	if len(audiences) > 0 {
		// The TokenReview contract: an audience-aware authenticator answers
		// with the requested audiences the token is valid for. None means
		// it ignored spec.audiences and the token is only known to be valid
		// for the apiserver's own audience: not for us.
		if len(tr.Status.Audiences) == 0 {
			return nil, fmt.Errorf("%w: the token authenticator is not audience-aware; cannot confirm the token is for %v", ErrUnauthenticated, audiences)
		}
		if !slices.ContainsFunc(tr.Status.Audiences, func(a string) bool { return slices.Contains(audiences, a) }) {
			return nil, fmt.Errorf("%w: token is for audiences %v, want one of %v", ErrUnauthenticated, tr.Status.Audiences, audiences)
		}
	}
	// system:serviceaccount:<namespace>:<name>
	parts := strings.Split(tr.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return nil, fmt.Errorf("%w: %q is not a service account", ErrUnauthenticated, tr.Status.User.Username)
	}
	c := &Caller{Namespace: parts[2], ServiceAccount: parts[3]}
	extra := tr.Status.User.Extra
	c.PodName = first(extra[ExtraPodName])
	c.PodUID = first(extra[ExtraPodUID])
	c.NodeName = first(extra[ExtraNodeName])
	return c, nil
}

func first(v authnv1.ExtraValue) string {
	if len(v) == 1 {
		return v[0]
	}
	return ""
}
