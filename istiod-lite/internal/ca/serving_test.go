package ca

import (
	"crypto/tls"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestServingCertificatesRenewAtHalfLife(t *testing.T) {
	m, err := LoadOrCreate(t.Context(), fakeClient(t), "istio-system", spiffeid.RequireTrustDomainFromString("cluster.local"), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	clock := start
	s, err := m.NewServingCertificates([]string{"istiod.istio-system.svc"}, spiffeid.ID{}, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return clock }
	get := func() *tls.Certificate {
		t.Helper()
		c, err := s.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := get()
	if err := first.Leaf.VerifyHostname("istiod.istio-system.svc"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		at      time.Duration
		renewed bool
	}{
		{"fresh", 0, false},
		{"before half-life", 29 * time.Minute, false},
		{"past half-life", 31 * time.Minute, true},
	} {
		clock = start.Add(step.at)
		got := get()
		if renewed := got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0; renewed != step.renewed {
			t.Fatalf("%s: renewed = %v, want %v", step.name, renewed, step.renewed)
		}
	}
	// The new certificate is not renewed again on the next handshake.
	renewed := get()
	if again := get(); again != renewed {
		t.Fatal("renewed twice in a row")
	}
}
