package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// peerEnv is an HBONE peer on loopback: a TCP server, and on a UDP port
// of its own a QUIC server (serveQUIC) that the TCP server may advertise
// (advertise), as ztunnel in each transport mode would be.
type peerEnv struct {
	*tcpEnv
	udp *net.UDPConn
	qs  *QUICServer  // nil unless serveQUIC
	cfg ServerConfig // the servers' configuration
}

func newPeerEnv(t *testing.T, advertise, serveQUIC bool) *peerEnv {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	altSvc := ""
	if advertise {
		altSvc = FormatAltSvc(uint16(udp.LocalAddr().(*net.UDPAddr).Port), time.Hour)
	}
	var cfg ServerConfig
	e := newTCPEnv(t, echo, envOpt{serverCfg: func(c *ServerConfig) {
		c.AltSvc = altSvc
		cfg = *c
	}})
	pe := &peerEnv{tcpEnv: e, udp: udp, cfg: cfg}
	if serveQUIC {
		qs, err := NewQUICServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		go qs.Serve(udp)
		t.Cleanup(func() { qs.Close() })
		pe.qs = qs
	}
	return pe
}

func (e *peerEnv) dialer(t *testing.T, mode TransportMode, clk clock) *TransportDialer {
	t.Helper()
	d, err := NewTransportDialer(ClientConfig{Bundles: e.pki.bundles}, TransportConfig{Mode: mode, clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// tunnel dials through d and checks that bytes go both ways.
func (e *peerEnv) tunnel(t *testing.T, d *TransportDialer) Transport {
	t.Helper()
	tr, err := e.tryTunnel(testCtx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func (e *peerEnv) tryTunnel(ctx context.Context, d *TransportDialer) (Transport, error) {
	c, err := d.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
	if err != nil {
		return 0, fmt.Errorf("Dial: %w", err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		return 0, err
	}
	c.(closeWriter).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "ping" {
		return 0, fmt.Errorf("echo %q, %v", b, err)
	}
	return TransportOf(c), nil
}

// tunnelResult is how a tunnel dialled in the background went.
type tunnelResult struct {
	tr  Transport
	err error
}

// tunnelAsync dials a tunnel through d on another goroutine, for a test
// that moves the clock meanwhile.
func (e *peerEnv) tunnelAsync(t *testing.T, d *TransportDialer) <-chan tunnelResult {
	done := make(chan tunnelResult, 1)
	go func() {
		tr, err := e.tryTunnel(testCtx(t), d)
		done <- tunnelResult{tr, err}
	}()
	return done
}

func TestTransportDialer(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		mode                 TransportMode
		advertise, serveQUIC bool
		want                 []Transport
		quicDialed           uint64
	}{
		{"auto: a peer that advertises QUIC gets it from the second tunnel on", TransportAuto, true, true,
			[]Transport{TransportTCP, TransportQUIC, TransportQUIC, TransportQUIC}, 1},
		{"auto: a peer that advertises nothing gets TCP (Istio's ztunnel)", TransportAuto, false, true,
			[]Transport{TransportTCP, TransportTCP, TransportTCP}, 0},
		{"tcp: never QUIC, advertised or not", TransportTCPOnly, true, true,
			[]Transport{TransportTCP, TransportTCP, TransportTCP}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPeerEnv(t, tc.advertise, tc.serveQUIC)
			// A clock that does not move: TCP never starts beside a
			// QUIC handshake that is merely slow (a loaded machine).
			d := e.dialer(t, tc.mode, newFakeClock())
			for i, want := range tc.want {
				if got := e.tunnel(t, d); got != want {
					t.Fatalf("tunnel %d over %v, want %v", i, got, want)
				}
			}
			tcp, quic := d.Stats()
			if tcp.Dialed != 1 || quic.Dialed != tc.quicDialed {
				t.Fatalf("dialed %d TCP and %d QUIC connections, want 1 and %d", tcp.Dialed, quic.Dialed, tc.quicDialed)
			}
		})
	}
}

// TestTransportDialerFallsBack: QUIC that does not connect (UDP dropped:
// the advertised socket is never read; or nothing at all on UDP) costs
// the fallback delay once, on the fake clock, and is then skipped.
func TestTransportDialerFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      TransportMode
		advertise bool
		// tcpFirst: the first tunnel goes over TCP without trying QUIC
		// (nothing advertised yet).
		tcpFirst bool
	}{
		{"auto: advertised, UDP dropped", TransportAuto, true, true},
		{"quic: a TCP-only peer", TransportQUICFirst, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newPeerEnv(t, tc.advertise, false)
			if !tc.advertise {
				// Nothing bound to the peer's port on UDP at all.
				e.udp.Close()
			}
			clk := newFakeClock()
			d := e.dialer(t, tc.mode, clk)
			if tc.tcpFirst {
				if got := e.tunnel(t, d); got != TransportTCP {
					t.Fatalf("first tunnel over %v", got)
				}
			}
			// QUIC is tried and gets nowhere; TCP starts after the delay.
			done := e.tunnelAsync(t, d)
			if got := <-clk.timerMade; got != DefaultFallbackDelay {
				t.Fatalf("fallback timer of %v, want %v", got, DefaultFallbackDelay)
			}
			clk.Advance(DefaultFallbackDelay)
			if r := <-done; r.err != nil || r.tr != TransportTCP {
				t.Fatalf("tunnel over %v, %v; want TCP", r.tr, r.err)
			}
			if !d.peers.quicFailed(e.addr) {
				t.Fatal("QUIC failure not remembered")
			}
			// Remembered: TCP at once, no race.
			for range 3 {
				if got := e.tunnel(t, d); got != TransportTCP {
					t.Fatalf("tunnel over %v, want TCP", got)
				}
			}
			select {
			case d := <-clk.timerMade:
				t.Fatalf("another race (timer %v) while the failure is remembered", d)
			default:
			}
			if tcp, _ := d.Stats(); tcp.Dialed != 1 {
				t.Fatalf("%d TCP connections, want 1", tcp.Dialed)
			}
			// Once the failure is forgotten, QUIC is tried again.
			clk.Advance(DefaultFailureTTL)
			if _, ok := d.peers.quicAddr(e.addr); !ok {
				t.Fatal("QUIC not tried again after the failure TTL")
			}
		})
	}
}

// TestTransportDialerSlowQUIC: a QUIC handshake that only finishes after
// TCP won the race (the peer's certificate was slow to come) is not a
// failure: its connection carries the next tunnels.
func TestTransportDialerSlowQUIC(t *testing.T) {
	e := newPeerEnv(t, true, false)
	slow := make(chan struct{})
	cfg := e.cfg
	getCert := cfg.GetCertificate
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.Conn != nil && hello.Conn.LocalAddr().Network() == "udp" {
			<-slow
		}
		return getCert(hello)
	}
	qs, err := NewQUICServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go qs.Serve(e.udp)
	t.Cleanup(func() { qs.Close() })

	clk := newFakeClock()
	d := e.dialer(t, TransportAuto, clk)
	if got := e.tunnel(t, d); got != TransportTCP {
		t.Fatalf("first tunnel over %v, want TCP (nothing advertised yet)", got)
	}
	done := e.tunnelAsync(t, d)
	<-clk.timerMade
	clk.Advance(DefaultFallbackDelay)
	if r := <-done; r.err != nil || r.tr != TransportTCP {
		t.Fatalf("tunnel during the slow QUIC handshake over %v, %v; want TCP", r.tr, r.err)
	}
	close(slow)
	// Observes the late handshake's outcome; it does not stand in for it.
	deadline := time.Now().Add(10 * time.Second)
	for d.peers.quicFailed(e.addr) {
		if time.Now().After(deadline) {
			t.Fatal("the QUIC handshake that finished late is still remembered as a failure")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 3 {
		if got := e.tunnel(t, d); got != TransportQUIC {
			t.Fatalf("tunnel %d after the late handshake over %v, want QUIC", i, got)
		}
	}
	if tcp, quic := d.Stats(); tcp.Dialed != 1 || quic.Dialed != 1 {
		t.Fatalf("dialed %d TCP and %d QUIC connections, want 1 each", tcp.Dialed, quic.Dialed)
	}
}

// TestTransportDialerPeerDraining: a peer whose QUIC server shuts down
// (its ztunnel is being replaced) sends GOAWAY and rejects new streams;
// tunnels then go over TCP, not one fails, and the tunnel open on the
// draining connection keeps working.
func TestTransportDialerPeerDraining(t *testing.T) {
	e := newPeerEnv(t, true, true)
	d := e.dialer(t, TransportAuto, nil)
	ctx := testCtx(t)
	for i, want := range []Transport{TransportTCP, TransportQUIC} {
		if got := e.tunnel(t, d); got != want {
			t.Fatalf("tunnel %d over %v, want %v", i, got, want)
		}
	}
	open, err := d.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
	if err != nil || TransportOf(open) != TransportQUIC {
		t.Fatalf("long-lived tunnel: %v over %v", err, TransportOf(open))
	}
	defer open.Close()
	shut := make(chan error, 1)
	go func() { shut <- e.qs.Shutdown(ctx) }()
	// Until the shutdown takes effect, tunnels may still go over QUIC;
	// then over TCP. None may fail.
	for n := 0; ; n++ {
		tr, err := e.tryTunnel(ctx, d)
		if err != nil {
			t.Fatalf("tunnel %d during the peer's drain: %v", n, err)
		}
		if tr == TransportTCP {
			break
		}
	}
	if _, err := io.WriteString(open, "still"); err != nil {
		t.Fatal(err)
	}
	open.(closeWriter).CloseWrite()
	if b, err := io.ReadAll(open); err != nil || string(b) != "still" {
		t.Fatalf("tunnel open across the drain: %q, %v", b, err)
	}
	open.Close()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestTransportDialerPeerVanished: a peer that vanishes without closing
// its QUIC connection (a crash; UDP dropped on the way) leaves it silent.
// A CONNECT on it gets no answer; once the connection's idle timeout ends
// it, the tunnel goes over TCP instead of failing.
func TestTransportDialerPeerVanished(t *testing.T) {
	e := newPeerEnv(t, true, true)
	d, err := NewTransportDialer(ClientConfig{Bundles: e.pki.bundles},
		TransportConfig{Mode: TransportAuto, clock: newFakeClock(), quicIdle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, want := range []Transport{TransportTCP, TransportQUIC} {
		if got := e.tunnel(t, d); got != want {
			t.Fatalf("tunnel %d over %v, want %v", i, got, want)
		}
	}
	// The socket goes from under the QUIC server: nothing can tell the
	// client.
	e.udp.Close()
	if got := e.tunnel(t, d); got != TransportTCP {
		t.Fatalf("tunnel after the peer vanished over %v, want TCP", got)
	}
}

// TestTransportDialerWrongIdentity: a server with the wrong identity
// fails the QUIC handshake and the TCP one alike; that is no reason to
// remember QUIC as failed toward the peer.
func TestTransportDialerWrongIdentity(t *testing.T) {
	e := newPeerEnv(t, true, true)
	d := e.dialer(t, TransportAuto, nil)
	// As if an earlier answer had advertised QUIC.
	d.peers.advertised(e.addr, FormatAltSvc(uint16(e.udp.LocalAddr().(*net.UDPAddr).Port), time.Hour))
	other := spiffeid.RequireFromString("spiffe://cluster.local/ns/ns1/sa/other")
	_, err := d.Dial(testCtx(t), e.src, e.addr, testAuthority, []spiffeid.ID{other}, nil)
	var sm *SANMismatchError
	if !errors.As(err, &sm) {
		t.Fatalf("Dial to a wrong identity: %v, want SANMismatchError", err)
	}
	if d.peers.quicFailed(e.addr) {
		t.Fatal("QUIC remembered as failed after both transports refused the server")
	}
	if tcp, quic := d.Stats(); tcp.Open != 0 || quic.Open != 0 {
		t.Fatalf("connections kept to a wrong identity: %d TCP, %d QUIC", tcp.Open, quic.Open)
	}
}

// TestKeyExchange pins the key exchange between Skiff peers to
// X25519MLKEM768 on both transports, and checks that a peer offering only
// classical X25519 (as Istio's ztunnel may) still gets through with it.
func TestKeyExchange(t *testing.T) {
	e := newPeerEnv(t, true, true)
	ctx := testCtx(t)
	t.Run("tcp", func(t *testing.T) {
		c, err := e.client.Dial(ctx, e.src, e.addr, testAuthority, []spiffeid.ID{e.srvID}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs := c.(*h2Stream).c.nc.(*tls.Conn).ConnectionState()
		if cs.CurveID != tls.X25519MLKEM768 {
			t.Fatalf("TCP key exchange %v, want X25519MLKEM768", cs.CurveID)
		}
	})
	t.Run("quic", func(t *testing.T) {
		qc, err := NewQUICClient(ClientConfig{Bundles: e.pki.bundles})
		if err != nil {
			t.Fatal(err)
		}
		defer qc.Close()
		qaddr := e.udp.LocalAddr().(*net.UDPAddr).AddrPort()
		c, err := qc.Dial(ctx, e.src, qaddr, testAuthority, []spiffeid.ID{e.srvID}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		key, _ := poolKey(e.src, qaddr, []spiffeid.ID{e.srvID})
		pc := qc.pool.tryGet(key)
		if pc == nil {
			t.Fatal("no pooled QUIC connection")
		}
		defer qc.pool.release(pc)
		if got := pc.c.qc.ConnectionState().TLS.CurveID; got != tls.X25519MLKEM768 {
			t.Fatalf("QUIC key exchange %v, want X25519MLKEM768", got)
		}
	})
	t.Run("classical client", func(t *testing.T) {
		conf := clientTLSConfig("h2", e.src, e.pki.bundles, []spiffeid.ID{e.srvID})
		conf.CurvePreferences = []tls.CurveID{tls.X25519}
		tc, err := tls.Dial("tcp", e.addr.String(), conf)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if got := tc.ConnectionState().CurveID; got != tls.X25519 {
			t.Fatalf("key exchange with a classical client %v, want X25519", got)
		}
	})
}
