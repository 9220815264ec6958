package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD    = spiffeid.RequireTrustDomainFromString("cluster.local")
	otherTD   = spiffeid.RequireTrustDomainFromString("other.example")
	testEpoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: testEpoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func mustID(t testing.TB, ns, sa string) spiffeid.ID {
	t.Helper()
	id, err := WorkloadID(testTD, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustCA(t testing.TB, clock *fakeClock, opts ...CAOption) *CA {
	t.Helper()
	ca, err := NewSelfSignedCA(testTD, append([]CAOption{WithClock(clock.Now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustCSR(t testing.TB, key crypto.Signer, id spiffeid.ID) []byte {
	t.Helper()
	csr, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issueIntermediate makes an intermediate CA certificate signed by parent.
func issueIntermediate(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, now time.Time) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustKeyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	b, err := EncodePrivateKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testClient wraps a CAClient, counting calls and optionally blocking,
// failing or rewriting replies.
type testClient struct {
	next    CAClient
	calls   atomic.Int32
	fail    atomic.Bool
	started chan struct{} // if set, receives once per call as it starts
	gate    chan struct{} // if set, each call waits for a receive
	rewrite func([]*x509.Certificate) []*x509.Certificate
}

func (c *testClient) CreateCertificate(ctx context.Context, id spiffeid.ID, csr []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	c.calls.Add(1)
	if c.started != nil {
		c.started <- struct{}{}
	}
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.fail.Load() {
		return nil, errTestCA
	}
	chain, err := c.next.CreateCertificate(ctx, id, csr, ttl)
	if err == nil && c.rewrite != nil {
		chain = c.rewrite(chain)
	}
	return chain, err
}

var errTestCA = testError("CA unavailable")

type testError string

func (e testError) Error() string { return string(e) }

func encodePEMBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func idURLs(id spiffeid.ID) []*url.URL { return []*url.URL{id.URL()} }

func parseIDForTest(s string) (spiffeid.ID, error) { return spiffeid.FromString(s) }

// testLogger logs to the test's output, shown only on failure or with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
