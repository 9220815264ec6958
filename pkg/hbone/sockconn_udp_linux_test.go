package hbone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// udpSegmentCmsg asks the kernel to send b as datagrams of size bytes
// (UDP_SEGMENT, GSO).
func udpSegmentCmsg(size uint16) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

func newGROConn(t *testing.T) *groConn {
	t.Helper()
	return newGROConnOn(t, "udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
}

func newGROConnOn(t *testing.T, network string, laddr *net.UDPAddr) *groConn {
	t.Helper()
	uc, err := net.ListenUDP(network, laddr)
	if err != nil {
		t.Skipf("no %s socket on %v: %v", network, laddr, err)
	}
	t.Cleanup(func() { uc.Close() })
	gc, ok := tuneUDP(uc, slog.New(slog.DiscardHandler)).(*groConn)
	if !ok {
		t.Skip("UDP GRO unavailable on this kernel")
	}
	if err := gc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return gc
}

func newBatch(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

// TestGROConnDealsOutATrain sends one GSO train of 3.5 datagrams and
// checks that ReadBatch hands out each datagram, in order, from the
// sender, with its ECN bits, across calls with room for two at a time.
func TestGROConnDealsOutATrain(t *testing.T) {
	gc := newGROConn(t)
	rc, err := gc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	tx, err := net.DialUDP("udp4", nil, gc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	txc, _ := tx.SyscallConn()
	txc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, 0x02) }) // ECT(0)
	if serr != nil {
		t.Fatal(serr)
	}

	const seg = 1000
	payload := make([]byte, 3*seg+seg/2)
	for i := range payload {
		payload[i] = byte(i / seg)
	}
	if _, _, err := tx.WriteMsgUDP(payload, udpSegmentCmsg(seg), nil); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == unix.EIO || errno == unix.EINVAL) {
			t.Skipf("UDP GSO unavailable: %v", err)
		}
		t.Fatal(err)
	}

	var got [][]byte
	coalesced := false
	for len(got) < 4 {
		ms := newBatch(2, 1452)
		n, err := gc.ReadBatch(ms, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1 || n > 2 {
			t.Fatalf("ReadBatch returned %d messages", n)
		}
		coalesced = coalesced || len(gc.rest) > 0
		for _, m := range ms[:n] {
			if m.Addr.String() != tx.LocalAddr().String() {
				t.Errorf("datagram from %v, want %v", m.Addr, tx.LocalAddr())
			}
			if m.Flags != 0 {
				t.Errorf("flags %#x", m.Flags)
			}
			tos, ok := cmsgTOS(t, m.OOB[:m.NN])
			if !ok || tos&0x3 != 0x02 {
				t.Errorf("control messages %x: TOS %#x, %v; want ECT(0)", m.OOB[:m.NN], tos, ok)
			}
			got = append(got, m.Buffers[0][:m.N])
		}
	}
	// The kernel may also have segmented the train on the way.
	t.Logf("train arrived in one read: %v", coalesced)
	for i, d := range got {
		want := payload[i*seg : min((i+1)*seg, len(payload))]
		if !bytes.Equal(d, want) {
			t.Errorf("datagram %d: %d bytes starting %x, want %d bytes starting %x", i, len(d), d[:1], len(want), want[:1])
		}
	}
}

