package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type quicEnv struct {
	*tcpEnv // certificates, and a TCP server on the same port number
	qsrv    *QUICServer
	qaddr   netip.AddrPort
	qclient *QUICClient
}

func newQUICEnv(t *testing.T, h Handler) *quicEnv {
	t.Helper()
	e := newTCPEnv(t, h, envOpt{})
	srvCert, _ := e.pki.cert(t, "ns1", "server", time.Hour)
	qsrv, err := NewQUICServer(ServerConfig{
		TrustDomain: e.pki.td,
		Bundles:     e.pki.bundles,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.Conn == nil || hello.Conn.LocalAddr() == nil {
				return nil, errors.New("no local address")
			}
			return srvCert, nil
		},
		Handler: h,
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go qsrv.Serve(pc)
	qc, err := NewQUICClient(ClientConfig{Bundles: e.pki.bundles})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		qc.Close()
		qsrv.Close()
		pc.Close()
	})
	return &quicEnv{tcpEnv: e, qsrv: qsrv, qaddr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), qclient: qc}
}

func (e *quicEnv) qdial(ctx context.Context) (net.Conn, error) {
	return e.qclient.Dial(ctx, e.src, e.qaddr, testAuthority, []spiffeid.ID{e.srvID}, nil)
}

func TestQUICEcho(t *testing.T) {
	e := newQUICEnv(t, echo)
	ctx := testCtx(t)
	const n = 200
	concurrently(t, n, func(i int) error { return quicEchoOnce(ctx, e, i) })
	if d := e.qclient.Stats().Dialed; d < 2 || d > 4 {
		t.Errorf("dialed %d QUIC connections for %d streams at 100 per conn", d, n)
	}
}

func quicEchoOnce(ctx context.Context, e *quicEnv, i int) error {
	c, err := e.qdial(ctx)
	if err != nil {
		return fmt.Errorf("stream %d: %w", i, err)
	}
	defer c.Close()
	msg := make([]byte, 1000+i*101)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.(closeWriter).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		return fmt.Errorf("stream %d: echo %d of %d bytes, %v", i, len(got), len(msg), err)
	}
	return nil
}

func TestQUICHalfClose(t *testing.T) {
	done := make(chan []byte, 1)
	e := newQUICEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, _ := w.Accept()
		c.Write([]byte("banner"))
		c.(closeWriter).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Write([]byte("x")) // after our FIN: must fail, not panic
		done <- got
	}))
	c, err := e.qdial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "banner" {
		t.Fatalf("client read %q, %v", got, err)
	}
	payload := bytes.Repeat([]byte("late data "), 100000)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(closeWriter).CloseWrite()
	if got := <-done; !bytes.Equal(got, payload) {
		t.Fatalf("server read %d bytes, want %d", len(got), len(payload))
	}
}

func TestQUICHalfCloseFromClient(t *testing.T) {
	e := newQUICEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		c, _ := w.Accept()
		got, _ := io.ReadAll(c)
		c.Write(append([]byte("got "), got...))
		c.(closeWriter).CloseWrite()
	}))
	c, err := e.qdial(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("request"))
	c.(closeWriter).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got request" {
		t.Fatalf("client read %q, %v", got, err)
	}
}

func TestQUICRefusalStatus(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := newQUICEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
				w.Refuse(code)
			}))
			if _, err := e.qdial(testCtx(t)); statusOf(err) != code {
				t.Fatalf("Dial error = %v, want %d", err, code)
			}
		})
	}
}

func TestQUICRequestFields(t *testing.T) {
	reqs := make(chan *Request, 1)
	e := newQUICEnv(t, HandlerFunc(func(ctx context.Context, w *Responder, r *Request) {
		reqs <- r
		w.Refuse(http.StatusUnauthorized)
	}))
	hdr := http.Header{"Forwarded": {`for="10.1.2.3:4567"`}, "Baggage": {"a=b"}}
	auth := netip.MustParseAddrPort("[fd00::7]:9090")
	if _, err := e.qclient.Dial(testCtx(t), e.src, e.qaddr, auth, []spiffeid.ID{e.srvID}, hdr); statusOf(err) != 401 {
		t.Fatal(err)
	}
	r := <-reqs
	if r.Peer != e.srcID || r.Authority != auth || r.Forwarded != netip.MustParseAddrPort("10.1.2.3:4567") || r.Header.Get("Baggage") != "a=b" {
		t.Errorf("request = %+v", r)
	}
}

