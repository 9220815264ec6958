package caclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
)

// ImpersonatedIdentityKey is the request metadata key with which a node proxy
// asks for a certificate for a workload on its node.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// DefaultServerName is the name the CA's serving certificate is checked for
// when Options.ServerName is empty.
const DefaultServerName = "istiod.istio-system.svc"

// Options configures New.
type Options struct {
	// Address is the CA's host:port (istiod-lite serves it on 15012).
	Address string
	// ServerName is the DNS name expected in the CA's certificate
	// (default DefaultServerName).
	ServerName string
	// Roots verify the CA's serving certificate; RootCertFile is read when
	// Roots is nil. One of them is required: the CA is never trusted blindly.
	Roots        *x509.CertPool
	RootCertFile string
	// TokenFile holds the caller's service-account token.
	TokenFile string
	// Impersonate sends ImpersonatedIdentity with every request, as a node
	// proxy does; the CA grants it only for identities that have a pod on
	// the caller's node (and always for the caller's own).
	Impersonate bool
	// DialOptions are appended to the client's own (for tests and dialers).
	DialOptions []grpc.DialOption
}

// ConnectParams is how clients of the control plane (its CA, its xDS
// server) connect: an attempt that gets no answer is given up after 5 s,
// and a failed one is retried within 5 s. gRPC's defaults (20 s, and up to
// 2 min) left proxies on stale configuration for 20 s after istiod-lite
// was replaced: a SYN sent to a Service endpoint that has just gone is
// never answered, and its conntrack entry sends the retransmissions there
// too, so only a new connection reaches the new endpoint.
func ConnectParams() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	})
}

// Client requests certificates from a remote CA. It is safe for concurrent
// use.
type Client struct {
	conn        *grpc.ClientConn
	svc         caapi.IstioCertificateServiceClient
	impersonate bool
}

var _ identity.CAClient = (*Client)(nil)

// New returns a client for the CA at opts.Address. It does not connect until
// the first request.
func New(opts Options) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("caclient: Address is required")
	}
	roots := opts.Roots
	if roots == nil {
		if opts.RootCertFile == "" {
			return nil, errors.New("caclient: Roots or RootCertFile is required")
		}
		pemData, err := os.ReadFile(opts.RootCertFile)
		if err != nil {
			return nil, fmt.Errorf("caclient: read roots: %w", err)
		}
		certs, err := identity.ParseCertificatesPEM(pemData)
		if err != nil {
			return nil, fmt.Errorf("caclient: roots %s: %w", opts.RootCertFile, err)
		}
		roots = x509.NewCertPool()
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	name := opts.ServerName
	if name == "" {
		name = DefaultServerName
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
	dial := []grpc.DialOption{grpc.WithTransportCredentials(creds), ConnectParams()}
	if opts.TokenFile != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(TokenFile(opts.TokenFile)))
	}
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(opts.Address, dial...)
	if err != nil {
		return nil, fmt.Errorf("caclient: %w", err)
	}
	return &Client{conn: conn, svc: caapi.NewIstioCertificateServiceClient(conn), impersonate: opts.Impersonate}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// CreateCertificate implements identity.CAClient: it sends the CSR and
// returns the chain, leaf first, after checking that the leaf is for id.
func (c *Client) CreateCertificate(ctx context.Context, id spiffeid.ID, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	req := &caapi.IstioCertificateRequest{Csr: string(csrPEM)}
	if ttl > 0 {
		req.ValidityDuration = int64((ttl + time.Second - 1) / time.Second)
	}
	if c.impersonate {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			ImpersonatedIdentityKey: structpb.NewStringValue(id.String()),
		}}
	}
	resp, err := c.svc.CreateCertificate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("caclient: CreateCertificate for %s: %w", id, err)
	}
	return ParseChain(resp, id)
}

// ParseChain decodes a CreateCertificate response and checks that its leaf
// carries exactly id as URI SAN.
func ParseChain(resp *caapi.IstioCertificateResponse, id spiffeid.ID) ([]*x509.Certificate, error) {
	if len(resp.GetCertChain()) == 0 {
		return nil, fmt.Errorf("caclient: %w: empty certificate chain for %s", identity.ErrInvalidCertificate, id)
	}
	var chain []*x509.Certificate
	for i, p := range resp.GetCertChain() {
		certs, err := identity.ParseCertificatesPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("caclient: chain entry %d: %w", i, err)
		}
		chain = append(chain, certs...)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		return nil, fmt.Errorf("caclient: %w: leaf SANs %v, want %s", identity.ErrSANMismatch, leaf.URIs, id)
	}
	return chain, nil
}
