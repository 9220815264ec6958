//lint:file-ignore SA1019 x/net/http2.Transport is what Istio's Go client uses; interoperating with it is the point.

package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
)

func TestClientRejectsUnexpectedSAN(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/ns1/sa/other")
	_, err := e.client.Dial(testCtx(t), e.src, e.addr, testAuthority, []spiffeid.ID{want}, nil)
	var sm *SANMismatchError
	if !errors.As(err, &sm) || sm.Got != e.srvID {
		t.Fatalf("Dial error = %v, want SANMismatchError naming %s", err, e.srvID)
	}
	var de *DialError
	if !errors.As(err, &de) {
		t.Fatalf("Dial error = %v, want a DialError", err)
	}
}

// pastPKI's CA clock is two days behind, so a 1h certificate is expired now
// while a 100h one is valid.
func pastPKI(t *testing.T) *testPKI {
	return newPKI(t, "cluster.local",
		identity.WithClock(func() time.Time { return time.Now().Add(-48 * time.Hour) }),
		identity.WithTTL(time.Hour, 1000*time.Hour))
}

func TestServerRejectsExpiredClientCert(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	p := pastPKI(t)
	e.pki.bundles.Set(p.ca.Bundle()) // same trust domain, the past CA's roots
	expired, _ := p.cert(t, "ns2", "client", time.Hour)
	_, err := e.client.Dial(testCtx(t), expired, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
	if err == nil {
		t.Fatal("Dial with an expired client certificate succeeded")
	}
}

func TestClientRejectsExpiredServerCert(t *testing.T) {
	p := pastPKI(t)
	expired, _ := p.cert(t, "ns1", "server", time.Hour)
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return expired, nil }
	}})
	e.pki.bundles.Set(p.ca.Bundle())
	valid, _ := p.cert(t, "ns2", "client", 100*time.Hour)
	_, err := e.client.Dial(testCtx(t), valid, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Dial error = %v, want certificate expired", err)
	}
}

func TestServerRejectsForeignTrustDomain(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	foreign := newPKI(t, "evil.example")
	// Even with the foreign roots known to both sides, the server only
	// admits its own trust domain.
	e.pki.bundles.Set(foreign.ca.Bundle())
	src, _ := foreign.cert(t, "ns2", "client", time.Hour)
	_, err := e.client.Dial(testCtx(t), src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
	if err == nil {
		t.Fatal("Dial from a foreign trust domain succeeded")
	}
	if e.client.Stats().Open != 0 {
		t.Fatal("rejected connection pooled")
	}
}

func TestServerRejectsUnknownRoots(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	rogue := newPKI(t, "cluster.local") // same name, different roots
	src, _ := rogue.cert(t, "ns2", "client", time.Hour)
	if _, err := e.client.Dial(testCtx(t), src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil); err == nil {
		t.Fatal("Dial with an unknown CA succeeded")
	}
}

// rawTLS is a client TLS config that skips our checks, for probing the
// server with odd clients.
func rawTLS(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

func TestServerRequiresClientCert(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	c, err := tls.Dial("tcp", e.addr.String(), rawTLS(nil))
	if err == nil {
		// TLS 1.3: the server's verdict arrives after the client's Finished.
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("no-certificate client got %v, want a certificate alert", err)
	}
}

func TestServerRejectsPlaintext(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT 10.0.0.1:8080 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n")
	b, _ := io.ReadAll(c)
	if strings.Contains(string(b), "200") {
		t.Fatalf("plaintext got %q", b)
	}
}

func TestServerRejectsTLS12(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	cfg := rawTLS(e.src)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if c, err := tls.Dial("tcp", e.addr.String(), cfg); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake succeeded")
	}
}

// x/net/http2's Transport is Istio's Go HBONE client (deprecated in favour
// of net/http, but still what Istio ships); it also lets us send what our
// client never would.
func xnetRoundTrip(t *testing.T, e *tcpEnv, req *http.Request) *http.Response {
	t.Helper()
	tr := &http2.Transport{TLSClientConfig: rawTLS(e.src)}
	t.Cleanup(tr.CloseIdleConnections)
	req.URL.Scheme = "https"
	if req.URL.Host == "" {
		req.URL.Host = e.addr.String()
	}
	tr.DialTLSContext = func(ctx context.Context, network, _ string, cfg *tls.Config) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, e.addr.String())
	}
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestNonConnectIs405(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	req, _ := http.NewRequest(http.MethodGet, "https://"+e.addr.String()+"/", nil)
	if res := xnetRoundTrip(t, e, req); res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET got %d, want 405", res.StatusCode)
	}
}

func TestBadAuthorityIs400(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	for _, auth := range []string{"example.com:80", "10.0.0.1:0", "[fe80::1%25eth0]:80"} {
		req := &http.Request{Method: http.MethodConnect, Host: auth, URL: &url.URL{Host: auth}, Header: http.Header{}}
		if res := xnetRoundTrip(t, e, req); res.StatusCode != http.StatusBadRequest {
			t.Errorf("authority %q got %d, want 400", auth, res.StatusCode)
		}
	}
	req := &http.Request{Method: http.MethodConnect, Host: testAuthority.String(), URL: &url.URL{Host: testAuthority.String()},
		Header: http.Header{"Forwarded": {"for=unknown"}}}
	if res := xnetRoundTrip(t, e, req); res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad forwarded got %d, want 400", res.StatusCode)
	}
}

// TestXNetClientEcho: Istio's Go client (x/net/http2 Transport) tunnels
// through our server.
func TestXNetClientEcho(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	pr, pw := io.Pipe()
	req := &http.Request{Method: http.MethodConnect, Host: testAuthority.String(),
		URL: &url.URL{Host: testAuthority.String()}, Header: http.Header{}, Body: pr}
	res := xnetRoundTrip(t, e, req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	go func() {
		io.WriteString(pw, "hello through x/net")
		pw.Close()
	}()
	b, err := io.ReadAll(res.Body)
	if err != nil || string(b) != "hello through x/net" {
		t.Fatalf("echo %q, %v", b, err)
	}
}
