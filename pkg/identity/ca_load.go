package identity

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files in CAOptions.Dir (the names Istio uses for its self-signed CA).
const (
	dirCertFile = "ca-cert.pem"
	dirKeyFile  = "ca-key.pem"
	// rootTTL is the lifetime of a generated root, as Istio's self-signed root.
	rootTTL = 10 * 365 * 24 * time.Hour
)

// loadFiles reads CA material from the PEM files named in o.
func loadFiles(o CAOptions) (*material, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("identity: CA options: CertFile and KeyFile must both be set")
	}
	chain, err := readCerts(o.CertFile)
	if err != nil {
		return nil, err
	}
	if len(chain) != 1 {
		return nil, fmt.Errorf("identity: CA cert file %s: %d certificates, want 1 (put the rest in ChainFile)", o.CertFile, len(chain))
	}
	key, err := readKey(o.KeyFile)
	if err != nil {
		return nil, err
	}
	if o.ChainFile != "" {
		rest, err := readCerts(o.ChainFile)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(rest[0].Raw, chain[0].Raw) {
			rest = rest[1:]
		}
		chain = append(chain, rest...)
	}
	var roots []*x509.Certificate
	if o.RootCertFile != "" {
		if roots, err = readCerts(o.RootCertFile); err != nil {
			return nil, err
		}
	} else if last := chain[len(chain)-1]; isSelfSigned(last) {
		roots = []*x509.Certificate{last}
	} else {
		return nil, errors.New("identity: CA options: RootCertFile is required when the chain does not end in a self-signed root")
	}
	return &material{key: key, chain: chain, roots: roots}, nil
}

// loadOrCreateDir loads the self-signed root kept in o.Dir, generating and
// persisting one if there is none.
func loadOrCreateDir(o CAOptions) (*material, error) {
	certPath := filepath.Join(o.Dir, dirCertFile)
	keyPath := filepath.Join(o.Dir, dirKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return loadFiles(CAOptions{CertFile: certPath, KeyFile: keyPath})
	case certErr == nil:
		// A published root without its key cannot sign; replacing it would
		// silently break trust, so leave the decision to the operator.
		return nil, fmt.Errorf("identity: CA dir %s: %s exists but %s does not: %w", o.Dir, dirCertFile, dirKeyFile, keyErr)
	case !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("identity: CA dir: %w", certErr)
	}
	// No certificate: any key left behind is from an interrupted first start
	// and was never trusted by anyone, so it is safe to replace.
	m, err := newRoot(o.TrustDomain, o.Now())
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodePrivateKeyPEM(m.key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: CA dir: %w", err)
	}
	// The key goes first so that a certificate never exists without it.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, EncodeCertificatesPEM(m.chain), 0o644); err != nil {
		return nil, err
	}
	o.Logger.Info("generated self-signed root CA",
		"trust_domain", o.TrustDomain.Name(), "dir", o.Dir, "not_after", m.chain[0].NotAfter)
	return m, nil
}

// newRoot generates a self-signed ECDSA P-256 root for td.
func newRoot(td spiffeid.TrustDomain, now time.Time) (*material, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{td.Name()}, CommonName: "Skiff root CA"},
		// The trust domain's ID as URI SAN, as Istio's roots carry.
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root certificate: %w", err)
	}
	return &material{key: key, chain: []*x509.Certificate{cert}, roots: []*x509.Certificate{cert}}, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	return certs, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	key, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	return key, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// writeFileAtomic writes data to a temporary file and renames it into place,
// so a crash never leaves a truncated file behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("identity: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("identity: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("identity: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
