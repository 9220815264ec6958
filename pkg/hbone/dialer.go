package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TransportConfig configures a TransportDialer's choice of transport.
type TransportConfig struct {
	// Mode is the hboneTransport setting; "" means TransportAuto.
	Mode TransportMode
	// FallbackDelay is how long a QUIC handshake runs alone before TCP
	// is tried beside it; 0 means DefaultFallbackDelay.
	FallbackDelay time.Duration
	// FailureTTL is how long a peer whose QUIC path failed is reached
	// over TCP only; 0 means DefaultFailureTTL (doubled for each
	// further failure in a row, up to an hour).
	FailureTTL time.Duration

	clock    clock         // tests
	quicIdle time.Duration // tests: the QUIC idle timeout
}

// TransportDialer dials HBONE over TCP or QUIC, chosen per peer (see the
// package documentation): QUIC toward a peer that advertised it (or
// toward every peer in mode quic), raced against TCP from FallbackDelay
// on; TCP otherwise. A peer whose QUIC path lost such a race is reached
// over TCP for a while, then tried again, unless the QUIC handshake
// finishes after all: then its connection serves the next tunnels.
type TransportDialer struct {
	cfg   ClientConfig
	tcp   *Client
	peers *peerTable
	clock clock
	delay time.Duration
	log   *slog.Logger
	idle  time.Duration // tests

	// quic is made on first use: a proxy whose peers advertise no QUIC
	// (or in mode tcp) keeps no UDP socket.
	mu     sync.Mutex
	quic   *QUICClient
	closed bool
}

// NewTransportDialer returns a TransportDialer with a Client and, once a
// peer is to be reached over QUIC, a QUICClient, both configured by cfg.
func NewTransportDialer(cfg ClientConfig, tc TransportConfig) (*TransportDialer, error) {
	if tc.Mode == "" {
		tc.Mode = TransportAuto
	}
	mode, err := ParseTransportMode(string(tc.Mode))
	if err != nil {
		return nil, err
	}
	if tc.FallbackDelay <= 0 {
		tc.FallbackDelay = DefaultFallbackDelay
	}
	if tc.clock == nil {
		tc.clock = realClock{}
	}
	tcp, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	d := &TransportDialer{
		cfg:   tcp.cfg,
		tcp:   tcp,
		peers: newPeerTable(mode, tc.clock, tc.FailureTTL),
		clock: tc.clock,
		delay: tc.FallbackDelay,
		log:   tcp.cfg.Logger,
		idle:  tc.quicIdle,
	}
	return d, nil
}

// quicClient returns the QUIC client, made on first use.
func (d *TransportDialer) quicClient() (*QUICClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errPoolClosed
	}
	if d.quic == nil {
		q, err := NewQUICClient(d.cfg)
		if err != nil {
			return nil, err
		}
		q.idleTimeout = d.idle
		d.quic = q
	}
	return d.quic, nil
}

// Stats reports the connection counts of each transport.
func (d *TransportDialer) Stats() (tcp, quic ClientStats) {
	tcp = d.tcp.Stats()
	d.mu.Lock()
	q := d.quic
	d.mu.Unlock()
	if q != nil {
		quic = q.Stats()
	}
	return tcp, quic
}

// Close closes every connection, and the QUIC client's UDP socket.
func (d *TransportDialer) Close() error {
	d.mu.Lock()
	d.closed = true
	q := d.quic
	d.mu.Unlock()
	err := d.tcp.Close()
	if q != nil {
		err = errors.Join(err, q.Close())
	}
	return err
}

// slot is a reserved stream slot on a connection of either transport.
type slot struct {
	quic *pooled[*quicConn]
	tcp  *pooled[*h2Conn]
}

