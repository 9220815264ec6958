// Package ca is istiod-lite's certificate authority: the root of trust
// (the user's cacerts Secret, or a root generated once and kept in a
// Secret), the IstioCertificateService that signs workload certificates for
// authenticated callers, istiod-lite's own serving certificate, and the
// istio-ca-root-cert ConfigMap published in every namespace.
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/skiffmesh/skiff/pkg/identity"
)

// Secret names and keys, as Istio uses them.
const (
	CACertsSecret    = "cacerts"         // user-supplied: ca-cert, ca-key, cert-chain, root-cert
	SelfSignedSecret = "istio-ca-secret" // generated: ca-cert.pem, ca-key.pem
	keyCACert        = "ca-cert.pem"
	keyCAKey         = "ca-key.pem"
	keyCertChain     = "cert-chain.pem"
	keyRootCert      = "root-cert.pem"
	rootTTL          = 10 * 365 * 24 * time.Hour
)

// Material is the loaded CA: the identity.CA that signs workloads, plus the
// key and chain for istiod-lite's own serving certificate.
type Material struct {
	CA    *identity.CA
	key   crypto.Signer
	chain []*x509.Certificate // signing cert first
	// RootPEM is published to every namespace.
	RootPEM []byte
	// Source says where the root came from ("cacerts", "generated", "loaded").
	Source string
}

// LoadOrCreate returns the CA of namespace ns: from the cacerts Secret if the
// user supplied one, otherwise from istio-ca-secret, generating and storing
// a new self-signed root there on first start. Concurrent first starts
// agree: the Secret is created, not overwritten, and the loser re-reads it.
func LoadOrCreate(ctx context.Context, c client.Client, ns string, td spiffeid.TrustDomain, defaultTTL, maxTTL time.Duration) (*Material, error) {
	var s corev1.Secret
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: CACertsSecret}, &s)
	switch {
	case err == nil:
		m, err := fromSecret(&s, td, defaultTTL, maxTTL, true)
		if err != nil {
			return nil, fmt.Errorf("ca: secret %s/%s: %w", ns, CACertsSecret, err)
		}
		m.Source = "cacerts"
		return m, nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("ca: read %s/%s: %w", ns, CACertsSecret, err)
	}
	for attempt := 0; attempt < 2; attempt++ {
		err = c.Get(ctx, client.ObjectKey{Namespace: ns, Name: SelfSignedSecret}, &s)
		if err == nil {
			m, err := fromSecret(&s, td, defaultTTL, maxTTL, false)
			if err != nil {
				return nil, fmt.Errorf("ca: secret %s/%s: %w", ns, SelfSignedSecret, err)
			}
			m.Source = "loaded"
			return m, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("ca: read %s/%s: %w", ns, SelfSignedSecret, err)
		}
		certPEM, keyPEM, err := newRoot(td)
		if err != nil {
			return nil, err
		}
		s = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: SelfSignedSecret},
			Type:       "istio.io/ca-root",
			Data:       map[string][]byte{keyCACert: certPEM, keyCAKey: keyPEM},
		}
		if err := c.Create(ctx, &s); err != nil {
			if apierrors.IsAlreadyExists(err) {
				continue // another replica won; use its root
			}
			return nil, fmt.Errorf("ca: store generated root: %w", err)
		}
		m, err := fromSecret(&s, td, defaultTTL, maxTTL, false)
		if err != nil {
			return nil, err
		}
		m.Source = "generated"
		return m, nil
	}
	return nil, fmt.Errorf("ca: could not load or create %s/%s", ns, SelfSignedSecret)
}

func newRoot(td spiffeid.TrustDomain) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{td.Name()}, CommonName: "Skiff root CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: self-sign root: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err = identity.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return identity.EncodeCertificatesPEM([]*x509.Certificate{cert}), keyPEM, nil
}

// fromSecret builds the CA from Secret data. identity.NewCA reads files, so
// the material passes through a private temporary directory, removed before
// returning.
func fromSecret(s *corev1.Secret, td spiffeid.TrustDomain, defaultTTL, maxTTL time.Duration, cacerts bool) (*Material, error) {
	for _, k := range []string{keyCACert, keyCAKey} {
		if len(s.Data[k]) == 0 {
			return nil, fmt.Errorf("missing %s", k)
		}
	}
	dir, err := os.MkdirTemp("", "skiff-ca-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	opts := identity.CAOptions{TrustDomain: td, DefaultTTL: defaultTTL, MaxTTL: maxTTL}
	write := func(k string) (string, error) {
		p := filepath.Join(dir, k)
		return p, os.WriteFile(p, s.Data[k], 0o600)
	}
	if opts.CertFile, err = write(keyCACert); err != nil {
		return nil, err
	}
	if opts.KeyFile, err = write(keyCAKey); err != nil {
		return nil, err
	}
	if cacerts {
		if len(s.Data[keyCertChain]) > 0 {
			if opts.ChainFile, err = write(keyCertChain); err != nil {
				return nil, err
			}
		}
		if len(s.Data[keyRootCert]) > 0 {
			if opts.RootCertFile, err = write(keyRootCert); err != nil {
				return nil, err
			}
		}
	}
	ca, err := identity.NewCA(opts)
	if err != nil {
		return nil, err
	}
	key, err := identity.ParsePrivateKeyPEM(s.Data[keyCAKey])
	if err != nil {
		return nil, err
	}
	signing, err := identity.ParseCertificatesPEM(s.Data[keyCACert])
	if err != nil {
		return nil, err
	}
	chain := signing[:1]
	if cacerts && len(s.Data[keyCertChain]) > 0 {
		rest, err := identity.ParseCertificatesPEM(s.Data[keyCertChain])
		if err != nil {
			return nil, err
		}
		for _, c := range rest {
			if !c.Equal(chain[0]) {
				chain = append(chain, c)
			}
		}
	}
	return &Material{CA: ca, key: key, chain: chain, RootPEM: identity.EncodeCertificatesPEM(ca.Roots())}, nil
}

// ServingCertificate issues istiod-lite's own TLS certificate for dnsNames
// (and the SPIFFE ID id, when set), valid for ttl, signed by the CA.
func (m *Material) ServingCertificate(dnsNames []string, id spiffeid.ID, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	for _, c := range m.chain {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		DNSNames:     dnsNames,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if !id.IsZero() {
		tmpl.URIs = []*url.URL{id.URL()}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.chain[0], key.Public(), m.key)
	if err != nil {
		return nil, fmt.Errorf("ca: issue serving certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	out := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, c := range m.chain {
		if !isSelfSigned(c) {
			out.Certificate = append(out.Certificate, c.Raw)
		}
	}
	return out, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}
