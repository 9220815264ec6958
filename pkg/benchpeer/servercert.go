package benchpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerCert is a self-signed TLS server certificate in PEM files, for
// peers that terminate TLS. Clients do not verify it: the benchmarks
// measure the cost of TLS, not trust.
type ServerCert struct {
	Cert, Key string
	// Combined holds the certificate then the key (HAProxy's crt file).
	Combined string
}

// WriteServerCert writes a fresh ECDSA P-256 certificate (the key type
// Skiff's workload certificates use, so both pay for the same signatures)
// for the IP addresses ips into dir.
func WriteServerCert(dir string, ips ...string) (ServerCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ServerCert{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "benchpeer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		a := net.ParseIP(ip)
		if a == nil {
			return ServerCert{}, fmt.Errorf("benchpeer: %q is not an IP address", ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, a)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return ServerCert{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return ServerCert{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	sc := ServerCert{
		Cert:     filepath.Join(dir, "server-cert.pem"),
		Key:      filepath.Join(dir, "server-key.pem"),
		Combined: filepath.Join(dir, "server.pem"),
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{sc.Cert, certPEM}, {sc.Key, keyPEM}, {sc.Combined, append(certPEM, keyPEM...)}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return ServerCert{}, err
		}
	}
	return sc, nil
}
