// Package identity provides Skiff's workload identities: SPIFFE IDs of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, a certificate
// authority that signs X.509-SVIDs for them, a Manager that fetches, caches and
// renews one certificate per identity, and trust bundles for verifying peers.
//
// Errors carry a sentinel (ErrMalformedPEM, ErrSANMismatch, ...) wrapped with
// context, so callers can classify them with errors.Is.
package identity
