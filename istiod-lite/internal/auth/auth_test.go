package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeReviewer stands in for the apiserver: it knows users by token and,
// like an audience-aware apiserver, answers with the requested audiences
// unless statusAudiences overrides them.
type fakeReviewer struct {
	calls atomic.Int32
	// active and maxActive count the reviews under way.
	active, maxActive atomic.Int32
	users             map[string]authnv1.UserInfo
	fail              error
	// statusAudiences, when non-nil, is returned as status.audiences.
	statusAudiences []string
	// entered, when set, receives each request before gate is waited for.
	entered chan struct{}
	gate    chan struct{}

	mu        sync.Mutex
	requested [][]string // spec.audiences of each review
}

func (f *fakeReviewer) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	f.calls.Add(1)
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for m := f.maxActive.Load(); n > m && !f.maxActive.CompareAndSwap(m, n); m = f.maxActive.Load() {
	}
	f.mu.Lock()
	f.requested = append(f.requested, tr.Spec.Audiences)
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	if f.fail != nil {
		return nil, f.fail
	}
	u, ok := f.users[tr.Spec.Token]
	auds := tr.Spec.Audiences
	if f.statusAudiences != nil {
		auds = f.statusAudiences
	}
	tr.Status = authnv1.TokenReviewStatus{Authenticated: ok, User: u}
	if ok {
		tr.Status.Audiences = auds
	}
	return tr, nil
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// jwt returns a JWT-shaped token (unsigned; the fake reviewer does not
// check signatures) with claims.
func jwt(t testing.TB, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "kid": "k"}) + "." + enc(claims) + ".c2ln"
}

// token is a JWT for sub expiring an hour after epoch.
func token(t testing.TB, sub string) string {
	return jwt(t, map[string]any{"sub": sub, "exp": epoch.Add(time.Hour).Unix()})
}

func ctxWith(auth string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", auth))
}

// fromAddr is a gRPC call's context from the peer at addr.
func fromAddr(addr string) context.Context {
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic(err)
	}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: ap})
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newReviewer(r Reviewer, audiences []string, ttl time.Duration) (*TokenReviewer, *clock) {
	a := NewTokenReviewer(r, audiences, ttl)
	c := &clock{now: epoch}
	a.now = c.Now
	return a, c
}

func TestFromContext(t *testing.T) {
	zt, user := token(t, "zt"), token(t, "user")
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{
		zt:   {Username: "system:serviceaccount:istio-system:ztunnel", Extra: map[string]authnv1.ExtraValue{ExtraNodeName: {"n1"}, ExtraPodName: {"zt-1"}, ExtraPodUID: {"u1"}}},
		user: {Username: "alice"},
	}}
	a, _ := newReviewer(r, []string{"istio-ca"}, time.Minute)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"service account", ctxWith("Bearer " + zt), codes.OK},
		{"no metadata", context.Background(), codes.Unauthenticated},
		{"not bearer", ctxWith("Basic " + zt), codes.Unauthenticated},
		{"empty token", ctxWith("Bearer  "), codes.Unauthenticated},
		{"rejected token", ctxWith("Bearer " + token(t, "nope")), codes.Unauthenticated},
		{"not a service account", ctxWith("Bearer " + user), codes.Unauthenticated},
		{"not a JWT", ctxWith("Bearer zt"), codes.Unauthenticated},
	} {
		c, err := a.FromContext(tc.ctx)
		if status.Code(err) != tc.want {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if err == nil && (c.Namespace != "istio-system" || c.ServiceAccount != "ztunnel" || c.NodeName != "n1" || c.PodName != "zt-1") {
			t.Errorf("%s: caller %+v", tc.name, c)
		}
	}
	r.fail = errors.New("apiserver down")
	if _, err := a.FromContext(ctxWith("Bearer " + token(t, "other"))); status.Code(err) != codes.Unavailable {
		t.Errorf("review failure: err = %v, want Unavailable", err)
	}
}

