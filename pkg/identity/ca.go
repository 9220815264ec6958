package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for CAOptions.
const (
	DefaultCertTTL = 24 * time.Hour
	DefaultMaxTTL  = 90 * 24 * time.Hour
	// clockSkew is how far a leaf's NotBefore is backdated, so that peers
	// whose clocks run a little behind the CA's still accept it.
	clockSkew = time.Minute
)

// CAOptions configures NewCA. Exactly one source of CA material must be set:
// CertFile and KeyFile (plus optional ChainFile and RootCertFile), or Dir.
type CAOptions struct {
	TrustDomain spiffeid.TrustDomain

	// CertFile and KeyFile hold the signing certificate and its key, which
	// may be a root or an intermediate.
	CertFile, KeyFile string
	// ChainFile optionally holds the certificates from the signing
	// certificate's issuer up to the root. A leading copy of the signing
	// certificate itself is tolerated (Istio's cert-chain.pem has one).
	ChainFile string
	// RootCertFile holds the trusted roots. It may be omitted when the signing
	// certificate, or the last certificate of ChainFile, is self-signed.
	RootCertFile string

	// Dir holds a self-signed root (ca-cert.pem, ca-key.pem), generated and
	// persisted on first start and reloaded on later ones.
	Dir string

	// DefaultTTL is used when a request asks for none (default 24h). MaxTTL
	// caps requested lifetimes (default 90 days). Certificates never outlive
	// the CA's own chain.
	DefaultTTL, MaxTTL time.Duration

	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives events such as root generation (default slog.Default()).
	Logger *slog.Logger
}

// CAOption adjusts CAOptions for NewSelfSignedCA.
type CAOption func(*CAOptions)

// WithTTL sets the default and maximum certificate lifetimes.
func WithTTL(defaultTTL, maxTTL time.Duration) CAOption {
	return func(o *CAOptions) { o.DefaultTTL, o.MaxTTL = defaultTTL, maxTTL }
}

// WithClock sets the CA's clock.
func WithClock(now func() time.Time) CAOption {
	return func(o *CAOptions) { o.Now = now }
}

// CA signs workload certificates for one trust domain. It is immutable once
// built and safe for concurrent use.
type CA struct {
	td    spiffeid.TrustDomain
	key   crypto.Signer
	chain []*x509.Certificate // signing certificate first, ending at a root
	roots []*x509.Certificate
	// notAfter is the earliest expiry in chain; leaves may not outlive it.
	notAfter   time.Time
	defaultTTL time.Duration
	maxTTL     time.Duration
	now        func() time.Time
}

// NewCA builds a CA from PEM files or from a directory (see CAOptions).
func NewCA(opts CAOptions) (*CA, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	files := opts.CertFile != "" || opts.KeyFile != "" || opts.ChainFile != "" || opts.RootCertFile != ""
	var (
		m   *material
		err error
	)
	switch {
	case files && opts.Dir != "":
		return nil, errors.New("identity: CA options: set either CertFile/KeyFile or Dir, not both")
	case files:
		m, err = loadFiles(opts)
	case opts.Dir != "":
		m, err = loadOrCreateDir(opts)
	default:
		return nil, errors.New("identity: CA options: one of CertFile/KeyFile or Dir is required")
	}
	if err != nil {
		return nil, err
	}
	return newCA(opts, m)
}

// NewSelfSignedCA returns a CA with a fresh in-memory root, for tests and
// single-process setups.
func NewSelfSignedCA(td spiffeid.TrustDomain, opts ...CAOption) (*CA, error) {
	o := CAOptions{TrustDomain: td}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newRoot(o.TrustDomain, o.Now())
	if err != nil {
		return nil, err
	}
	return newCA(o, m)
}