// TestGROConnHoldsNoBufferBetweenTrains checks that a socket holds its
// 64 KiB read buffer only while a train is dealt out: not while it waits,
// not after a deadline, not once every datagram is handed over.
func TestGROConnHoldsNoBufferBetweenTrains(t *testing.T) {
	gc := newGROConn(t)
	gc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := gc.ReadBatch(newBatch(8, 1452), 0); err == nil {
		t.Fatal("ReadBatch with nothing sent returned no error")
	}
	if gc.bp != nil {
		t.Fatal("a read that timed out kept its buffer")
	}
	gc.SetReadDeadline(time.Now().Add(10 * time.Second))
	tx, err := net.DialUDP("udp4", nil, gc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for i := range 3 {
		if _, err := tx.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		ms := newBatch(1, 1452)
		if n, err := gc.ReadBatch(ms, 0); n != 1 || err != nil || ms[0].N != 1 || ms[0].Buffers[0][0] != byte(i) {
			t.Fatalf("datagram %d: %d, %v, %x", i, n, err, ms[0].Buffers[0][:ms[0].N])
		}
		if gc.bp != nil {
			t.Fatalf("datagram %d dealt out, buffer kept", i)
		}
	}
}

// TestGROConnSender checks that each datagram carries its sender's
// address as *net.UDPConn reports it, for both families.
func TestGROConnSender(t *testing.T) {
	for _, tc := range []struct {
		name, network string
		laddr         *net.UDPAddr
		from          string // the sender's network
		to            net.IP
	}{
		{"IPv4", "udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, "udp4", net.IPv4(127, 0, 0, 1)},
		{"IPv6", "udp6", &net.UDPAddr{IP: net.IPv6loopback}, "udp6", net.IPv6loopback},
		{"IPv4 to a dual-stack socket", "udp", &net.UDPAddr{}, "udp4", net.IPv4(127, 0, 0, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gc := newGROConnOn(t, tc.network, tc.laddr)
			plain, err := net.ListenUDP(tc.network, tc.laddr)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			plain.SetReadDeadline(time.Now().Add(10 * time.Second))
			tx, err := net.ListenUDP(tc.from, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			for _, c := range []*net.UDPConn{gc.UDPConn, plain} {
				to := &net.UDPAddr{IP: tc.to, Port: c.LocalAddr().(*net.UDPAddr).Port}
				if _, err := tx.WriteToUDP([]byte("x"), to); err != nil {
					t.Fatal(err)
				}
			}
			_, _, _, want, err := plain.ReadMsgUDPAddrPort(make([]byte, 8), nil)
			if err != nil {
				t.Fatal(err)
			}
			ms := newBatch(1, 1452)
			if n, err := gc.ReadBatch(ms, 0); n != 1 || err != nil {
				t.Fatalf("ReadBatch: %d, %v", n, err)
			}
			if got := ms[0].Addr.(*net.UDPAddr).AddrPort(); got != want {
				t.Errorf("sender %v, want %v", got, want)
			}
		})
	}
}

// TestGROConnTruncates checks that a datagram larger than quic-go's buffer
// is cut and flagged, as recvmmsg would.
func TestGROConnTruncates(t *testing.T) {
	gc := newGROConn(t)
	tx, err := net.DialUDP("udp4", nil, gc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if _, err := tx.Write(make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	ms := newBatch(8, 1452)
	n, err := gc.ReadBatch(ms, 0)
	if err != nil || n != 1 {
		t.Fatalf("ReadBatch: %d, %v", n, err)
	}
	if ms[0].N != 1452 || ms[0].Flags&unix.MSG_TRUNC == 0 {
		t.Errorf("got %d bytes, flags %#x; want 1452, MSG_TRUNC", ms[0].N, ms[0].Flags)
	}
}

// TestGROConnReadDeadline checks that a read deadline (how quic-go stops
// its read loop) ends a waiting ReadBatch.
func TestGROConnReadDeadline(t *testing.T) {
	gc := newGROConn(t)
	if err := gc.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := gc.ReadBatch(newBatch(8, 1452), 0)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadBatch after the deadline: %v, want a timeout", err)
	}
}

func TestSplitGRO(t *testing.T) {
	tos := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&tos[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(1))
	tos[unix.CmsgLen(0)] = 0x01

	gro := make([]byte, unix.CmsgSpace(4))
	h = (*unix.Cmsghdr)(unsafe.Pointer(&gro[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(gro[unix.CmsgLen(0):], 1350)

	for _, tc := range []struct {
		name    string
		oob     []byte
		seg     int
		wantOOB []byte
	}{
		{"none", nil, 0, nil},
		{"TOS only", tos, 0, tos},
		{"GRO only", gro, 1350, nil},
		{"GRO between", concat(tos, gro, tos), 1350, concat(tos, tos)},
		{"truncated", concat(tos, gro[:5]), 0, tos},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, rest := splitGRO(bytes.Clone(tc.oob))
			if seg != tc.seg || !bytes.Equal(rest, tc.wantOOB) {
				t.Errorf("splitGRO = %d, %x; want %d, %x", seg, rest, tc.seg, tc.wantOOB)
			}
		})
	}
}

func cmsgTOS(t *testing.T, oob []byte) (byte, bool) {
	t.Helper()
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Fatalf("control messages %x: %v", oob, err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) >= 1 {
			return m.Data[0], true
		}
	}
	return 0, false
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FuzzSplitGRO: control messages are the kernel's, but a parser of them
// must not read past what it was given, whatever the bytes. What it keeps
// is whole control messages with no GRO among them.
func FuzzSplitGRO(f *testing.F) {
	tos := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&tos[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(1))
	gro := make([]byte, unix.CmsgSpace(4))
	h = (*unix.Cmsghdr)(unsafe.Pointer(&gro[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(gro[unix.CmsgLen(0):], 1350)
	for _, seed := range [][]byte{nil, tos, gro, concat(tos, gro, tos), concat(tos, gro[:5]), gro[:unix.SizeofCmsghdr]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, oob []byte) {
		n := len(oob)
		_, rest := splitGRO(bytes.Clone(oob))
		if len(rest) > n {
			t.Fatalf("kept %d bytes of %d", len(rest), n)
		}
		seg, again := splitGRO(bytes.Clone(rest))
		if seg != 0 || !bytes.Equal(again, rest) {
			t.Fatalf("what was kept holds a GRO message or a partial one: %x -> %d, %x", rest, seg, again)
		}
	})
}