// TestAudiences: the review asks for the required audiences and a token is
// accepted only when the authenticator confirms one of them.
func TestAudiences(t *testing.T) {
	for _, tc := range []struct {
		name     string
		required []string
		status   []string // status.audiences; nil: echo spec.audiences
		wantErr  string
	}{
		{"confirmed", []string{"istio-ca"}, nil, ""},
		{"one of several confirmed", []string{"istio-ca", "skiff"}, []string{"skiff"}, ""},
		{"confirmed among others", []string{"istio-ca"}, []string{"other", "istio-ca"}, ""},
		{"other audience", []string{"istio-ca"}, []string{"other"}, "want one of [istio-ca]"},
		{"audience-unaware authenticator", []string{"istio-ca"}, []string{}, "not audience-aware"},
		{"none required, apiserver's default", nil, []string{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := token(t, "sa")
			r := &fakeReviewer{users: map[string]authnv1.UserInfo{tok: {Username: "system:serviceaccount:ns:sa"}}, statusAudiences: tc.status}
			a, _ := newReviewer(r, tc.required, time.Minute)
			c, err := a.FromContext(ctxWith("Bearer " + tok))
			if tc.wantErr == "" {
				if err != nil || c.ServiceAccount != "sa" {
					t.Fatalf("caller %+v, err %v; want accepted", c, err)
				}
			} else if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want Unauthenticated mentioning %q", err, tc.wantErr)
			}
			if len(r.requested) != 1 || !slices.Equal(r.requested[0], tc.required) {
				t.Fatalf("spec.audiences sent: %v, want [%v]", r.requested, tc.required)
			}
		})
	}
}

// TestNotAJWT: what is not a JWT is refused with a clear error, and never
// sent to the apiserver.
func TestNotAJWT(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	hdr := b64(`{"alg":"RS256"}`)
	for _, tc := range []struct{ name, token, want string }{
		{"opaque", "abcdef", "three dot-separated parts"},
		{"two parts", hdr + "." + b64(`{}`), "three dot-separated parts"},
		{"four parts", hdr + "." + b64(`{}`) + ".s.x", "three dot-separated parts"},
		{"empty signature", hdr + "." + b64(`{}`) + ".", "three dot-separated parts"},
		{"header not base64", "%%%." + b64(`{}`) + ".s", "header: not base64url"},
		{"header not JSON", b64("nope") + "." + b64(`{}`) + ".s", "header: not a JSON object"},
		{"payload an array", hdr + "." + b64(`[1]`) + ".s", "payload: not a JSON object"},
		{"payload null", hdr + "." + b64(`null`) + ".s", "payload: not a JSON object"},
		{"exp a string", hdr + "." + b64(`{"exp":"soon"}`) + ".s", "exp claim"},
		{"exp negative", hdr + "." + b64(`{"exp":-1}`) + ".s", "exp claim"},
		{"exp absurd", hdr + "." + b64(`{"exp":1e300}`) + ".s", "exp claim"},
		{"huge", strings.Repeat("a", maxTokenSize) + ".b.c", "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeReviewer{}
			a, _ := newReviewer(r, []string{"istio-ca"}, time.Minute)
			_, err := a.FromContext(ctxWith("Bearer " + tc.token))
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "token is not a JWT") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want Unauthenticated: token is not a JWT ... %s", err, tc.want)
			}
			if n := r.calls.Load(); n != 0 {
				t.Fatalf("%d reviews of a non-JWT", n)
			}
		})
	}
}

// TestCachedUntilTokenExpires: a cached success ends when the token does,
// however long the cache TTL.
func TestCachedUntilTokenExpires(t *testing.T) {
	short := jwt(t, map[string]any{"sub": "short", "exp": epoch.Add(30 * time.Second).Unix()})
	legacy := jwt(t, map[string]any{"sub": "legacy"}) // Secret-based tokens have no exp
	expired := jwt(t, map[string]any{"sub": "old", "exp": epoch.Add(-time.Second).Unix()})
	sa := authnv1.UserInfo{Username: "system:serviceaccount:ns:sa"}
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{short: sa, legacy: sa, expired: sa}}
	a, clk := newReviewer(r, nil, time.Hour)

	steps := []struct {
		name      string
		advance   time.Duration
		token     string
		wantErr   string
		wantCalls int32
	}{
		{"fresh token is reviewed", 0, short, "", 1},
		{"then cached", 20 * time.Second, short, "", 1},
		{"past its exp the cache no longer answers; the apiserver allows for skew", 10 * time.Second, short, "", 2},
		{"a minute past its exp it is refused without a review", time.Minute, short, "token expired", 2},
		{"a token without exp is cached for the TTL", 0, legacy, "", 3},
		{"still cached", 59 * time.Minute, legacy, "", 3},
		{"reviewed again after the TTL", time.Minute, legacy, "", 4},
		{"an expired token is never reviewed", 0, expired, "token expired", 4},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		_, err := a.Authenticate(context.Background(), s.token)
		if s.wantErr == "" && err != nil || s.wantErr != "" && (!errors.Is(err, ErrUnauthenticated) || !strings.Contains(fmt.Sprint(err), s.wantErr)) {
			t.Fatalf("%s: err = %v, want %q", s.name, err, s.wantErr)
		}
		if n := r.calls.Load(); n != s.wantCalls {
			t.Fatalf("%s: %d reviews, want %d", s.name, n, s.wantCalls)
		}
	}
}