func (o *CAOptions) setDefaults() error {
	if o.TrustDomain.IsZero() {
		return errors.New("identity: CA options: trust domain is required")
	}
	if o.DefaultTTL == 0 {
		o.DefaultTTL = DefaultCertTTL
	}
	if o.MaxTTL == 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.DefaultTTL < 0 || o.MaxTTL < 0 || o.DefaultTTL > o.MaxTTL {
		return fmt.Errorf("identity: CA options: need 0 < DefaultTTL (%v) <= MaxTTL (%v)", o.DefaultTTL, o.MaxTTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// material is what a CA is built from, however it was obtained.
type material struct {
	key   crypto.Signer
	chain []*x509.Certificate // signing certificate first
	roots []*x509.Certificate
}

func newCA(o CAOptions, m *material) (*CA, error) {
	chain, err := verifyMaterial(m, o.Now())
	if err != nil {
		return nil, err
	}
	notAfter := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return &CA{
		td:         o.TrustDomain,
		key:        m.key,
		chain:      chain,
		roots:      m.roots,
		notAfter:   notAfter,
		defaultTTL: o.DefaultTTL,
		maxTTL:     o.MaxTTL,
		now:        o.Now,
	}, nil
}

// verifyMaterial checks that the signing certificate can issue, matches the
// key, and chains to one of the roots; it returns that chain.
func verifyMaterial(m *material, now time.Time) ([]*x509.Certificate, error) {
	if len(m.chain) == 0 || len(m.roots) == 0 {
		return nil, fmt.Errorf("%w: CA: no signing certificate or no roots", ErrInvalidCertificate)
	}
	cert := m.chain[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%w: CA: signing certificate %q is not a CA certificate", ErrInvalidCertificate, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: CA: signing certificate %q lacks the certSign key usage", ErrInvalidCertificate, cert.Subject)
	}
	if !publicKeyEqual(cert.PublicKey, m.key.Public()) {
		return nil, fmt.Errorf("%w: CA: key does not match signing certificate %q", ErrInvalidCertificate, cert.Subject)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         certPool(m.roots),
		Intermediates: certPool(m.chain[1:]),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: CA: signing certificate does not chain to the roots: %w", ErrInvalidCertificate, err)
	}
	return chains[0], nil
}

// TrustDomain returns the trust domain the CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Roots returns the CA's trusted roots.
func (ca *CA) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.roots...)
}

// Bundle returns a new X.509 bundle of the CA's roots.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, ca.roots)
}

// Sign issues a certificate for id to the holder of the CSR's key. It
// returns the chain leaf first, then the CA's chain up to and including the
// root (as Istio's CreateCertificate does). ttl <= 0 means the default TTL;
// longer ones are capped at MaxTTL and at the CA chain's expiry.
//
// Sign does not decide whether the caller may have id; that is the job of
// whatever authenticated the caller.
func (ca *CA) Sign(csrPEM []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	if id.IsZero() || id.Path() == "" {
		return nil, fmt.Errorf("%w: %q has no workload path", ErrInvalidID, id)
	}
	if id.TrustDomain() != ca.td {
		return nil, fmt.Errorf("%w: %q is not in trust domain %q", ErrForeignTrustDomain, id, ca.td)
	}
	csr, err := ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := checkCSR(csr, id); err != nil {
		return nil, err
	}

	now := ca.now()
	if !now.Before(ca.notAfter) {
		return nil, fmt.Errorf("%w: CA chain expired at %v", ErrExpired, ca.notAfter)
	}
	if ttl <= 0 {
		ttl = ca.defaultTTL
	}
	ttl = min(ttl, ca.maxTTL)
	notAfter := now.Add(ttl)
	if notAfter.After(ca.notAfter) {
		notAfter = ca.notAfter
	}

	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Empty subject, as Istio's workload certificates; the identity is the
		// URI SAN, which x509 marks critical because the subject is empty.
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.chain[0], csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate issued for %s: %w", id, err)
	}
	return append([]*x509.Certificate{leaf}, ca.chain...), nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	// Zero is not a valid serial; the chance is negligible but costs nothing.
	return serial.Add(serial, big.NewInt(1)), nil
}

func certPool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
