package identity

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Every parser must fail with one of the package's sentinels, never panic.
func wantSentinel(t *testing.T, err error, sentinels ...error) {
	t.Helper()
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error %v wraps none of %v", err, sentinels)
}

func FuzzParseCertificatesPEM(f *testing.F) {
	chainPEM, keyPEM := testPEM(f)
	f.Add(chainPEM)
	f.Add(keyPEM)
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add(append(chainPEM, "junk"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatesPEM(data)
		if err != nil {
			wantSentinel(t, err, ErrMalformedPEM)
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificates and no error")
		}
		// Whatever parses survives a round trip.
		again, err := ParseCertificatesPEM(EncodeCertificatesPEM(certs))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("round trip: %d certificates, %v; want %d", len(again), err, len(certs))
		}
	})
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	chainPEM, keyPEM := testPEM(f)
	f.Add(keyPEM)
	f.Add(chainPEM)
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParsePrivateKeyPEM(data)
		if err != nil {
			wantSentinel(t, err, ErrMalformedPEM, ErrUnsupportedKey)
			return
		}
		if key == nil || key.Public() == nil {
			t.Fatal("nil key and no error")
		}
	})
}

// FuzzSign feeds arbitrary CSRs through parsing and the CA's policy checks.
func FuzzSign(f *testing.F) {
	ca := mustCA(f, newFakeClock())
	id := mustID(f, "default", "web")
	f.Add(mustCSR(f, mustKey(f), id))
	f.Add(mustCSR(f, mustKey(f), mustID(f, "default", "db")))
	chainPEM, _ := testPEM(f)
	f.Add(chainPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, csr []byte) {
		chain, err := ca.Sign(csr, id, 0)
		if err != nil {
			wantSentinel(t, err, ErrMalformedPEM, ErrInvalidCSR, ErrUnsupportedKey, ErrSANMismatch)
			return
		}
		if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != id.String() {
			t.Fatalf("signed leaf names %v, want %s", chain[0].URIs, id)
		}
	})
}

func FuzzParseWorkloadID(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/web",
		"spiffe://cluster.local/ns/default",
		"spiffe://cluster.local",
		"spiffe://td/ns/ns/sa/sa/sa",
		"http://cluster.local/ns/a/sa/b",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return // not a SPIFFE ID at all; go-spiffe's concern
		}
		ns, sa, err := ParseWorkloadID(id)
		if err != nil {
			wantSentinel(t, err, ErrInvalidID)
			return
		}
		back, err := WorkloadID(id.TrustDomain(), ns, sa)
		if err != nil || back != id {
			t.Fatalf("WorkloadID(%q, %q, %q) = %v, %v; want %v", id.TrustDomain(), ns, sa, back, err, id)
		}
	})
}

func FuzzWorkloadID(f *testing.F) {
	f.Add("default", "web")
	f.Add("", "web")
	f.Add("a/b", "..")
	f.Fuzz(func(t *testing.T, ns, sa string) {
		id, err := WorkloadID(testTD, ns, sa)
		if err != nil {
			wantSentinel(t, err, ErrInvalidID)
			return
		}
		gotNS, gotSA, err := ParseWorkloadID(id)
		if err != nil || gotNS != ns || gotSA != sa {
			t.Fatalf("ParseWorkloadID(%v) = %q, %q, %v; want %q, %q", id, gotNS, gotSA, err, ns, sa)
		}
	})
}
