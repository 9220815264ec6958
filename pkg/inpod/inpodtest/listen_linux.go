package inpodtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// SocketOpts are options applied to a socket before bind/connect.
type SocketOpts struct {
	// Mark sets SO_MARK (for example inpod.SocketMark, as ztunnel does).
	Mark uint32
	// Transparent sets IP_TRANSPARENT, needed to accept tproxied
	// connections and to bind to a non-local (original source) address.
	Transparent bool
}

func (o SocketOpts) control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if o.Mark != 0 {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); serr != nil {
				return
			}
		}
		if o.Transparent {
			level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
			if network == "tcp6" || network == "udp6" {
				level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
			}
			serr = unix.SetsockoptInt(int(fd), level, opt, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Listen opens a TCP listener on addr inside ns.
func Listen(ns *os.File, addr string, opts SocketOpts) (net.Listener, error) {
	var ln net.Listener
	err := inpod.Do(ns, func() error {
		var err error
		lc := net.ListenConfig{Control: opts.control}
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a UDP socket on addr inside ns.
func ListenPacket(ns *os.File, addr string, opts SocketOpts) (*net.UDPConn, error) {
	var pc net.PacketConn
	err := inpod.Do(ns, func() error {
		var err error
		lc := net.ListenConfig{Control: opts.control}
		pc, err = lc.ListenPacket(context.Background(), "udp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// Dial connects to addr from inside ns, optionally from local (which may be
// a non-local address when opts.Transparent is set).
func Dial(ctx context.Context, ns *os.File, addr string, local netip.AddrPort, opts SocketOpts) (net.Conn, error) {
	var conn net.Conn
	err := inpod.Do(ns, func() error {
		d := net.Dialer{Control: opts.control}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(local)
		}
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// ZtunnelListeners are the three listeners ztunnel opens in a pod.
type ZtunnelListeners struct {
	Outbound, Inbound, HBONE net.Listener
}

// ListenZtunnel opens ztunnel's in-pod listeners in ns the way ztunnel
// does: on all addresses, with SocketMark, the inbound ones transparent.
func ListenZtunnel(ns *os.File) (*ZtunnelListeners, error) {
	var l ZtunnelListeners
	var err error
	if l.Outbound, err = Listen(ns, fmt.Sprintf("0.0.0.0:%d", inpod.OutboundPort), SocketOpts{Mark: inpod.SocketMark}); err != nil {
		return nil, err
	}
	if l.Inbound, err = Listen(ns, fmt.Sprintf("0.0.0.0:%d", inpod.InboundPlaintextPort), SocketOpts{Mark: inpod.SocketMark, Transparent: true}); err != nil {
		l.Close()
		return nil, err
	}
	if l.HBONE, err = Listen(ns, fmt.Sprintf("0.0.0.0:%d", inpod.InboundHBONEPort), SocketOpts{Mark: inpod.SocketMark, Transparent: true}); err != nil {
		l.Close()
		return nil, err
	}
	return &l, nil
}

// Close closes all listeners.
func (l *ZtunnelListeners) Close() {
	for _, ln := range []net.Listener{l.Outbound, l.Inbound, l.HBONE} {
		if ln != nil {
			ln.Close()
		}
	}
}

// OriginalDst returns the destination a redirected (REDIRECT/DNAT)
// IPv4 connection was addressed to, from SO_ORIGINAL_DST.
func OriginalDst(conn net.Conn) (netip.AddrPort, error) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("not a TCP connection: %T", conn)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST returns a struct sockaddr_in.
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		b := mreq.Multiaddr
		port := binary.BigEndian.Uint16(b[2:4])
		out = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), port)
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return out, serr
}

// Accept accepts one connection from ln, giving up after timeout. It is
// for tests that expect a connection to land on a given listener.
func Accept(ln net.Listener, timeout time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	if tl, ok := ln.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(timeout))
		defer tl.SetDeadline(time.Time{})
		return tl.Accept()
	}
	ch := make(chan result, 1)
	go func() { c, err := ln.Accept(); ch <- result{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(timeout):
		return nil, fmt.Errorf("no connection within %v", timeout)
	}
}
