package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
)

// testPKI is a trust domain with its CA, from pkg/identity.
type testPKI struct {
	td      spiffeid.TrustDomain
	ca      *identity.CA
	bundles *identity.Bundles
}

func newPKI(t testing.TB, td string, opts ...identity.CAOption) *testPKI {
	t.Helper()
	d := spiffeid.RequireTrustDomainFromString(td)
	ca, err := identity.NewSelfSignedCA(d, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{td: d, ca: ca, bundles: identity.NewBundles(ca.Bundle())}
}

// cert issues a workload certificate for ns/sa.
func (p *testPKI) cert(t testing.TB, ns, sa string, ttl time.Duration) (*tls.Certificate, spiffeid.ID) {
	t.Helper()
	id, err := identity.WorkloadID(p.td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := p.ca.Sign(csr, id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, id
}

// countingListener counts accepted connections and reports their closing.
type countingListener struct {
	net.Listener
	n      atomic.Int64
	closed chan struct{} // one value per closed conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n.Add(1)
	return &notifyConn{Conn: c, closed: l.closed}, nil
}

type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *notifyConn) Close() error {
	c.once.Do(func() { c.closed <- struct{}{} })
	return c.Conn.Close()
}

// echo accepts and copies the tunnel back, then half-closes.
var echo = HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
	c, err := w.Accept()
	if err != nil {
		return
	}
	io.Copy(c, c)
	c.(closeWriter).CloseWrite()
})

type tcpEnv struct {
	pki      *testPKI
	srv      *Server
	ln       *countingListener
	addr     netip.AddrPort
	client   *Client
	src      *tls.Certificate
	srcID    spiffeid.ID
	srvID    spiffeid.ID
	serveErr chan error
}

type envOpt struct {
	serverCfg func(*ServerConfig)
	clientCfg func(*ClientConfig)
	// goAwayTimeout, if set, is how long both sides wait to deliver the
	// GOAWAY that ends a failing connection.
	goAwayTimeout time.Duration
}

func newTCPEnv(t *testing.T, h Handler, o envOpt) *tcpEnv {
	t.Helper()
	pki := newPKI(t, "cluster.local")
	srvCert, srvID := pki.cert(t, "ns1", "server", time.Hour)
	src, srcID := pki.cert(t, "ns2", "client", time.Hour)
	cfg := ServerConfig{
		TrustDomain: pki.td,
		Bundles:     pki.bundles,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.Conn == nil || hello.Conn.LocalAddr() == nil {
				return nil, errors.New("no local address")
			}
			return srvCert, nil
		},
		Handler: h,
	}
	if o.serverCfg != nil {
		o.serverCfg(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.goAwayTimeout = o.goAwayTimeout
	ln := &countingListener{Listener: l, closed: make(chan struct{}, 1024)}
	e := &tcpEnv{pki: pki, srv: srv, ln: ln, addr: l.Addr().(*net.TCPAddr).AddrPort(),
		src: src, srcID: srcID, srvID: srvID, serveErr: make(chan error, 1)}
	go func() { e.serveErr <- srv.Serve(ln) }()
	ccfg := ClientConfig{Bundles: pki.bundles}
	if o.clientCfg != nil {
		o.clientCfg(&ccfg)
	}
	e.client, err = NewClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	e.client.goAwayTimeout = o.goAwayTimeout
	t.Cleanup(func() {
		e.client.Close()
		srv.Close()
	})
	return e
}

var testAuthority = netip.MustParseAddrPort("10.0.0.1:8080")

func (e *tcpEnv) dial(ctx context.Context) (net.Conn, error) {
	return e.client.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
}

// awaitConnClosed waits for the server to close a connection it served.
func (e *tcpEnv) awaitConnClosed(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-e.ln.closed:
	case <-ctx.Done():
		t.Fatal("server kept the connection")
	}
}

func statusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// concurrently runs fn(0) to fn(n-1) at once and fails t with the first
// error any returns.
func concurrently(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	var g errgroup.Group
	for i := range n {
		g.Go(func() error { return fn(i) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var _ http.Header
