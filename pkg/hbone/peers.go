package hbone

import (
	"net/netip"
	"sync"
	"time"
)

// clock is time as the transport choice sees it; tests move a fake one.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) clockTimer
}

type clockTimer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTimer(d time.Duration) clockTimer {
	return realTimer{time.NewTimer(d)}
}

type realTimer struct{ *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.Timer.C }

// Defaults of the transport choice.
const (
	// DefaultFallbackDelay is how long a QUIC handshake runs alone before
	// TCP is tried beside it (RFC 8305 recommends 250 ms between
	// attempts; a handshake is a round trip more than a TCP connect).
	DefaultFallbackDelay = 300 * time.Millisecond
	// DefaultFailureTTL is how long a peer whose QUIC path failed is
	// reached over TCP before QUIC is tried again; each further failure
	// in a row doubles it, up to maxFailureTTL. Short at first, so that a
	// peer's restart (its UDP port changing hands) costs QUIC for half a
	// minute, not for long; a path that drops UDP costs the fallback
	// delay some eight times in its first hour, then hourly.
	DefaultFailureTTL = 30 * time.Second
	maxFailureTTL     = time.Hour
	// maxPeers bounds the table; expired entries go first.
	maxPeers = 1 << 16
)

// peerTable remembers, per HBONE peer address, what it advertised and
// how QUIC toward it fared.
type peerTable struct {
	mode       TransportMode
	clock      clock
	failureTTL time.Duration

	mu    sync.Mutex
	peers map[netip.AddrPort]*peerState
}

type peerState struct {
	// quicPort and quicUntil: the peer advertised HBONE over QUIC on
	// this UDP port, valid until then.
	quicPort  uint16
	quicUntil time.Time
	// failures in a row, and until when QUIC is not tried.
	failures    int
	failedUntil time.Time
}

func newPeerTable(mode TransportMode, clk clock, failureTTL time.Duration) *peerTable {
	if failureTTL <= 0 {
		failureTTL = DefaultFailureTTL
	}
	return &peerTable{mode: mode, clock: clk, failureTTL: failureTTL, peers: make(map[netip.AddrPort]*peerState)}
}

// quicAddr returns where to try HBONE over QUIC toward the peer at dst,
// or false for TCP: never in mode tcp; in mode auto only toward a peer
// that advertised it; in mode quic toward every peer (on dst's port
// unless it advertised another); and never while a failure is
// remembered.
func (t *peerTable) quicAddr(dst netip.AddrPort) (netip.AddrPort, bool) {
	if t.mode == TransportTCPOnly {
		return netip.AddrPort{}, false
	}
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.peers[dst]
	port := uint16(0)
	if st != nil {
		if now.Before(st.failedUntil) {
			return netip.AddrPort{}, false
		}
		if now.Before(st.quicUntil) {
			port = st.quicPort
		}
	}
	if port == 0 && t.mode == TransportQUICFirst {
		port = dst.Port()
	}
	if port == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(dst.Addr(), port), true
}

// advertised records an Alt-Svc field value received from dst. A value
// that does not parse is ignored: the peer keeps what it said before.
func (t *peerTable) advertised(dst netip.AddrPort, value string) {
	if t.mode == TransportTCPOnly || value == "" {
		return
	}
	a, err := parseAltSvc(value)
	if err != nil {
		return
	}
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.peers[dst]
	if a.clear || a.port != 0 && a.maxAge == 0 {
		// Withdrawn: "clear", or ma=0 (expired at once).
		if st != nil {
			st.quicPort, st.quicUntil = 0, time.Time{}
		}
		return
	}
	if a.port == 0 {
		return // no alternative HBONE uses
	}
	if st == nil {
		st = t.addLocked(dst, now)
	}
	st.quicPort, st.quicUntil = a.port, now.Add(a.maxAge)
}

// failed records that QUIC toward dst did not connect before TCP did.
func (t *peerTable) failed(dst netip.AddrPort) {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.peers[dst]
	if st == nil {
		st = t.addLocked(dst, now)
	}
	ttl := t.failureTTL
	for i := 0; i < st.failures && ttl < maxFailureTTL; i++ {
		ttl *= 2
	}
	st.failures++
	st.failedUntil = now.Add(min(ttl, max(maxFailureTTL, t.failureTTL)))
}

// succeeded records that QUIC toward dst connected.
func (t *peerTable) succeeded(dst netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.peers[dst]; st != nil {
		st.failures, st.failedUntil = 0, time.Time{}
	}
}

// quicFailed reports whether a QUIC failure toward dst is remembered.
func (t *peerTable) quicFailed(dst netip.AddrPort) bool {
	now := t.clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.peers[dst]
	return st != nil && now.Before(st.failedUntil)
}

func (t *peerTable) addLocked(dst netip.AddrPort, now time.Time) *peerState {
	if len(t.peers) >= maxPeers {
		for k, st := range t.peers {
			if !now.Before(st.quicUntil) && !now.Before(st.failedUntil) {
				delete(t.peers, k)
			}
		}
		// Still full: forget one at random (map order).
		for k := range t.peers {
			if len(t.peers) < maxPeers {
				break
			}
			delete(t.peers, k)
		}
	}
	st := &peerState{}
	t.peers[dst] = st
	return st
}
