package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// GenerateKey returns a new ECDSA P-256 key, the only kind of workload key
// the CA signs.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return key, nil
}

// NewCSR returns a PEM certificate signing request for id, signed by key.
func NewCSR(key crypto.Signer, id spiffeid.ID) ([]byte, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("%w: empty ID", ErrInvalidID)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// checkCSR applies the CA's policy to a parsed CSR: a P-256 key, and no URI
// SAN other than id. Other SANs in the CSR are ignored; the certificate
// carries only id.
func checkCSR(csr *x509.CertificateRequest, id spiffeid.ID) error {
	if err := checkWorkloadKey(csr.PublicKey); err != nil {
		return fmt.Errorf("CSR: %w", err)
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		if got := csr.URIs[0].String(); got != id.String() {
			return fmt.Errorf("%w: CSR asks for %q, request is for %q", ErrSANMismatch, got, id)
		}
	default:
		return fmt.Errorf("%w: CSR has %d URI SANs, want at most one (%q)", ErrSANMismatch, len(csr.URIs), id)
	}
	return nil
}

// checkWorkloadKey accepts ECDSA P-256 public keys only.
func checkWorkloadKey(pub any) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: %s key, want ECDSA P-256", ErrUnsupportedKey, keyKind(pub))
	}
	if k.Curve != elliptic.P256() {
		name := "unknown curve"
		if k.Curve != nil {
			name = k.Curve.Params().Name
		}
		return fmt.Errorf("%w: ECDSA %s key, want ECDSA P-256", ErrUnsupportedKey, name)
	}
	return nil
}

func keyKind(pub any) string {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	case nil:
		return "missing"
	}
	return fmt.Sprintf("%T", pub)
}