// Dial implements Dialer. TransportOf tells which transport the tunnel
// took.
func (d *TransportDialer) Dial(ctx context.Context, src *tls.Certificate, dst, authority netip.AddrPort,
	expectedSANs []spiffeid.ID, hdr http.Header) (net.Conn, error) {
	tt, err := d.tcp.target(src, dst, authority, expectedSANs)
	if err != nil {
		return nil, err
	}
	qaddr, useQUIC := d.peers.quicAddr(dst)
	var q *QUICClient
	if useQUIC {
		if q, err = d.quicClient(); err != nil {
			d.log.Warn("hbone: no QUIC client, using TCP", "err", err)
		}
	}
	if q == nil {
		pc, err := d.tcp.pool.get(ctx, tt.key, tt.dial)
		if err != nil {
			return nil, err
		}
		return d.connectTCP(ctx, dst, tt, pc, authority, hdr)
	}
	qt, err := q.target(src, qaddr, authority, expectedSANs)
	if err != nil {
		return nil, err
	}
	// The usual case: a QUIC connection is open and has room.
	if pc := q.pool.tryGet(qt.key); pc != nil {
		return d.connectQUIC(ctx, q, dst, tt, pc, authority, hdr)
	}
	start := d.clock.Now()
	// A QUIC handshake that finishes after TCP won was slow (a loaded
	// peer, a certificate being issued), not blocked: its connection is
	// kept for the next tunnels, and the failure recorded below (which
	// must come first) is forgotten.
	recorded := make(chan struct{})
	defer close(recorded)
	r := race(ctx, d.clock, d.delay,
		func(ctx context.Context) (slot, error) {
			pc, err := q.pool.get(ctx, qt.key, qt.dial)
			return slot{quic: pc}, err
		},
		func(ctx context.Context) (slot, error) {
			pc, err := d.tcp.pool.get(ctx, tt.key, tt.dial)
			return slot{tcp: pc}, err
		},
		func(s slot) {
			if s.quic == nil {
				d.tcp.pool.discard(s.tcp)
				return
			}
			<-recorded
			q.pool.release(s.quic)
			d.peers.succeeded(dst)
			d.log.Info("hbone: QUIC connected after TCP; using it from now on", "dst", dst, "quic", qaddr,
				"handshake", d.clock.Now().Sub(start))
		})
	switch {
	case r.err != nil:
		// Both failed: nothing says QUIC is the trouble.
		return nil, r.err
	case !r.fallback:
		d.peers.succeeded(dst)
		return d.connectQUIC(ctx, q, dst, tt, r.val.quic, authority, hdr)
	}
	d.peers.failed(dst)
	reason := "no handshake within the fallback delay"
	if r.firstErr != nil {
		reason = r.firstErr.Error()
	}
	d.log.Info("hbone: QUIC did not connect, using TCP", "dst", dst, "quic", qaddr,
		"reason", reason, "delay", d.clock.Now().Sub(start))
	return d.connectTCP(ctx, dst, tt, r.val.tcp, authority, hdr)
}

func (d *TransportDialer) connectTCP(ctx context.Context, dst netip.AddrPort, tt tcpTarget, pc *pooled[*h2Conn], authority netip.AddrPort, hdr http.Header) (net.Conn, error) {
	conn, rh, err := d.tcp.dialOn(ctx, tt, pc, authority, hdr)
	d.learn(dst, rh)
	return conn, err
}

func (d *TransportDialer) connectQUIC(ctx context.Context, q *QUICClient, dst netip.AddrPort, tt tcpTarget, pc *pooled[*quicConn], authority netip.AddrPort, hdr http.Header) (net.Conn, error) {
	conn, rh, err := q.connect(ctx, pc, authority, hdr)
	d.learn(dst, rh)
	var re retryableError
	if !errors.As(err, &re) || ctx.Err() != nil {
		return conn, err
	}
	// The QUIC connection is going away (its peer restarts, say) or
	// died in silence, and did not take the tunnel: it goes over TCP; the
	// next one tries a new QUIC connection.
	d.log.Debug("hbone: QUIC connection going away, tunnel over TCP", "dst", dst, "err", err)
	tpc, err := d.tcp.pool.get(ctx, tt.key, tt.dial)
	if err != nil {
		return nil, err
	}
	return d.connectTCP(ctx, dst, tt, tpc, authority, hdr)
}

// learn records what a peer's answer advertised.
func (d *TransportDialer) learn(dst netip.AddrPort, rh http.Header) {
	if v := rh.Values("Alt-Svc"); len(v) > 0 {
		d.peers.advertised(dst, strings.Join(v, ","))
	}
}
