package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/skiffmesh/skiff/pkg/identity"
)

func fakeClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

func issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func pemOf(t *testing.T, certs ...*x509.Certificate) []byte {
	return identity.EncodeCertificatesPEM(certs)
}

func TestLoadOrCreateGeneratesOnceAndPersists(t *testing.T) {
	c := fakeClient(t)
	ctx := context.Background()
	first, err := LoadOrCreate(ctx, c, "istio-system", td, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	second, err := LoadOrCreate(ctx, c, "istio-system", td, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first.Source != "generated" || second.Source != "loaded" {
		t.Fatalf("sources %q, %q; want generated then loaded", first.Source, second.Source)
	}
	if string(first.RootPEM) != string(second.RootPEM) {
		t.Fatal("a restart changed the root")
	}
}

func TestLoadOrCreateUsesCACerts(t *testing.T) {
	root, rootKey := issue(t, "root", nil, nil)
	inter, interKey := issue(t, "intermediate", root, rootKey)
	keyPEM, _ := identity.EncodePrivateKeyPEM(interKey)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: CACertsSecret}, Data: map[string][]byte{
		"ca-cert.pem": pemOf(t, inter), "ca-key.pem": keyPEM, "cert-chain.pem": pemOf(t, inter, root), "root-cert.pem": pemOf(t, root),
	}}
	m, err := LoadOrCreate(context.Background(), fakeClient(t, secret), "istio-system", td, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "cacerts" || string(m.RootPEM) != string(pemOf(t, root)) {
		t.Fatalf("source %q, root %q", m.Source, m.RootPEM)
	}
	key, _ := identity.GenerateKey()
	id, _ := identity.WorkloadID(td, "app", "web")
	csr, _ := identity.NewCSR(key, id)
	chain, err := m.CA.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("workload certificate does not chain to the user's root: %v", err)
	}
	serving, err := m.ServingCertificate([]string{"istiod.istio-system.svc"}, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(serving.Certificate) != 2 {
		t.Fatalf("serving chain of %d, want leaf and intermediate", len(serving.Certificate))
	}
	if _, err := serving.Leaf.Verify(x509.VerifyOptions{DNSName: "istiod.istio-system.svc", Roots: roots, Intermediates: inters}); err != nil {
		t.Fatalf("serving certificate: %v", err)
	}
}

func TestLoadOrCreateRejectsBadCACerts(t *testing.T) {
	root, _ := issue(t, "root", nil, nil)
	_, otherKey := issue(t, "other", nil, nil)
	keyPEM, _ := identity.EncodePrivateKeyPEM(otherKey)
	for name, data := range map[string]map[string][]byte{
		"missing key":    {"ca-cert.pem": pemOf(t, root)},
		"mismatched key": {"ca-cert.pem": pemOf(t, root), "ca-key.pem": keyPEM},
		"garbage":        {"ca-cert.pem": []byte("nope"), "ca-key.pem": []byte("nope")},
	} {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: CACertsSecret}, Data: data}
		_, err := LoadOrCreate(context.Background(), fakeClient(t, secret), "istio-system", td, 0, 0)
		if err == nil {
			t.Errorf("%s: loaded, want an error", name)
		} else if name == "mismatched key" && !errors.Is(err, identity.ErrInvalidCertificate) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
