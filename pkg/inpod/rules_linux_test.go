package inpod_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

// Generous bound for a connection that is expected to arrive; tests never
// depend on it being short.
const arrive = 10 * time.Second

var (
	podIP  = netip.MustParseAddr("192.168.77.2")
	peerIP = netip.MustParseAddr("192.168.77.1")
)

// topology is a pod namespace joined by a veth to a peer namespace that
// stands for the rest of the network (and the node, for probes).
type topology struct {
	pod, peer *inpodtest.NetNS
}

func newTopology(t *testing.T) topology {
	t.Helper()
	inpodtest.RequireRoot(t)
	pod := inpodtest.NewNetNS(t, "skt-pod-")
	peer := inpodtest.NewNetNS(t, "skt-peer-")
	inpodtest.Veth(t, pod, "eth0", netip.PrefixFrom(podIP, 24), peer, "veth0", netip.PrefixFrom(peerIP, 24))
	inpodtest.AddAddr(t, peer, "veth0", netip.MustParsePrefix(inpod.ProbeSNATAddress+"/32"))
	inpodtest.DefaultRoute(t, pod, peerIP)
	return topology{pod: pod, peer: peer}
}

func TestInstallInspectRemove(t *testing.T) {
	top := newTopology(t)
	var r inpod.Rules

	st, err := r.Inspect(top.pod.File)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Absent() || st.Complete() {
		t.Fatalf("fresh namespace: state %v, want absent", st)
	}

	for i := range 2 { // the second install must be a no-op
		if err := r.Install(top.pod.File); err != nil {
			t.Fatalf("install #%d: %v", i+1, err)
		}
		st, err = r.Inspect(top.pod.File)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Complete() {
			t.Fatalf("after install #%d: state %v, want complete", i+1, st)
		}
	}
	var migrate []byte
	if err := inpod.Do(top.pod.File, func() (err error) {
		migrate, err = os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
		return err
	}); err != nil || strings.TrimSpace(string(migrate)) != "1" {
		t.Errorf("net.ipv4.tcp_migrate_req in the pod = %q, %v; want 1", migrate, err)
	}

	// Rules written for another probe address are stale.
	other := inpod.Rules{ProbeAddr: netip.MustParseAddr("169.254.7.1")}
	st, err = other.Inspect(top.pod.File)
	if err != nil {
		t.Fatal(err)
	}
	if st.Complete() || !slices.Contains(st.Missing, "prerouting/probe") {
		t.Fatalf("inspect with another probe address: %v, want probe rule missing", st)
	}

	// A rule deleted behind the agent's back makes the state partial.
	conn, err := nftables.New(nftables.WithNetNSFd(int(top.pod.File.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: inpod.TableName, Family: nftables.TableFamilyINet}
	rules, err := conn.GetRules(table, &nftables.Chain{Name: inpod.ChainOutputNAT, Table: table})
	if err != nil || len(rules) == 0 {
		t.Fatalf("listing rules: %v (%d rules)", err, len(rules))
	}
	if err := conn.DelRule(rules[len(rules)-1]); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	st, err = r.Inspect(top.pod.File)
	if err != nil {
		t.Fatal(err)
	}
	if st.Complete() || st.Absent() || !slices.Equal(st.Missing, []string{"output-nat/outbound-redirect"}) {
		t.Fatalf("after deleting a rule: %v, want outbound-redirect missing", st)
	}
	if err := r.Install(top.pod.File); err != nil {
		t.Fatal(err)
	}
	if st, _ = r.Inspect(top.pod.File); !st.Complete() {
		t.Fatalf("reinstall did not repair: %v", st)
	}

	for i := range 2 { // removing twice is fine
		if err := r.Remove(top.pod.File); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
		if st, err = r.Inspect(top.pod.File); err != nil || !st.Absent() {
			t.Fatalf("after remove #%d: %v %v, want absent", i+1, st, err)
		}
	}
}

func TestInstallIPv6(t *testing.T) {
	top := newTopology(t)
	r := inpod.Rules{IPv6: true}
	if err := r.Install(top.pod.File); err != nil {
		t.Fatal(err)
	}
	st, err := r.Inspect(top.pod.File)
	if err != nil || !st.Complete() {
		t.Fatalf("state %v %v, want complete", st, err)
	}
	if err := r.Remove(top.pod.File); err != nil {
		t.Fatal(err)
	}
	if st, _ = r.Inspect(top.pod.File); !st.Absent() {
		t.Fatalf("after remove: %v", st)
	}
}

func TestBadProbeAddress(t *testing.T) {
	for _, r := range []inpod.Rules{
		{ProbeAddr: netip.MustParseAddr("fe80::1")},
		{ProbeAddr6: netip.MustParseAddr("10.0.0.1")},
	} {
		if err := r.Install(nil); err == nil {
			t.Errorf("Install(%+v) accepted a wrong-family address", r)
		}
	}
}

// lands dials addr from ns and reports which of the listeners accepted it.
type landing struct {
	name string
	ln   net.Listener
}

func dialAndLand(t *testing.T, dial func() (net.Conn, error), want string, listeners ...landing) net.Conn {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	// Only the expected listener may see it: the others are checked after
	// the expected one accepted, with the connection established.
	for _, l := range listeners {
		if l.name != want {
			continue
		}
		got, err := inpodtest.Accept(l.ln, arrive)
		if err != nil {
			t.Fatalf("connection did not land on %s: %v", want, err)
		}
		t.Cleanup(func() { got.Close() })
		// Prove it is this connection: bytes flow both ways.
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(got, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read on %s: %q %v", want, buf, err)
		}
		return got
	}
	t.Fatalf("no listener named %s", want)
	return nil
}

func TestRedirection(t *testing.T) {
	top := newTopology(t)
	if err := (inpod.Rules{}).Install(top.pod.File); err != nil {
		t.Fatal(err)
	}
	zt, err := inpodtest.ListenZtunnel(top.pod.File)
	if err != nil {
		t.Fatal(err)
	}
	defer zt.Close()
	app, err := inpodtest.Listen(top.pod.File, "0.0.0.0:8080", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	remote, err := inpodtest.Listen(top.peer.File, "0.0.0.0:9090", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	all := []landing{{"outbound", zt.Outbound}, {"inbound", zt.Inbound}, {"hbone", zt.HBONE}, {"app", app}, {"remote", remote}}
	// Bounds a broken setup's hang; never reached when the rules work.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dialFrom := func(ns *inpodtest.NetNS, addr string, local netip.AddrPort, opts inpodtest.SocketOpts) func() (net.Conn, error) {
		return func() (net.Conn, error) { return inpodtest.Dial(ctx, ns.File, addr, local, opts) }
	}
	hp := func(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }

	t.Run("outbound lands on 15001 with its original destination", func(t *testing.T) {
		got := dialAndLand(t, dialFrom(top.pod, hp(peerIP, 9090), netip.AddrPort{}, inpodtest.SocketOpts{}), "outbound", all...)
		dst, err := inpodtest.OriginalDst(got)
		if err != nil {
			t.Fatal(err)
		}
		if dst != netip.AddrPortFrom(peerIP, 9090) {
			t.Fatalf("original destination %v, want %v:9090", dst, peerIP)
		}
	})
	t.Run("ztunnel's own outbound connection is not redirected", func(t *testing.T) {
		dialAndLand(t, dialFrom(top.pod, hp(peerIP, 9090), netip.AddrPort{}, inpodtest.SocketOpts{Mark: inpod.SocketMark}), "remote", all...)
	})
	t.Run("localhost is not redirected", func(t *testing.T) {
		dialAndLand(t, dialFrom(top.pod, "127.0.0.1:8080", netip.AddrPort{}, inpodtest.SocketOpts{}), "app", all...)
	})
	t.Run("inbound lands on 15006 with the original destination as local address", func(t *testing.T) {
		got := dialAndLand(t, dialFrom(top.peer, hp(podIP, 8080), netip.AddrPort{}, inpodtest.SocketOpts{}), "inbound", all...)
		if la := addrPort(got.LocalAddr()); la != netip.AddrPortFrom(podIP, 8080) {
			t.Fatalf("accepted local address %v, want %v:8080", la, podIP)
		}
		if ra := addrPort(got.RemoteAddr()).Addr(); ra != peerIP {
			t.Fatalf("accepted remote address %v, want %v", ra, peerIP)
		}
	})
	t.Run("inbound HBONE lands on 15008", func(t *testing.T) {
		dialAndLand(t, dialFrom(top.peer, hp(podIP, inpod.InboundHBONEPort), netip.AddrPort{}, inpodtest.SocketOpts{}), "hbone", all...)
	})
	t.Run("a probe from the SNAT address reaches the app", func(t *testing.T) {
		probe := netip.AddrPortFrom(netip.MustParseAddr(inpod.ProbeSNATAddress), 0)
		got := dialAndLand(t, dialFrom(top.peer, hp(podIP, 8080), probe, inpodtest.SocketOpts{}), "app", all...)
		if ra := addrPort(got.RemoteAddr()).Addr().String(); ra != inpod.ProbeSNATAddress {
			t.Fatalf("app saw %s, want the probe address", ra)
		}
	})
	t.Run("ztunnel reaches the app from the original source and gets replies", func(t *testing.T) {
		// As ztunnel delivers inbound traffic: a transparent, marked socket
		// bound to the caller's (non-local) address.
		src := netip.AddrPortFrom(peerIP, 40000)
		got := dialAndLand(t, dialFrom(top.pod, hp(podIP, 8080), src, inpodtest.SocketOpts{Mark: inpod.SocketMark, Transparent: true}), "app", all...)
		if ra := addrPort(got.RemoteAddr()); ra != src {
			t.Fatalf("app saw %v, want the original source %v", ra, src)
		}
	})
}

// TestInboundQUIC: UDP to the HBONE port reaches ztunnel's marked socket
// only; a socket without the mark, an application's that took the port
// while ztunnel was gone, gets nothing (fail closed). Other UDP is left
// alone, which is how a drop is told from a datagram still on its way:
// a datagram sent after it on the same path to another port arrives.
func TestInboundQUIC(t *testing.T) {
	top := newTopology(t)
	if err := (inpod.Rules{}).Install(top.pod.File); err != nil {
		t.Fatal(err)
	}
	control, err := inpodtest.ListenPacket(top.pod.File, "0.0.0.0:8081", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer control.Close()
	sender, err := inpodtest.ListenPacket(top.peer.File, "0.0.0.0:0", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	hbone := net.UDPAddrFromAddrPort(netip.AddrPortFrom(podIP, inpod.InboundHBONEPort))
	controlAddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(podIP, 8081))
	// receive waits up to arrive for a datagram that must come.
	receive := func(c *net.UDPConn) (string, bool) {
		c.SetReadDeadline(time.Now().Add(arrive))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return string(buf[:n]), err == nil
	}
	// pending reads a datagram already queued, without waiting.
	pending := func(c *net.UDPConn) (string, bool) {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, rerr := 0, error(nil)
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if rerr != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
	send := func(to *net.UDPAddr, msg string) {
		t.Helper()
		if _, err := sender.WriteToUDP([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		mark      uint32
		delivered bool
	}{
		{"ztunnel's socket gets QUIC", inpod.SocketMark, true},
		{"an unmarked socket on the port gets nothing", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, err := inpodtest.ListenPacket(top.pod.File, hbone.String(), inpodtest.SocketOpts{Mark: tc.mark})
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			send(hbone, "quic")
			send(controlAddr, "after")
			if got, ok := receive(control); !ok || got != "after" {
				t.Fatalf("control datagram: %q %v", got, ok)
			}
			read := pending
			if tc.delivered {
				read = receive
			}
			got, ok := read(sock)
			if ok != tc.delivered || ok && got != "quic" {
				t.Fatalf("socket with mark %#x got %q (%v), want delivered=%v", tc.mark, got, ok, tc.delivered)
			}
		})
	}
}

// With the rules in place but no ztunnel listening, inbound TCP must not
// reach the app (fail closed).
func TestInboundFailsClosedWithoutZtunnel(t *testing.T) {
	top := newTopology(t)
	if err := (inpod.Rules{}).Install(top.pod.File); err != nil {
		t.Fatal(err)
	}
	app, err := inpodtest.Listen(top.pod.File, "0.0.0.0:8080", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, port := range []int{8080, inpod.InboundHBONEPort} {
		c, err := inpodtest.Dial(ctx, top.peer.File, fmt.Sprintf("%s:%d", podIP, port), netip.AddrPort{}, inpodtest.SocketOpts{})
		if err == nil {
			c.Close()
			t.Fatalf("connected to port %d with no ztunnel listening", port)
		}
	}

	// Without the rules, the app is reachable directly.
	if err := (inpod.Rules{}).Remove(top.pod.File); err != nil {
		t.Fatal(err)
	}
	dialAndLand(t, func() (net.Conn, error) {
		return inpodtest.Dial(context.Background(), top.peer.File, fmt.Sprintf("%s:8080", podIP), netip.AddrPort{}, inpodtest.SocketOpts{})
	}, "app", landing{"app", app})
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