// TestFailedReviewsLimitedPerSource: a caller sending bad tokens gets a
// burst of reviews, then one per second; other callers and the same bad
// token (cached) are unaffected.
func TestFailedReviewsLimitedPerSource(t *testing.T) {
	good := token(t, "good")
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{good: {Username: "system:serviceaccount:ns:good"}}}
	a, clk := newReviewer(r, nil, time.Minute)
	a.failBurst, a.failRate = 3, 1
	attacker, other := fromAddr("10.0.0.1:40000"), fromAddr("10.0.0.2:40000")
	bad := func(i int) string { return token(t, fmt.Sprint("bad-", i)) }

	steps := []struct {
		name      string
		ctx       context.Context
		token     string
		want      error // nil: accepted
		wantCalls int32
	}{
		{"first bad token reviewed", attacker, bad(0), ErrUnauthenticated, 1},
		{"same bad token is not reviewed again", attacker, bad(0), ErrUnauthenticated, 1},
		{"second", attacker, bad(1), ErrUnauthenticated, 2},
		{"third", attacker, bad(2), ErrUnauthenticated, 3},
		{"burst spent: refused without review", attacker, bad(3), ErrTooManyFailures, 3},
		{"another port of the same address too", fromAddr("10.0.0.1:40001"), bad(4), ErrTooManyFailures, 3},
		{"another caller is reviewed", other, good, nil, 4},
		{"another caller's bad token is reviewed", other, bad(5), ErrUnauthenticated, 5},
	}
	run := func(name string, ctx context.Context, tok string, want error, calls int32) {
		t.Helper()
		_, err := a.Authenticate(ctx, tok)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("%s: err = %v, want %v", name, err, want)
		}
		if n := r.calls.Load(); n != calls {
			t.Fatalf("%s: %d reviews, want %d", name, n, calls)
		}
	}
	for _, s := range steps {
		run(s.name, s.ctx, s.token, s.want, s.wantCalls)
	}
	if _, err := a.FromContext(metadata.NewIncomingContext(attacker, metadata.Pairs("authorization", "Bearer "+bad(6)))); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("limited caller over gRPC: %v, want ResourceExhausted", err)
	}
	clk.Add(time.Second)
	run("a second later, one more review", attacker, bad(7), ErrUnauthenticated, 6)
	run("and no more", attacker, bad(8), ErrTooManyFailures, 6)
	clk.Add(time.Second)
	run("a good token does not spend the budget", attacker, good, nil, 6) // cached
	good2 := token(t, "good2")
	r.users[good2] = authnv1.UserInfo{Username: "system:serviceaccount:ns:good2"}
	run("a new good token is reviewed", attacker, good2, nil, 7)
	run("budget left for a bad one", attacker, bad(9), ErrUnauthenticated, 8)

	r.fail = errors.New("apiserver down")
	clk.Add(30 * time.Minute)
	for i := range 10 {
		if _, err := a.Authenticate(other, token(t, fmt.Sprint("x", i))); err == nil || errors.Is(err, ErrTooManyFailures) || errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("apiserver down: %v, want the review error", err)
		}
	}
}

