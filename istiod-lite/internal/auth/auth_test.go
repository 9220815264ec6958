package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeReviewer stands in for the apiserver: it knows users by token and,
// like an audience-aware apiserver, answers with the requested audiences
// unless statusAudiences overrides them.
type fakeReviewer struct {
	calls atomic.Int32
	users map[string]authnv1.UserInfo
	fail  error
	gate  chan struct{}
	// statusAudiences, when non-nil, is returned as status.audiences.
	statusAudiences []string

	mu        sync.Mutex
	requested [][]string // spec.audiences of each review
}

func (f *fakeReviewer) Create(_ context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.requested = append(f.requested, tr.Spec.Audiences)
	f.mu.Unlock()
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

func ctxWith(auth string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", auth))
}

func TestFromContext(t *testing.T) {
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{
		"zt":   {Username: "system:serviceaccount:istio-system:ztunnel", Extra: map[string]authnv1.ExtraValue{ExtraNodeName: {"n1"}, ExtraPodName: {"zt-1"}, ExtraPodUID: {"u1"}}},
		"user": {Username: "alice"},
	}}
	a := NewTokenReviewer(r, []string{"istio-ca"}, time.Minute)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want codes.Code
	}{
		{"service account", ctxWith("Bearer zt"), codes.OK},
		{"no metadata", context.Background(), codes.Unauthenticated},
		{"not bearer", ctxWith("Basic zt"), codes.Unauthenticated},
		{"empty token", ctxWith("Bearer  "), codes.Unauthenticated},
		{"rejected token", ctxWith("Bearer nope"), codes.Unauthenticated},
		{"not a service account", ctxWith("Bearer user"), codes.Unauthenticated},
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
	if _, err := a.FromContext(ctxWith("Bearer other")); status.Code(err) != codes.Unavailable {
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
			tok := "sa-token"
			r := &fakeReviewer{users: map[string]authnv1.UserInfo{tok: {Username: "system:serviceaccount:ns:sa"}}, statusAudiences: tc.status}
			a := NewTokenReviewer(r, tc.required, time.Minute)
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

func TestCachesAndSharesReviews(t *testing.T) {
	r := &fakeReviewer{users: map[string]authnv1.UserInfo{"zt": {Username: "system:serviceaccount:ns:sa"}}, gate: make(chan struct{})}
	a := NewTokenReviewer(r, nil, time.Minute)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := a.Authenticate(context.Background(), "zt"); err != nil {
				t.Error(err)
			}
		})
	}
	for r.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(r.gate)
	wg.Wait()
	if _, err := a.Authenticate(context.Background(), "zt"); err != nil {
		t.Fatal(err)
	}
	if n := r.calls.Load(); n != 1 {
		t.Fatalf("%d reviews for one token, want 1", n)
	}
}
