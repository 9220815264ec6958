package identity

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CAClient obtains a certificate for id from a CA, as Istio's
// IstioCertificateService.CreateCertificate does. It returns the chain leaf
// first. ttl <= 0 asks for the CA's default.
type CAClient interface {
	CreateCertificate(ctx context.Context, id spiffeid.ID, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error)
}

// LocalCAClient is a CAClient backed by an in-process CA.
type LocalCAClient struct {
	CA *CA
}

// CreateCertificate signs the CSR with the local CA.
func (c LocalCAClient) CreateCertificate(ctx context.Context, id spiffeid.ID, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.CA.Sign(csrPEM, id, ttl)
}

// Client returns a CAClient that signs with ca.
func (ca *CA) Client() CAClient { return LocalCAClient{CA: ca} }
