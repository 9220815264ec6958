package hbone

import (
	"net/netip"
	"testing"
	"time"
)

// TestTransportChoice walks the memory of one peer through advertisements,
// failures and time, in each mode.
func TestTransportChoice(t *testing.T) {
	peer := netip.MustParseAddrPort("10.0.0.2:15008")
	quicAt := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(peer.Addr(), port) }
	type step struct {
		advertise string        // an answer's Alt-Svc
		fail      bool          // QUIC lost a race
		succeed   bool          // QUIC connected
		advance   time.Duration // time passes
		want      netip.AddrPort
	}
	tcp := netip.AddrPort{}
	for _, tc := range []struct {
		name  string
		mode  TransportMode
		steps []step
	}{
		{"auto: a peer that advertises nothing gets TCP", TransportAuto, []step{
			{want: tcp},
			{advertise: "", want: tcp},
			{advance: 48 * time.Hour, want: tcp},
		}},
		{"auto: QUIC once advertised, for ma", TransportAuto, []step{
			{want: tcp},
			{advertise: `h3=":15008"; ma=3600`, want: quicAt(15008)},
			{advance: 59 * time.Minute, want: quicAt(15008)},
			{advertise: `h3=":15008"; ma=3600`, advance: 30 * time.Minute, want: quicAt(15008)},
			{advance: 31 * time.Minute, want: tcp},
		}},
		{"auto: the advertised port is used", TransportAuto, []step{
			{advertise: `h3=":15009"`, want: quicAt(15009)},
		}},
		{"auto: clear and ma=0 withdraw; nonsense changes nothing", TransportAuto, []step{
			{advertise: `h3=":15008"`, want: quicAt(15008)},
			{advertise: `h3=":15008`, want: quicAt(15008)},
			{advertise: `h2=":443"`, want: quicAt(15008)},
			{advertise: `clear`, want: tcp},
			{advertise: `h3=":15008"`, want: quicAt(15008)},
			{advertise: `h3=":15008"; ma=0`, want: tcp},
		}},
		{"auto: a failure is remembered, then QUIC is tried again", TransportAuto, []step{
			{advertise: `h3=":15008"; ma=86400`, want: quicAt(15008)},
			{fail: true, want: tcp},
			{advance: 29 * time.Second, want: tcp},
			{advance: time.Second, want: quicAt(15008)},
			// A second failure in a row: twice as long.
			{fail: true, advance: 59 * time.Second, want: tcp},
			{advance: time.Second, want: quicAt(15008)},
			// A success resets the count.
			{succeed: true, fail: true, advance: 30 * time.Second, want: quicAt(15008)},
		}},
		{"auto: failures back off up to an hour", TransportAuto, []step{
			{advertise: `h3=":15008"; ma=864000`, want: quicAt(15008)},
			{fail: true}, {fail: true}, {fail: true}, {fail: true}, {fail: true}, {fail: true}, {fail: true}, {fail: true},
			{advance: 59 * time.Minute, want: tcp},
			{advance: time.Minute, want: quicAt(15008)},
		}},
		{"tcp: never QUIC", TransportTCPOnly, []step{
			{want: tcp},
			{advertise: `h3=":15008"`, want: tcp},
		}},
		{"quic: QUIC unadvertised, on the HBONE port, until it fails", TransportQUICFirst, []step{
			{want: quicAt(15008)},
			{advertise: `h3=":15009"`, want: quicAt(15009)},
			{advertise: `clear`, want: quicAt(15008)},
			{fail: true, want: tcp},
			{advance: 30 * time.Second, want: quicAt(15008)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			pt := newPeerTable(tc.mode, clk, 0)
			for i, s := range tc.steps {
				if s.succeed {
					pt.succeeded(peer)
				}
				if s.fail {
					pt.failed(peer)
				}
				if s.advertise != "" {
					pt.advertised(peer, s.advertise)
				}
				clk.Advance(s.advance)
				got, ok := pt.quicAddr(peer)
				if ok != got.IsValid() {
					t.Fatalf("step %d: quicAddr = %v, %v", i, got, ok)
				}
				if got != s.want {
					t.Errorf("step %d (%+v): quicAddr = %v, want %v", i, s, got, s.want)
				}
			}
			// Another peer is not affected by any of it.
			if got, ok := pt.quicAddr(netip.MustParseAddrPort("10.0.0.3:15008")); ok != (tc.mode == TransportQUICFirst) {
				t.Errorf("another peer: %v %v", got, ok)
			}
		})
	}
}

func TestPeerTableIsBounded(t *testing.T) {
	clk := newFakeClock()
	pt := newPeerTable(TransportAuto, clk, 0)
	for i := range maxPeers + 10 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		pt.advertised(netip.AddrPortFrom(a, 15008), `h3=":15008"`)
	}
	if n := len(pt.peers); n > maxPeers {
		t.Fatalf("%d peers remembered, want at most %d", n, maxPeers)
	}
}
