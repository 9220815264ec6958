package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// signAndVerify signs a fresh CSR for ns/sa with ca and verifies the chain
// against bundle the way hbone does.
func signAndVerify(t *testing.T, ca *CA, bundle x509bundle.Source, now time.Time) []*x509.Certificate {
	t.Helper()
	id := mustID(t, "ns", "sa")
	chain, err := ca.Sign(mustCSR(t, mustKey(t), id), id, 0)
	if err != nil {
		t.Fatalf("Sign() error: %v", err)
	}
	got, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("x509svid.Verify() error: %v", err)
	}
	if got != id {
		t.Fatalf("verified ID = %s, want %s", got, id)
	}
	return chain
}

func TestNewSelfSignedCA(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock)
	roots := ca.Roots()
	if len(roots) != 1 {
		t.Fatalf("Roots() has %d certificates, want 1", len(roots))
	}
	root := roots[0]
	if !root.IsCA || !isSelfSigned(root) {
		t.Error("root is not a self-signed CA certificate")
	}
	if k, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", root.PublicKey)
	}
	if len(root.URIs) != 1 || root.URIs[0].String() != "spiffe://cluster.local" {
		t.Errorf("root URIs = %v, want [spiffe://cluster.local]", root.URIs)
	}
	if ca.TrustDomain() != testTD {
		t.Errorf("TrustDomain() = %v", ca.TrustDomain())
	}
	if b := ca.Bundle(); b.TrustDomain() != testTD || !b.HasX509Authority(root) {
		t.Error("Bundle() does not hold the root")
	}
	chain := signAndVerify(t, ca, ca.Bundle(), clock.Now())
	if len(chain) != 2 || !chain[1].Equal(root) {
		t.Errorf("chain is %d long, want leaf and root", len(chain))
	}
}

func TestCADirPersistsRoot(t *testing.T) {
	clock := newFakeClock()
	dir := filepath.Join(t.TempDir(), "ca")
	opts := CAOptions{TrustDomain: testTD, Dir: dir, Now: clock.Now, Logger: testLogger(t)}
	first, err := NewCA(opts)
	if err != nil {
		t.Fatalf("first NewCA() error: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, dirKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}

	second, err := NewCA(opts)
	if err != nil {
		t.Fatalf("second NewCA() error: %v", err)
	}
	if !first.Roots()[0].Equal(second.Roots()[0]) {
		t.Fatal("reloaded CA has a different root")
	}
	// Certificates from the reloaded CA are trusted by the first one's bundle.
	signAndVerify(t, second, first.Bundle(), clock.Now())
}

func TestCADirPartialState(t *testing.T) {
	clock := newFakeClock()
	t.Run("certificate without key", func(t *testing.T) {
		dir := t.TempDir()
		ca := mustCA(t, clock)
		writeFile(t, dir, dirCertFile, EncodeCertificatesPEM(ca.Roots()))
		if _, err := NewCA(CAOptions{TrustDomain: testTD, Dir: dir, Now: clock.Now, Logger: testLogger(t)}); err == nil {
			t.Fatal("NewCA() succeeded with a certificate but no key")
		}
	})
	t.Run("key without certificate is replaced", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, dirKeyFile, []byte("left over"))
		if _, err := NewCA(CAOptions{TrustDomain: testTD, Dir: dir, Now: clock.Now, Logger: testLogger(t)}); err != nil {
			t.Fatalf("NewCA() error: %v", err)
		}
	})
	t.Run("corrupt certificate", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, dir, dirCertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
		writeFile(t, dir, dirKeyFile, mustKeyPEM(t, mustKey(t)))
		if _, err := NewCA(CAOptions{TrustDomain: testTD, Dir: dir, Now: clock.Now, Logger: testLogger(t)}); !errors.Is(err, ErrMalformedPEM) {
			t.Fatalf("NewCA() error = %v, want ErrMalformedPEM", err)
		}
	})
}

