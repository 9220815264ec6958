package identity

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testPEM returns PEM material shared by the PEM tests.
func testPEM(t testing.TB) (certs, ecKey []byte) {
	t.Helper()
	clock := newFakeClock()
	ca := mustCA(t, clock)
	key := mustKey(t)
	chain, err := ca.Sign(mustCSR(t, key, mustID(t, "ns", "sa")), mustID(t, "ns", "sa"), 0)
	if err != nil {
		t.Fatal(err)
	}
	return EncodeCertificatesPEM(chain), mustKeyPEM(t, key)
}

func TestParseCertificatesPEM(t *testing.T) {
	chainPEM, keyPEM := testPEM(t)
	first, _ := pem.Decode(chainPEM)
	one := pem.EncodeToMemory(first)
	badDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	broken := []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
	headers := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: first.Bytes})

	tests := []struct {
		name  string
		in    []byte
		count int // 0: expect ErrMalformedPEM
	}{
		{"one", one, 1},
		{"chain", chainPEM, 2},
		{"surrounding whitespace", append(append([]byte("\n \r\n"), one...), "\n\n"...), 1},
		{"empty", nil, 0},
		{"whitespace only", []byte(" \n\t"), 0},
		{"garbage", []byte("hello"), 0},
		{"leading garbage", append([]byte("junk\n"), one...), 0},
		{"trailing garbage", append(bytes.Clone(one), "junk"...), 0},
		{"garbage between blocks", append(append(bytes.Clone(one), "junk\n"...), one...), 0},
		{"truncated", one[:len(one)-20], 0},
		{"wrong block type", keyPEM, 0},
		{"cert then key", append(bytes.Clone(one), keyPEM...), 0},
		{"bad DER", badDER, 0},
		{"bad base64 before a good block", append(bytes.Clone(broken), one...), 0},
		{"headers", headers, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParseCertificatesPEM(tt.in)
			if tt.count == 0 {
				if !errors.Is(err, ErrMalformedPEM) {
					t.Fatalf("ParseCertificatesPEM() = %d certs, %v; want ErrMalformedPEM", len(certs), err)
				}
				return
			}
			if err != nil || len(certs) != tt.count {
				t.Fatalf("ParseCertificatesPEM() = %d certs, %v; want %d", len(certs), err, tt.count)
			}
		})
	}
}

func TestParsePrivateKeyPEM(t *testing.T) {
	ec := mustKey(t)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519DER, err := x509.MarshalPKCS8PrivateKey(x25519)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkcs8 := mustKeyPEM(t, ec)
	params := enc("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	chainPEM, _ := testPEM(t)

	tests := []struct {
		name    string
		in      []byte
		wantErr error // nil: expect success
	}{
		{"PKCS8 EC", pkcs8, nil},
		{"SEC1 EC", enc("EC PRIVATE KEY", sec1), nil},
		{"SEC1 with EC PARAMETERS", append(params, enc("EC PRIVATE KEY", sec1)...), nil},
		{"PKCS1 RSA", enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), nil},
		{"empty", nil, ErrMalformedPEM},
		{"only EC PARAMETERS", params, ErrMalformedPEM},
		{"two keys", append(bytes.Clone(pkcs8), pkcs8...), ErrMalformedPEM},
		{"certificate", chainPEM, ErrMalformedPEM},
		{"bad DER", enc("PRIVATE KEY", []byte{1, 2, 3}), ErrMalformedPEM},
		{"SEC1 labelled PKCS1", enc("RSA PRIVATE KEY", sec1), ErrMalformedPEM},
		{"trailing garbage", append(bytes.Clone(pkcs8), 'x'), ErrMalformedPEM},
		{"X25519 cannot sign", enc("PRIVATE KEY", x25519DER), ErrUnsupportedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParsePrivateKeyPEM(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParsePrivateKeyPEM() = %T, %v; want %v", key, err, tt.wantErr)
				}
				return
			}
			if err != nil || key == nil {
				t.Fatalf("ParsePrivateKeyPEM() = %T, %v", key, err)
			}
		})
	}

	got, err := ParsePrivateKeyPEM(pkcs8)
	if err != nil {
		t.Fatal(err)
	}
	if !ec.Equal(got.(*ecdsa.PrivateKey)) {
		t.Error("PKCS8 round trip returned a different key")
	}
}

func TestParseCSRPEM(t *testing.T) {
	id := mustID(t, "ns", "sa")
	csr := mustCSR(t, mustKey(t), id)
	block, _ := pem.Decode(csr)
	// Flip a bit in the signature (the last bytes of the DER).
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-2] ^= 0x01

	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{"ok", csr, nil},
		{"legacy type", pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes}), nil},
		{"empty", nil, ErrMalformedPEM},
		{"two CSRs", append(bytes.Clone(csr), csr...), ErrMalformedPEM},
		{"wrong type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), ErrMalformedPEM},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("x")}), ErrMalformedPEM},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCSRPEM(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseCSRPEM() error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCSRPEM() error = %v", err)
			}
			if len(got.URIs) != 1 || got.URIs[0].String() != id.String() {
				t.Fatalf("CSR URIs = %v, want [%s]", got.URIs, id)
			}
		})
	}
}

func TestReadRootsFile(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewSelfSignedCA(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "roots.pem")
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(good, EncodeCertificatesPEM(ca.Roots()), 0o600)
	os.WriteFile(bad, []byte("not PEM"), 0o600)
	if roots, err := ReadRootsFile(good); err != nil || len(roots) != 1 {
		t.Fatalf("ReadRootsFile: %d roots, %v", len(roots), err)
	}
	for _, p := range []string{bad, filepath.Join(dir, "missing.pem")} {
		if _, err := ReadRootsFile(p); err == nil {
			t.Errorf("ReadRootsFile(%s) succeeded", filepath.Base(p))
		}
	}
}