func TestQUICClientRejectsUnexpectedSAN(t *testing.T) {
	e := newQUICEnv(t, echo)
	want := spiffeid.RequireFromString("spiffe://cluster.local/ns/ns1/sa/other")
	_, err := e.qclient.Dial(testCtx(t), e.src, e.qaddr, testAuthority, []spiffeid.ID{want}, nil)
	var sm *SANMismatchError
	if !errors.As(err, &sm) {
		t.Fatalf("Dial error = %v, want SANMismatchError", err)
	}
}

func TestQUICServerRejectsForeignTrustDomain(t *testing.T) {
	e := newQUICEnv(t, echo)
	foreign := newPKI(t, "evil.example")
	e.pki.bundles.Set(foreign.ca.Bundle())
	src, _ := foreign.cert(t, "ns2", "client", time.Hour)
	if _, err := e.qclient.Dial(testCtx(t), src, e.qaddr, testAuthority, []spiffeid.ID{e.srvID}, nil); err == nil {
		t.Fatal("QUIC dial from a foreign trust domain succeeded")
	}
}

func TestQUICReuse(t *testing.T) {
	e := newQUICEnv(t, echo)
	for i := range 10 {
		if err := quicEchoOnce(testCtx(t), e, i); err != nil {
			t.Fatal(err)
		}
	}
	if d := e.qclient.Stats().Dialed; d != 1 {
		t.Fatalf("dialed %d QUIC connections, want 1", d)
	}
}

// A QUIC server that comes back on the same port without its connections'
// state (a crashed ztunnel's replacement) ends them at once with stateless
// resets when it has its predecessor's key: the client's next tunnel goes
// over a new connection instead of into one that waits for the idle
// timeout. The dial's bound is far below that timeout and the CONNECT's.
func TestQUICStatelessResetAfterRestart(t *testing.T) {
	e := newTCPEnv(t, echo, envOpt{})
	srvCert, _ := e.pki.cert(t, "ns1", "server", time.Hour)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{
		TrustDomain:    e.pki.td,
		Bundles:        e.pki.bundles,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return srvCert, nil },
		Handler:        echo,
		QUICResetKey:   key,
	}
	serve := func(addr string) (net.PacketConn, *QUICServer) {
		t.Helper()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewQUICServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(pc)
		t.Cleanup(func() { s.Close() })
		return pc, s
	}
	pc, _ := serve("127.0.0.1:0")
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	qc, err := NewQUICClient(ClientConfig{Bundles: e.pki.bundles, HandshakeTimeout: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	qc.idleTimeout = 10 * time.Minute
	t.Cleanup(func() { qc.Close() })
	tunnel := func(ctx context.Context) error {
		c, err := qc.Dial(ctx, e.src, addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "ping"); err != nil {
			return err
		}
		c.(closeWriter).CloseWrite()
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "ping" {
			err = fmt.Errorf("echo %q", b)
		}
		return err
	}
	if err := tunnel(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	var first *quic.Conn
	qc.pool.mu.Lock()
	for _, pcs := range qc.pool.conns {
		first = pcs[0].c.qc
	}
	qc.pool.mu.Unlock()
	// The server crashes: its socket goes, and its connections' state
	// with it, without a CONNECTION_CLOSE.
	pc.Close()
	serve(addr.String())
	if err := tunnel(testCtx(t)); err != nil {
		t.Fatalf("tunnel after the server's restart: %v", err)
	}
	<-first.Context().Done()
	var reset *quic.StatelessResetError
	if err := context.Cause(first.Context()); !errors.As(err, &reset) {
		t.Errorf("the connection to the crashed server ended with %v, want a stateless reset", err)
	}
	if st := qc.Stats(); st.Dialed != 2 {
		t.Errorf("%d QUIC connections dialed, want 2 (the old one reset, a new one)", st.Dialed)
	}
}
