package identity

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"     // PKCS #8
	pemECKey       = "EC PRIVATE KEY"  // SEC 1
	pemRSAKey      = "RSA PRIVATE KEY" // PKCS #1
	pemECParams    = "EC PARAMETERS"   // written by `openssl ecparam -genkey`
	pemCSR         = "CERTIFICATE REQUEST"
	pemCSRLegacy   = "NEW CERTIFICATE REQUEST"
)

var pemBegin = []byte("-----BEGIN ")

// decodePEM splits data into PEM blocks. Unlike pem.Decode it is strict:
// anything but whitespace outside the blocks is an error, so that truncated
// or concatenated-with-garbage files are noticed instead of half-read.
func decodePEM(data []byte) ([]*pem.Block, error) {
	rest := trimSpace(data)
	if len(rest) == 0 {
		return nil, fmt.Errorf("%w: no PEM data", ErrMalformedPEM)
	}
	var blocks []*pem.Block
	for len(rest) > 0 {
		n := len(blocks) + 1
		if !bytes.HasPrefix(rest, pemBegin) {
			return nil, fmt.Errorf("%w: unexpected data %s where PEM block %d should start", ErrMalformedPEM, snippet(rest), n)
		}
		block, next := pem.Decode(rest)
		// pem.Decode silently skips a block it cannot decode and returns the
		// next one; a second BEGIN in the consumed bytes reveals that.
		if block == nil || bytes.Count(rest[:len(rest)-len(next)], pemBegin) != 1 {
			return nil, fmt.Errorf("%w: PEM block %d is not well formed (bad framing or base64)", ErrMalformedPEM, n)
		}
		if len(block.Headers) > 0 {
			return nil, fmt.Errorf("%w: PEM block %d (%s) has headers; encrypted PEM is not supported", ErrMalformedPEM, n, block.Type)
		}
		blocks = append(blocks, block)
		rest = trimSpace(next)
	}
	return blocks, nil
}

func trimSpace(b []byte) []byte { return bytes.TrimLeft(b, " \t\r\n") }

// snippet quotes the start of b for error messages.
func snippet(b []byte) string {
	const max = 16
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// ParseCertificatesPEM parses one or more CERTIFICATE blocks, in order.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("%w: PEM block %d is %q, want %q", ErrMalformedPEM, i+1, b.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: PEM block %d: %w", ErrMalformedPEM, i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// EncodeCertificatesPEM encodes certs as consecutive CERTIFICATE blocks.
func EncodeCertificatesPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// Writing to a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// ParsePrivateKeyPEM parses a single private key in PKCS #8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY") form. An "EC
// PARAMETERS" block, as written by OpenSSL, is ignored.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	var keyBlock *pem.Block
	for i, b := range blocks {
		if b.Type == pemECParams {
			continue
		}
		if keyBlock != nil {
			return nil, fmt.Errorf("%w: PEM block %d: more than one key", ErrMalformedPEM, i+1)
		}
		keyBlock = b
	}
	if keyBlock == nil {
		return nil, fmt.Errorf("%w: no private key block", ErrMalformedPEM)
	}
	var key any
	switch keyBlock.Type {
	case pemPrivateKey:
		key, err = x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	case pemECKey:
		key, err = x509.ParseECPrivateKey(keyBlock.Bytes)
	case pemRSAKey:
		key, err = x509.ParsePKCS1PrivateKey(keyBlock.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block is %q, want %q, %q or %q", ErrMalformedPEM, keyBlock.Type, pemPrivateKey, pemECKey, pemRSAKey)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformedPEM, keyBlock.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot sign", ErrUnsupportedKey, key)
	}
	return signer, nil
}

// EncodePrivateKeyPEM encodes key as a PKCS #8 "PRIVATE KEY" block.
func EncodePrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseCSRPEM parses a single CERTIFICATE REQUEST block and checks its
// self-signature, which proves the requester holds the private key.
func ParseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("%w: %d PEM blocks, want one %q", ErrMalformedPEM, len(blocks), pemCSR)
	}
	b := blocks[0]
	if b.Type != pemCSR && b.Type != pemCSRLegacy {
		return nil, fmt.Errorf("%w: PEM block is %q, want %q", ErrMalformedPEM, b.Type, pemCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedPEM, err)
	}
	if err := csr.CheckSignature(); err != nil {
		// An unknown algorithm is the key's fault, not the requester's.
		if errors.Is(err, x509.ErrUnsupportedAlgorithm) {
			return nil, fmt.Errorf("%w: CSR: %w", ErrUnsupportedKey, err)
		}
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
	}
	return csr, nil
}

// ReadRootsFile reads PEM root certificates from path: the mesh roots a
// proxy verifies its control plane, CA and peers against.
func ReadRootsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("root certificates: %w", err)
	}
	roots, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("root certificates %s: %w", path, err)
	}
	return roots, nil
}
