package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// verifyChain checks raw against the bundles; the roots are looked up per
// handshake so that rotation takes effect at once.
func verifyChain(raw [][]byte, bundles x509bundle.Source) (spiffeid.ID, error) {
	if len(raw) == 0 {
		return spiffeid.ID{}, errors.New("hbone: peer sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("hbone: parsing peer certificate: %w", err)
		}
		certs[i] = c
	}
	id, _, err := x509svid.Verify(certs, bundles)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("hbone: verifying peer certificate: %w", err)
	}
	return id, nil
}

// curvePreferences pins the key exchange: the hybrid post-quantum
// X25519MLKEM768 first, so that a recording of the traffic is safe from
// a future quantum computer; classical X25519 and P-256 after, for
// peers that offer only those (Istio's ztunnel, FIPS builds). A client
// sends key shares for X25519MLKEM768 and X25519 both, so a classical
// server costs no extra round trip.
var curvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}

// serverTLSConfig requires and verifies a client SVID of trust domain td.
func serverTLSConfig(alpn string, td spiffeid.TrustDomain, bundles x509bundle.Source,
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		NextProtos:       []string{alpn},
		CurvePreferences: curvePreferences,
		GetCertificate:   getCert,
		// The chain is verified below against SPIFFE bundles, not a
		// system pool, so the standard verification is not asked for.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyChain(raw, bundles)
			if err != nil {
				return err
			}
			if id.TrustDomain() != td {
				return fmt.Errorf("hbone: client %s is not in trust domain %s", id, td)
			}
			return nil
		},
	}
}

// clientTLSConfig presents src and accepts only a server whose verified
// SPIFFE ID is in expected. No SNI is sent: ServerName stays empty, which
// is why InsecureSkipVerify is set — verification happens here instead.
func clientTLSConfig(alpn string, src *tls.Certificate, bundles x509bundle.Source, expected []spiffeid.ID) *tls.Config {
	expected = slices.Clone(expected)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		CurvePreferences:   curvePreferences,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifyChain(raw, bundles)
			if err != nil {
				return err
			}
			if !slices.Contains(expected, id) {
				return &SANMismatchError{Got: id, Expected: expected}
			}
			return nil
		},
	}
}

// peerID is the SPIFFE ID of a handshake's verified peer.
func peerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("hbone: no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}

// certID is the SPIFFE ID of a certificate's leaf.
func certID(c *tls.Certificate) (spiffeid.ID, error) {
	if c == nil || len(c.Certificate) == 0 {
		return spiffeid.ID{}, errors.New("hbone: no source certificate")
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return spiffeid.ID{}, fmt.Errorf("hbone: parsing source certificate: %w", err)
		}
	}
	return x509svid.IDFromCert(leaf)
}
