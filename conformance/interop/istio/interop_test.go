package istio

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	istiohbone "istio.io/istio/pkg/hbone"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

type pki struct {
	ca      *identity.CA
	bundles *identity.Bundles
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ca, err := identity.NewSelfSignedCA(td)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca, bundles: identity.NewBundles(ca.Bundle())}
}

func (p *pki) cert(t *testing.T, ns, sa string) (*tls.Certificate, spiffeid.ID) {
	t.Helper()
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	m := identity.NewManager(p.ca.Client(), identity.ManagerOptions{})
	c, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return &c.TLS, id
}

// verifySPIFFE checks a peer's chain against the bundle and its SPIFFE ID
// against want, as an Istio client configured for a workload does.
func (p *pki) verifySPIFFE(want spiffeid.ID) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, _, err := x509svid.ParseAndVerify(raw, p.bundles)
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("peer is %s, want %s", id, want)
		}
		return nil
	}
}

// echo starts a TCP echo server that half-closes after echoing.
func echo(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// upstreamHandler is what ztunnel's inbound does in the small: connect to
// the authority and splice.
func upstreamHandler(seen chan<- *hbone.Request) hbone.Handler {
	return hbone.HandlerFunc(func(ctx context.Context, w *hbone.Responder, r *hbone.Request) {
		seen <- r
		up, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.Authority.String())
		if err != nil {
			w.Refuse(http.StatusServiceUnavailable)
			return
		}
		tun, err := w.Accept()
		if err != nil {
			up.Close()
			return
		}
		hbone.Splice(ctx, tun, up)
	})
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip writes msg, half-closes and reads everything back.
func roundTrip(c net.Conn, msg []byte) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.(closeWriter); ok {
		if err := cw.CloseWrite(); err != nil {
			return nil, err
		}
		return io.ReadAll(c)
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

func TestIstioClientToSkiffServer(t *testing.T) {
	p := newPKI(t)
	serverCert, serverID := p.cert(t, "ns-b", "server")
	clientCert, clientID := p.cert(t, "ns-a", "client")
	seen := make(chan *hbone.Request, 1)
	srv, err := hbone.NewServer(hbone.ServerConfig{
		TrustDomain: td,
		Bundles:     p.bundles,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return serverCert, nil
		},
		Handler: upstreamHandler(seen),
		// What Skiff's ztunnel sends by default: Istio's client ignores it.
		AltSvc: hbone.FormatAltSvc(15008, time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dst := echo(t)
	d := istiohbone.NewDialer(istiohbone.Config{
		ProxyAddress: ln.Addr().String(),
		Headers:      http.Header{"Baggage": {"k8s.namespace.name=ns-a"}},
		TLS: &tls.Config{
			Certificates:          []tls.Certificate{*clientCert},
			MinVersion:            tls.VersionTLS13,
			InsecureSkipVerify:    true, // the SPIFFE check below replaces host-name verification
			VerifyPeerCertificate: p.verifySPIFFE(serverID),
		},
	})
	c, err := d.DialContext(ctxFor(t), "tcp", dst.String())
	if err != nil {
		t.Fatalf("Istio client dial through Skiff server: %v", err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("istio->skiff "), 10000)
	got, err := roundTrip(c, msg)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo mismatch: got %d bytes, want %d", len(got), len(msg))
	}
	r := <-seen
	if r.Peer != clientID {
		t.Errorf("server saw peer %s, want %s", r.Peer, clientID)
	}
	if r.Authority != dst {
		t.Errorf("server saw authority %s, want %s", r.Authority, dst)
	}
}

func TestSkiffClientToIstioServer(t *testing.T) {
	p := newPKI(t)
	serverCert, serverID := p.cert(t, "ns-b", "server")
	clientCert, clientID := p.cert(t, "ns-a", "client")

	srv := istiohbone.NewServer()
	srv.Protocols.SetHTTP2(true)
	srv.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{*serverCert},
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			return p.verifySPIFFE(clientID)(raw, chains)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Istio server: %v", err)
		}
	})

	// As ztunnel dials, in its default transport mode (auto): Istio's
	// server advertises no QUIC, so every tunnel goes over TCP.
	client, err := hbone.NewTransportDialer(hbone.ClientConfig{Bundles: p.bundles}, hbone.TransportConfig{Mode: hbone.TransportAuto})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dst := echo(t)
	proxy := netip.MustParseAddrPort(ln.Addr().String())
	for i := range 3 {
		c, err := client.Dial(ctxFor(t), clientCert, proxy, dst, []spiffeid.ID{serverID}, nil)
		if err != nil {
			t.Fatalf("Skiff client dial through Istio server: %v", err)
		}
		if tr := hbone.TransportOf(c); tr != hbone.TransportTCP {
			t.Fatalf("tunnel %d to Istio's server over %v, want TCP", i, tr)
		}
		msg := bytes.Repeat([]byte(fmt.Sprintf("skiff->istio %d ", i)), 10000)
		got, err := roundTrip(c, msg)
		c.Close()
		if err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d: echo mismatch: got %d bytes, want %d", i, len(got), len(msg))
		}
	}
	if tcp, quic := client.Stats(); tcp.Dialed != 1 || quic.Dialed != 0 {
		t.Errorf("Skiff client dialed %d TCP and %d QUIC connections for 3 tunnels, want 1 and 0", tcp.Dialed, quic.Dialed)
	}

	// A server with an identity the client does not expect is refused.
	other, _ := identity.WorkloadID(td, "ns-x", "someone-else")
	if _, err := client.Dial(ctxFor(t), clientCert, proxy, dst, []spiffeid.ID{other}, nil); err == nil {
		t.Fatal("dial expecting another identity: want an error")
	}
}
