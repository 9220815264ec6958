package caclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
)

// fakeCA signs with a real identity.CA and records what it was sent.
type fakeCA struct {
	caapi.UnimplementedIstioCertificateServiceServer
	ca        *identity.CA
	gotAuth   string
	gotImpers string
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *caapi.IstioCertificateRequest) (*caapi.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) == 1 {
		f.gotAuth = v[0]
	}
	if v := req.GetMetadata().GetFields()[caclient.ImpersonatedIdentityKey]; v != nil {
		f.gotImpers = v.GetStringValue()
	}
	csr, err := identity.ParseCSRPEM([]byte(req.GetCsr()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id, err := spiffeid.FromURI(csr.URIs[0])
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, err := f.ca.Sign([]byte(req.GetCsr()), id, time.Duration(req.GetValidityDuration())*time.Second)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &caapi.IstioCertificateResponse{}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, string(identity.EncodeCertificatesPEM([]*x509.Certificate{c})))
	}
	return resp, nil
}

// servingCert returns a self-signed serving certificate for name.
func servingCert(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

func startCA(t *testing.T) (*fakeCA, string, *x509.CertPool) {
	t.Helper()
	ca, err := identity.NewSelfSignedCA(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	cert, pool := servingCert(t, caclient.DefaultServerName)
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	f := &fakeCA{ca: ca}
	caapi.RegisterIstioCertificateServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String(), pool
}

func TestCreateCertificate(t *testing.T) {
	f, addr, pool := startCA(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("  tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := caclient.New(caclient.Options{Address: addr, Roots: pool, TokenFile: tokenFile, Impersonate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	mgr := identity.NewManager(c, identity.ManagerOptions{})
	got, err := mgr.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.ID != id {
		t.Errorf("certificate for %s, want %s", got.ID, id)
	}
	if f.gotAuth != "Bearer tok-123" {
		t.Errorf("authorization = %q, want the token from the file", f.gotAuth)
	}
	if f.gotImpers != id.String() {
		t.Errorf("ImpersonatedIdentity = %q, want %q", f.gotImpers, id)
	}
}

func TestServerNotTrusted(t *testing.T) {
	_, addr, _ := startCA(t)
	_, otherPool := servingCert(t, caclient.DefaultServerName)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := caclient.New(caclient.Options{Address: addr, Roots: otherPool, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := identity.GenerateKey()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	csr, _ := identity.NewCSR(key, id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateCertificate(ctx, id, csr, 0); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("CreateCertificate against an untrusted server: err = %v, want a TLS verification error", err)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts caclient.Options
	}{
		{"no address", caclient.Options{RootCertFile: "x"}},
		{"no roots", caclient.Options{Address: "127.0.0.1:1"}},
		{"missing root file", caclient.Options{Address: "127.0.0.1:1", RootCertFile: filepath.Join(t.TempDir(), "none")}},
	} {
		if _, err := caclient.New(tc.opts); err == nil {
			t.Errorf("%s: New succeeded, want an error", tc.name)
		}
	}
}

func TestTokenFileErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	for _, f := range []caclient.TokenFile{"", caclient.TokenFile(empty), caclient.TokenFile(filepath.Join(t.TempDir(), "missing"))} {
		if _, err := f.GetRequestMetadata(context.Background()); err == nil {
			t.Errorf("TokenFile(%q): no error", string(f))
		}
	}
}

func TestParseChainRejects(t *testing.T) {
	ca, _ := identity.NewSelfSignedCA(spiffeid.RequireTrustDomainFromString("cluster.local"))
	key, _ := identity.GenerateKey()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/other")
	csr, _ := identity.NewCSR(key, id)
	chain, err := ca.Sign(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	good := &caapi.IstioCertificateResponse{CertChain: []string{string(identity.EncodeCertificatesPEM(chain))}}
	for _, tc := range []struct {
		name string
		resp *caapi.IstioCertificateResponse
		id   spiffeid.ID
		want error
	}{
		{"empty", &caapi.IstioCertificateResponse{}, id, identity.ErrInvalidCertificate},
		{"garbage", &caapi.IstioCertificateResponse{CertChain: []string{"nope"}}, id, identity.ErrMalformedPEM},
		{"other identity", good, other, identity.ErrSANMismatch},
	} {
		if _, err := caclient.ParseChain(tc.resp, tc.id); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := caclient.ParseChain(good, id); err != nil {
		t.Errorf("good chain: %v", err)
	}
}

// FuzzDecodeResponse feeds arbitrary bytes through the response decoder and
// the chain parser: they must fail cleanly, never panic.
func FuzzDecodeResponse(f *testing.F) {
	ca, _ := identity.NewSelfSignedCA(spiffeid.RequireTrustDomainFromString("cluster.local"))
	key, _ := identity.GenerateKey()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/sa/app")
	csr, _ := identity.NewCSR(key, id)
	chain, _ := ca.Sign(csr, id, 0)
	good, _ := proto.Marshal(&caapi.IstioCertificateResponse{CertChain: []string{string(identity.EncodeCertificatesPEM(chain))}})
	f.Add(good)
	f.Add([]byte{0x0a, 0x05, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp caapi.IstioCertificateResponse
		if err := proto.Unmarshal(data, &resp); err != nil {
			return
		}
		_, _ = caclient.ParseChain(&resp, id)
	})
}