func TestCAFromFiles(t *testing.T) {
	clock := newFakeClock()
	now := clock.Now()
	root := mustCA(t, clock)
	rootCert, rootKey := root.chain[0], root.key
	rootPEM := EncodeCertificatesPEM([]*x509.Certificate{rootCert})
	interCert, interKey := issueIntermediate(t, rootCert, rootKey, now)
	interPEM := EncodeCertificatesPEM([]*x509.Certificate{interCert})
	otherRoot := mustCA(t, clock)

	dir := t.TempDir()
	files := map[string]string{
		"root":       writeFile(t, dir, "root.pem", rootPEM),
		"rootKey":    writeFile(t, dir, "root-key.pem", mustKeyPEM(t, rootKey)),
		"inter":      writeFile(t, dir, "inter.pem", interPEM),
		"interKey":   writeFile(t, dir, "inter-key.pem", mustKeyPEM(t, interKey)),
		"istioChain": writeFile(t, dir, "cert-chain.pem", append(bytes.Clone(interPEM), rootPEM...)),
		"otherRoot":  writeFile(t, dir, "other-root.pem", EncodeCertificatesPEM(otherRoot.Roots())),
		"garbage":    writeFile(t, dir, "garbage.pem", []byte("not PEM")),
		"missing":    filepath.Join(dir, "missing.pem"),
	}

	tests := []struct {
		name                        string
		cert, key, chain, rootsFile string
		chainLen                    int   // of a signed chain, on success
		wantErr                     error // nil with chainLen 0: any error
	}{
		{name: "root", cert: "root", key: "rootKey", chainLen: 2},
		{name: "root with root file", cert: "root", key: "rootKey", rootsFile: "root", chainLen: 2},
		{name: "intermediate", cert: "inter", key: "interKey", chain: "root", rootsFile: "root", chainLen: 3},
		{name: "intermediate, chain ends in root", cert: "inter", key: "interKey", chain: "root", chainLen: 3},
		{name: "intermediate, Istio cert-chain.pem", cert: "inter", key: "interKey", chain: "istioChain", rootsFile: "root", chainLen: 3},
		{name: "intermediate, roots only", cert: "inter", key: "interKey", rootsFile: "root", chainLen: 3},
		{name: "intermediate without roots", cert: "inter", key: "interKey"},
		{name: "untrusted root", cert: "inter", key: "interKey", rootsFile: "otherRoot", wantErr: ErrInvalidCertificate},
		{name: "key mismatch", cert: "inter", key: "rootKey", rootsFile: "root", wantErr: ErrInvalidCertificate},
		{name: "garbage cert", cert: "garbage", key: "rootKey", wantErr: ErrMalformedPEM},
		{name: "garbage key", cert: "root", key: "garbage", wantErr: ErrMalformedPEM},
		{name: "garbage chain", cert: "inter", key: "interKey", chain: "garbage", wantErr: ErrMalformedPEM},
		{name: "missing key", cert: "root", key: "missing", wantErr: os.ErrNotExist},
		{name: "key only", key: "rootKey"},
		{name: "two certs in cert file", cert: "istioChain", key: "interKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := NewCA(CAOptions{
				TrustDomain:  testTD,
				CertFile:     files[tt.cert],
				KeyFile:      files[tt.key],
				ChainFile:    files[tt.chain],
				RootCertFile: files[tt.rootsFile],
				Now:          clock.Now,
			})
			if tt.chainLen == 0 {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("NewCA() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCA() error: %v", err)
			}
			chain := signAndVerify(t, ca, ca.Bundle(), now)
			if len(chain) != tt.chainLen {
				t.Fatalf("chain length = %d, want %d", len(chain), tt.chainLen)
			}
			if !chain[len(chain)-1].Equal(rootCert) {
				t.Error("chain does not end at the root")
			}
			// A verifier that knows only the root accepts the leaf.
			if _, err := chain[0].Verify(x509.VerifyOptions{
				Roots:         certPool([]*x509.Certificate{rootCert}),
				Intermediates: certPool(chain[1:]),
				CurrentTime:   now,
			}); err != nil {
				t.Errorf("leaf does not verify to the root: %v", err)
			}
		})
	}
}

func TestNewCAOptions(t *testing.T) {
	tests := []struct {
		name string
		opts CAOptions
	}{
		{"no source", CAOptions{TrustDomain: testTD}},
		{"both sources", CAOptions{TrustDomain: testTD, Dir: t.TempDir(), CertFile: "a", KeyFile: "b"}},
		{"no trust domain", CAOptions{Dir: t.TempDir()}},
		{"default above max", CAOptions{TrustDomain: testTD, Dir: t.TempDir(), DefaultTTL: 2 * time.Hour, MaxTTL: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCA(tt.opts); err == nil {
				t.Fatal("NewCA() succeeded")
			}
		})
	}
}

