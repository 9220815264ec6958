// Package auth authenticates istiod-lite's gRPC callers: a Kubernetes
// service-account token, sent as "authorization: Bearer <token>", checked
// with a TokenReview against the apiserver for the required audiences.
//
// Answers are cached, so a node agent asking for many certificates costs one
// review; a success never outlives the token's own expiry. Tokens that are
// not JWTs, or already expired, are refused without a review; rejected
// tokens are rate-limited per caller address, and so are the reviews of one
// address under way at once, so a client sending bad tokens cannot make
// istiod hammer the apiserver. Callers sharing an address (behind SNAT)
// share its budget; only rejections spend it.
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
	// DefaultReviewsPerSource bounds the reviews of one caller address
	// under way at once; more wait for a free one.
	DefaultReviewsPerSource = 4
	// maxSources bounds the per-address states kept.
	maxSources = 10_000
	// reviewTimeout bounds one TokenReview.
	reviewTimeout = 10 * time.Second
	// expiryLeeway is the clock skew the apiserver allows past a token's
	// exp (its JWT validator's default).
	expiryLeeway = time.Minute
)

// Caller is an authenticated service account.
type Caller struct {
	Namespace, ServiceAccount string
	// PodName, PodUID and NodeName are set for pod-bound tokens.
	PodName, PodUID, NodeName string
}

// Account is the caller's service account as "<namespace>/<name>".
func (c *Caller) Account() string { return c.Namespace + "/" + c.ServiceAccount }

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
	maxEntries       int
	failureTTL       time.Duration
	failRate         rate.Limit
	failBurst        int
	maxSources       int
	reviewsPerSource int

	mu    sync.Mutex
	cache map[[32]byte]cached
	// inflight shares one review among concurrent callers with one token
	// (a node agent asking for many certificates at once).
	inflight map[[32]byte]*flight
	// sources holds each caller address's budget and reviews under way.
	sources map[string]*sourceState
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
		failRate: DefaultFailedReviewRate, failBurst: DefaultFailedReviewBurst,
		maxSources: maxSources, reviewsPerSource: DefaultReviewsPerSource,
		cache: map[[32]byte]cached{}, inflight: map[[32]byte]*flight{}, sources: map[string]*sourceState{},
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
	// The apiserver allows for clock skew past exp; so does this early
	// refusal, leaving the last word to the review.
	if !exp.IsZero() && !now.Before(exp.Add(expiryLeeway)) {
		return nil, fmt.Errorf("%w: token expired at %s", ErrUnauthenticated, exp.UTC().Format(time.RFC3339))
	}
	h := sha256.Sum256([]byte(token))
	t.mu.Lock()
	if c, f, done := t.lookup(h, now); done {
		t.mu.Unlock()
		return c.caller, c.err
	} else if f != nil {
		t.mu.Unlock()
		return f.wait(ctx)
	}
	src := t.source(source(ctx), now)
	t.mu.Unlock()

	// At most reviewsPerSource reviews of one address run at once, so
	// concurrent bad tokens cannot overrun its budget by much.
	select {
	case src.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	t.mu.Lock()
	// Another caller may have answered or started the review meanwhile.
	if c, f, done := t.lookup(h, now); done || f != nil {
		t.mu.Unlock()
		<-src.slots
		if done {
			return c.caller, c.err
		}
		return f.wait(ctx)
	}
	if src.failures.TokensAt(now) < 1 {
		t.mu.Unlock()
		<-src.slots
		return nil, ErrTooManyFailures
	}
	f := &flight{done: make(chan struct{})}
	t.inflight[h] = f
	t.mu.Unlock()
	// The review runs to its end even if this caller goes away, so that
	// cancelling calls neither escapes the budget nor fails the callers
	// sharing the review.
	go t.fly(context.WithoutCancel(ctx), h, f, token, exp, src)
	return f.wait(ctx)
}

// lookup returns the cached answer for h (done), or the review of h under
// way. The caller holds t.mu.
func (t *TokenReviewer) lookup(h [32]byte, now time.Time) (c cached, f *flight, done bool) {
	if c, ok := t.cache[h]; ok && now.Before(c.expires) {
		return c, nil, true
	}
	return cached{}, t.inflight[h], false
}

func (f *flight) wait(ctx context.Context) (*Caller, error) {
	select {
	case <-f.done:
		return f.caller, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fly reviews token for the flight f, caches the answer, charges a
// rejection to src and frees src's slot.
func (t *TokenReviewer) fly(ctx context.Context, h [32]byte, f *flight, token string, exp time.Time, src *sourceState) {
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	f.caller, f.err = t.review(ctx, token)
	now := t.now()
	t.mu.Lock()
	delete(t.inflight, h)
	switch {
	case f.err == nil:
		expires := now.Add(t.ttl)
		if !exp.IsZero() && exp.Before(expires) {
			expires = exp
		}
		t.store(h, cached{caller: f.caller, expires: expires}, now)
	case errors.Is(f.err, ErrUnauthenticated):
		t.store(h, cached{err: f.err, expires: now.Add(t.failureTTL)}, now)
		// Into debt if need be: the more failures, the longer the wait.
		src.failures.ReserveN(now, 1)
	default:
		// The apiserver's trouble, not the caller's: nothing cached or charged.
	}
	t.mu.Unlock()
	<-src.slots
	close(f.done)
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

// sourceState is what is kept per caller address.
type sourceState struct {
	// failures is the address's budget of rejected reviews.
	failures *rate.Limiter
	// slots holds one token per review of the address under way.
	slots chan struct{}
}

// idle reports whether st holds nothing worth keeping: no review under way
// and a full budget.
func (st *sourceState) idle(now time.Time, burst int) bool {
	return len(st.slots) == 0 && st.failures.TokensAt(now) >= float64(burst)
}

// source returns addr's state, keeping at most maxSources. The caller
// holds t.mu.
func (t *TokenReviewer) source(addr string, now time.Time) *sourceState {
	if st := t.sources[addr]; st != nil {
		return st
	}
	if len(t.sources) >= t.maxSources {
		for k, st := range t.sources {
			if st.idle(now, t.failBurst) {
				delete(t.sources, k)
			}
		}
		for k, st := range t.sources {
			if len(t.sources) < t.maxSources {
				break
			}
			if len(st.slots) == 0 {
				delete(t.sources, k)
			}
		}
	}
	st := &sourceState{failures: rate.NewLimiter(t.failRate, t.failBurst), slots: make(chan struct{}, t.reviewsPerSource)}
	t.sources[addr] = st
	return st
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