// Callers that cancel while their review is under way are charged all
// the same, and the review's answer is kept.
func TestCancelledReviewsAreCharged(t *testing.T) {
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{}, entered: make(chan struct{}, 10), gate: make(chan struct{})}
	a, _ := newReviewer(r, nil, time.Minute)
	a.failBurst = 3
	bad := func(i int) string { return token(t, fmt.Sprint("bad-", i)) }
	for i := range 3 {
		ctx, cancel := context.WithCancel(fromAddr("10.0.0.1:40000"))
		go func() { <-r.entered; cancel() }()
		if _, err := a.Authenticate(ctx, bad(i)); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call %d: %v", i, err)
		}
	}
	close(r.gate)
	for i := range 3 { // answered from the finished (or finishing) review
		if _, err := a.Authenticate(fromAddr("10.0.0.1:40000"), bad(i)); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("token %d again: %v", i, err)
		}
	}
	if _, err := a.Authenticate(fromAddr("10.0.0.1:40000"), bad(3)); !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("after three cancelled rejections: %v, want ErrTooManyFailures", err)
	}
	if n := r.calls.Load(); n != 3 {
		t.Fatalf("%d reviews, want 3", n)
	}
}

// However many bad tokens one address sends at once, only a few reviews
// run at a time and the budget holds.
func TestConcurrentReviewsPerSourceBounded(t *testing.T) {
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{}, entered: make(chan struct{}, 100), gate: make(chan struct{})}
	a, _ := newReviewer(r, nil, time.Minute)
	a.failBurst, a.reviewsPerSource = 3, 2
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			_, err := a.Authenticate(fromAddr("10.0.0.1:40000"), token(t, fmt.Sprint("bad-", i)))
			errs <- err
		})
	}
	<-r.entered
	<-r.entered
	close(r.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrTooManyFailures) {
			t.Fatalf("unexpected error %v", err)
		}
	}
	if m := r.maxActive.Load(); m > 2 {
		t.Fatalf("%d reviews of one address at once, want at most 2", m)
	}
	// Each slot may see the budget before the reviews ahead of it are charged.
	if n := r.calls.Load(); n > 3+2 {
		t.Fatalf("%d reviews with a budget of 3, want at most 5", n)
	}
}

// TestCacheBounded: however many distinct tokens arrive, the cache and the
// per-address budgets stay within their bounds.
func TestCacheBounded(t *testing.T) {
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{}}
	a, _ := newReviewer(r, nil, time.Minute)
	a.maxEntries, a.maxSources = 16, 8
	for i := range 200 {
		tok := token(t, fmt.Sprint("sa-", i))
		if i%2 == 0 {
			r.users[tok] = authnv1.UserInfo{Username: "system:serviceaccount:ns:sa"}
		}
		_, _ = a.Authenticate(fromAddr(fmt.Sprintf("10.0.%d.%d:1", i/250, i%250)), tok)
		if len(a.cache) > a.maxEntries || len(a.sources) > a.maxSources {
			t.Fatalf("after %d tokens: %d cached answers, %d budgets", i+1, len(a.cache), len(a.sources))
		}
	}
	// The latest answer (a rejection) is cached.
	last := token(t, "sa-199")
	n := r.calls.Load()
	if _, err := a.Authenticate(context.Background(), last); !errors.Is(err, ErrUnauthenticated) || r.calls.Load() != n {
		t.Fatalf("latest token: err %v, reviews %d -> %d", err, n, r.calls.Load())
	}
}

func TestCachesAndSharesReviews(t *testing.T) {
	zt := token(t, "zt")
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{zt: {Username: "system:serviceaccount:ns:sa"}},
		entered: make(chan struct{}, 20), gate: make(chan struct{})}
	a, _ := newReviewer(r, nil, time.Minute)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := a.Authenticate(context.Background(), zt); err != nil {
				t.Error(err)
			}
		})
	}
	<-r.entered // one review is under way; the others wait for it or the cache
	close(r.gate)
	wg.Wait()
	if _, err := a.Authenticate(context.Background(), zt); err != nil {
		t.Fatal(err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("%d reviews for one token, want 1", n)
	}
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(token(f, "sa"))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjEuNWV9.cw")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		exp, err := jwtExpiry(tok)
		if err == nil && strings.Count(tok, ".") != 2 {
			t.Fatalf("accepted %q without three parts", tok)
		}
		if err != nil && !exp.IsZero() {
			t.Fatalf("error with an expiry")
		}
	})
}