func TestSignChecks(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock)
	id := mustID(t, "default", "web")
	other := mustID(t, "default", "db")
	foreign, err := WorkloadID(otherTD, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	noSAN := func(key crypto.Signer) []byte {
		t.Helper()
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return encodePEMBlock(pemCSR, der)
	}
	twoSANs := func() []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: append(idURLs(id), idURLs(other)...)}, mustKey(t))
		if err != nil {
			t.Fatal(err)
		}
		return encodePEMBlock(pemCSR, der)
	}()

	tests := []struct {
		name    string
		csr     []byte
		id      string
		wantErr error // nil: expect success
	}{
		{"matching SAN", mustCSR(t, mustKey(t), id), id.String(), nil},
		{"no SAN", noSAN(mustKey(t)), id.String(), nil},
		{"SAN mismatch", mustCSR(t, mustKey(t), other), id.String(), ErrSANMismatch},
		{"two SANs", twoSANs, id.String(), ErrSANMismatch},
		{"foreign trust domain", mustCSR(t, mustKey(t), foreign), foreign.String(), ErrForeignTrustDomain},
		{"trust domain ID", noSAN(mustKey(t)), "spiffe://cluster.local", ErrInvalidID},
		{"RSA key", mustCSR(t, rsaKey, id), id.String(), ErrUnsupportedKey},
		{"P-384 key", mustCSR(t, p384, id), id.String(), ErrUnsupportedKey},
		{"Ed25519 key", mustCSR(t, edKey, id), id.String(), ErrUnsupportedKey},
		{"garbage CSR", []byte("garbage"), id.String(), ErrMalformedPEM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqID, err := parseIDForTest(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := ca.Sign(tt.csr, reqID, 0)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Sign() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sign() error: %v", err)
			}
			if got, err := x509svid.IDFromCert(chain[0]); err != nil || got != id {
				t.Fatalf("leaf ID = %v, %v; want %s", got, err, id)
			}
		})
	}
}

func TestSignLeaf(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock)
	id := mustID(t, "default", "web")
	key := mustKey(t)
	csr := mustCSR(t, key, id)
	a, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := a[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v, want [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Error("leaf has SANs besides the URI")
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", leaf.KeyUsage, want)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Equal(clock.Now().Add(-time.Minute)) {
		t.Errorf("NotBefore = %v, want a minute before %v", leaf.NotBefore, clock.Now())
	}
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		t.Error("leaf does not carry the CSR's key")
	}
	if leaf.SerialNumber.Cmp(b[0].SerialNumber) == 0 || leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serials %v and %v are not distinct positive numbers", leaf.SerialNumber, b[0].SerialNumber)
	}
}

func TestSignTTL(t *testing.T) {
	clock := newFakeClock()
	ca := mustCA(t, clock, WithTTL(2*time.Hour, 10*time.Hour))
	rootExpiry := ca.Roots()[0].NotAfter
	id := mustID(t, "default", "web")
	csr := mustCSR(t, mustKey(t), id)

	tests := []struct {
		name string
		now  time.Time
		ttl  time.Duration
		want time.Time // NotAfter
	}{
		{"zero means default", testEpoch, 0, testEpoch.Add(2 * time.Hour)},
		{"negative means default", testEpoch, -time.Hour, testEpoch.Add(2 * time.Hour)},
		{"requested", testEpoch, 5 * time.Hour, testEpoch.Add(5 * time.Hour)},
		{"capped at max", testEpoch, 100 * time.Hour, testEpoch.Add(10 * time.Hour)},
		{"capped at CA expiry", rootExpiry.Add(-time.Hour), 5 * time.Hour, rootExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(tt.now)
			chain, err := ca.Sign(csr, id, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if got := chain[0].NotAfter; !got.Equal(tt.want) {
				t.Fatalf("NotAfter = %v, want %v", got, tt.want)
			}
		})
	}

	clock.Set(rootExpiry)
	if _, err := ca.Sign(csr, id, 0); !errors.Is(err, ErrExpired) {
		t.Fatalf("Sign() with an expired CA: error = %v, want ErrExpired", err)
	}
}

func TestLocalCAClient(t *testing.T) {
	ca := mustCA(t, newFakeClock())
	id := mustID(t, "default", "web")
	csr := mustCSR(t, mustKey(t), id)
	if _, err := ca.Client().CreateCertificate(context.Background(), id, csr, 0); err != nil {
		t.Fatalf("CreateCertificate() error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ca.Client().CreateCertificate(ctx, id, csr, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateCertificate() with a cancelled context: error = %v", err)
	}
}
