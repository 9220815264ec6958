package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Certificate is a workload's key and certificate chain.
type Certificate struct {
	ID spiffeid.ID
	// TLS holds the chain leaf first, the private key, and Leaf.
	TLS tls.Certificate
	// Leaf is the workload's own certificate (also TLS.Leaf).
	Leaf *x509.Certificate
	// Chain is what the CA returned, leaf first.
	Chain               []*x509.Certificate
	NotBefore, NotAfter time.Time
}

// Expired reports whether the certificate is no longer valid at now.
func (c *Certificate) Expired(now time.Time) bool { return !now.Before(c.NotAfter) }

// RenewAt is the certificate's half-life, when it should be replaced.
func (c *Certificate) RenewAt() time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// newCertificate checks what a CA returned for a request for id made with
// key, and assembles the Certificate. It trusts nothing about the CA's reply:
// the leaf must name id alone, carry our public key, be signed by the next
// certificate in the chain, and not be expired.
func newCertificate(id spiffeid.ID, key crypto.Signer, chain []*x509.Certificate, now time.Time) (*Certificate, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: CA returned no certificates for %s", ErrInvalidCertificate, id)
	}
	for i, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("%w: CA returned a nil certificate at position %d", ErrInvalidCertificate, i)
		}
	}
	leaf := chain[0]
	got, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: leaf for %s: %w", ErrSANMismatch, id, err)
	}
	if got != id {
		return nil, fmt.Errorf("%w: CA issued a certificate for %q, asked for %q", ErrSANMismatch, got, id)
	}
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%w: leaf for %s does not carry the requested public key", ErrInvalidCertificate, id)
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return nil, fmt.Errorf("%w: chain for %s: certificate %d is not signed by certificate %d: %w", ErrInvalidCertificate, id, i, i+1, err)
		}
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: CA issued a certificate for %s that expired at %v", ErrExpired, id, leaf.NotAfter)
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	return &Certificate{
		ID:        id,
		TLS:       tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf},
		Leaf:      leaf,
		Chain:     chain,
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}, nil
}
