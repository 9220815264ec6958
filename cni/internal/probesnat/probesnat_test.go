package probesnat

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
)

var (
	nodeIP  = netip.MustParseAddr("10.9.0.1")
	podIP   = netip.MustParseAddr("10.9.0.2")
	otherGW = netip.MustParseAddr("10.9.1.1")
	otherIP = netip.MustParseAddr("10.9.1.2")
)

type topo struct {
	node, pod, other *inpodtest.NetNS
	app              net.Listener
}

// newTopo builds node <-> pod and node <-> other, with the node routing
// between them, and an app listening in the pod.
func newTopo(t *testing.T) *topo {
	inpodtest.RequireRoot(t)
	tp := &topo{
		node:  inpodtest.NewNetNS(t, "skt-node-"),
		pod:   inpodtest.NewNetNS(t, "skt-pod-"),
		other: inpodtest.NewNetNS(t, "skt-oth-"),
	}
	inpodtest.Veth(t, tp.pod, "eth0", netip.PrefixFrom(podIP, 24), tp.node, "vpod", netip.PrefixFrom(nodeIP, 24))
	inpodtest.Veth(t, tp.other, "eth0", netip.PrefixFrom(otherIP, 24), tp.node, "voth", netip.PrefixFrom(otherGW, 24))
	inpodtest.DefaultRoute(t, tp.pod, nodeIP)
	inpodtest.DefaultRoute(t, tp.other, otherGW)
	if err := tp.node.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	app, err := inpodtest.Listen(tp.pod.File, "0.0.0.0:8080", inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	tp.app = app
	return tp
}

// sourceSeen connects from ns to the pod's app and returns the source
// address the app saw.
func (tp *topo) sourceSeen(t *testing.T, from *inpodtest.NetNS) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := inpodtest.Dial(ctx, from.File, netip.AddrPortFrom(podIP, 8080).String(), netip.AddrPort{}, inpodtest.SocketOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := inpodtest.Accept(tp.app, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	return got.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
}

func TestProbeSNAT(t *testing.T) {
	tp := newTopo(t)
	probe := netip.MustParseAddr(inpod.ProbeSNATAddress)
	s, err := New(Config{NetNS: tp.node.File})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(nil); err != nil {
		t.Fatal(err)
	}
	if got := tp.sourceSeen(t, tp.node); got != nodeIP {
		t.Fatalf("pod not enrolled: app saw %v, want the node's %v", got, nodeIP)
	}
	if err := s.Add(podIP); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(podIP); err != nil { // adding twice is fine
		t.Fatal(err)
	}
	if got := tp.sourceSeen(t, tp.node); got != probe {
		t.Fatalf("enrolled pod: app saw %v, want the probe address", got)
	}
	if got := tp.sourceSeen(t, tp.other); got != otherIP {
		t.Fatalf("forwarded traffic was SNATed: app saw %v, want %v", got, otherIP)
	}
	if m, err := s.Members(); err != nil || !slices.Equal(m, []netip.Addr{podIP}) {
		t.Fatalf("Members = %v, %v", m, err)
	}
	if err := s.Remove(podIP, netip.MustParseAddr("10.9.0.99")); err != nil {
		t.Fatal(err)
	}
	if got := tp.sourceSeen(t, tp.node); got != nodeIP {
		t.Fatalf("after removal: app saw %v", got)
	}
	// Reset keeps exactly what it is given.
	if err := s.Reset([]netip.Addr{podIP, netip.MustParseAddr("fd00::2")}); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Members(); len(m) != 2 {
		t.Fatalf("after Reset: %v", m)
	}
	if err := s.Teardown(); err != nil {
		t.Fatal(err)
	}
	if err := s.Teardown(); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

func TestProbeSNATKubeletUID(t *testing.T) {
	tp := newTopo(t)
	for _, tc := range []struct {
		uid  uint32
		want netip.Addr
	}{
		{uint32(os.Geteuid()), netip.MustParseAddr(inpod.ProbeSNATAddress)},
		{54321, nodeIP},
	} {
		uid := tc.uid
		s, err := New(Config{NetNS: tp.node.File, KubeletUID: &uid})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Reset([]netip.Addr{podIP}); err != nil {
			t.Fatal(err)
		}
		if got := tp.sourceSeen(t, tp.node); got != tc.want {
			t.Fatalf("kubelet uid %d: app saw %v, want %v", uid, got, tc.want)
		}
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := New(Config{ProbeAddr: netip.MustParseAddr("::1")}); err == nil {
		t.Fatal("accepted an IPv6 probe address for IPv4")
	}
}
