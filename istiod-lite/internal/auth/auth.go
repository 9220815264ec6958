// Package auth authenticates istiod-lite's gRPC callers: a Kubernetes
// service-account token, sent as "authorization: Bearer <token>", checked
// with a TokenReview against the apiserver. Results are cached briefly, so a
// node agent asking for many certificates costs one review.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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

	mu    sync.Mutex
	cache map[[32]byte]cached
	// inflight shares one review among concurrent callers with one token
	// (a node agent asking for many certificates at once).
	inflight map[[32]byte]*flight
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
// audiences (none: the apiserver's default) and caches each answer for ttl
// (successes) or a tenth of it (failures, so a fixed token works quickly).
func NewTokenReviewer(r Reviewer, audiences []string, ttl time.Duration) *TokenReviewer {
	return &TokenReviewer{reviewer: r, audiences: audiences, ttl: ttl, now: time.Now, cache: map[[32]byte]cached{}, inflight: map[[32]byte]*flight{}}
}

// ErrUnauthenticated is returned for missing, malformed or rejected tokens.
var ErrUnauthenticated = errors.New("unauthenticated")

// FromContext authenticates the bearer token in a gRPC call's metadata. Its
// errors are gRPC statuses (Unauthenticated, or Unavailable when the
// apiserver could not be asked).
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
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return c, nil
}

// Authenticate reviews token. Errors wrapping ErrUnauthenticated mean the
// token is not acceptable; others that the review could not be made.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (*Caller, error) {
	h := sha256.Sum256([]byte(token))
	now := t.now()
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
	f := &flight{done: make(chan struct{})}
	t.inflight[h] = f
	t.mu.Unlock()

	f.caller, f.err = t.review(ctx, token)
	t.mu.Lock()
	delete(t.inflight, h)
	if f.err == nil || errors.Is(f.err, ErrUnauthenticated) {
		ttl := t.ttl
		if f.err != nil {
			ttl /= 10
		}
		if len(t.cache) > 100_000 { // bound memory under a flood of distinct tokens
			clear(t.cache)
		}
		t.cache[h] = cached{caller: f.caller, err: f.err, expires: now.Add(ttl)}
	}
	t.mu.Unlock()
	close(f.done)
	return f.caller, f.err
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
