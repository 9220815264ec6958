package identity

import (
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Bundles is a thread-safe x509bundle.Source whose bundles can be replaced at
// run time (for example when roots rotate), for use with x509svid.Verify.
// The zero value is empty and ready to use.
type Bundles struct {
	mu sync.RWMutex
	m  map[spiffeid.TrustDomain]*x509bundle.Bundle
}

var _ x509bundle.Source = (*Bundles)(nil)

// NewBundles returns a Bundles holding the given bundles.
func NewBundles(bundles ...*x509bundle.Bundle) *Bundles {
	b := &Bundles{}
	for _, bundle := range bundles {
		b.Set(bundle)
	}
	return b
}

// Set replaces the bundle for bundle's trust domain. Bundles keeps a copy,
// so later changes to bundle have no effect.
func (b *Bundles) Set(bundle *x509bundle.Bundle) {
	c := bundle.Clone()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[spiffeid.TrustDomain]*x509bundle.Bundle)
	}
	b.m[c.TrustDomain()] = c
}

// Remove drops the bundle for td; peers from td are no longer trusted.
func (b *Bundles) Remove(td spiffeid.TrustDomain) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, td)
}

// GetX509BundleForTrustDomain implements x509bundle.Source. Callers must not
// modify the returned bundle.
func (b *Bundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	bundle, ok := b.m[td]
	if !ok {
		return nil, fmt.Errorf("%w: no trust bundle for %q", ErrForeignTrustDomain, td)
	}
	return bundle, nil
}
