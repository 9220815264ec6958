package identity

import "errors"

// Sentinel errors. Functions in this package wrap them with context; test for
// them with errors.Is.
var (
	// ErrInvalidID: a SPIFFE ID, or a part of one, is empty or malformed.
	ErrInvalidID = errors.New("invalid SPIFFE ID")
	// ErrMalformedPEM: PEM input is empty, has the wrong block type, has data
	// outside its blocks, or a block's contents do not parse.
	ErrMalformedPEM = errors.New("malformed PEM")
	// ErrInvalidCSR: a certificate signing request has a bad signature.
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	// ErrUnsupportedKey: a key is not of a type this package accepts.
	ErrUnsupportedKey = errors.New("unsupported key")
	// ErrSANMismatch: a certificate or CSR names a different identity than expected.
	ErrSANMismatch = errors.New("SAN mismatch")
	// ErrForeignTrustDomain: an identity is outside the trust domain in question.
	ErrForeignTrustDomain = errors.New("foreign trust domain")
	// ErrInvalidCertificate: a certificate or chain is unusable (not a CA, key
	// mismatch, chain does not verify, ...).
	ErrInvalidCertificate = errors.New("invalid certificate")
	// ErrExpired: a certificate has expired and no valid replacement is available.
	ErrExpired = errors.New("certificate expired")
)
