package identity

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestBundles(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock)
	rotated := mustCA(t, clock)
	id := mustID(t, "default", "web")
	chain, err := ca.Sign(mustCSR(t, mustKey(t), id), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(b *Bundles) error {
		_, _, err := x509svid.Verify(chain, b, x509svid.WithTime(clock.Now()))
		return err
	}

	var b Bundles // the zero value is usable
	if _, err := b.GetX509BundleForTrustDomain(testTD); !errors.Is(err, ErrForeignTrustDomain) {
		t.Fatalf("empty Bundles: error = %v, want ErrForeignTrustDomain", err)
	}
	if err := verify(&b); err == nil {
		t.Fatal("empty Bundles verified a chain")
	}

	bundle := ca.Bundle()
	b.Set(bundle)
	if err := verify(&b); err != nil {
		t.Fatalf("Verify() error: %v", err)
	}
	// Bundles keeps its own copy.
	bundle.RemoveX509Authority(ca.Roots()[0])
	if err := verify(&b); err != nil {
		t.Fatalf("Verify() after caller mutated its bundle: %v", err)
	}

	// Replacing the roots takes effect at once.
	b.Set(rotated.Bundle())
	if err := verify(&b); err == nil {
		t.Fatal("chain verified against a replaced root")
	}
	b.Remove(testTD)
	if _, err := b.GetX509BundleForTrustDomain(testTD); !errors.Is(err, ErrForeignTrustDomain) {
		t.Fatalf("after Remove: error = %v, want ErrForeignTrustDomain", err)
	}

	nb := NewBundles(ca.Bundle())
	if err := verify(nb); err != nil {
		t.Fatalf("NewBundles: Verify() error: %v", err)
	}
}
