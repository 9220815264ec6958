// Package socket creates ztunnel's sockets: inside a pod's network namespace
// (entered on a locked OS thread), with the socket mark that the pod's
// redirect rules skip, SO_REUSEPORT so a replacement ztunnel can bind the
// same ports, and IP_TRANSPARENT to accept redirected traffic and to connect
// to the application from the client's own address.
package socket

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiffmesh/skiff/pkg/inpod"
)

// Namespace is a network namespace ztunnel creates sockets in. A nil
// *Namespace means ztunnel's own.
type Namespace struct {
	fd  *os.File
	ino uint64
}

// Pod returns the namespace behind fd (a pod's, received from the node
// agent). It takes ownership of fd; Close releases it.
func Pod(fd *os.File) (*Namespace, error) {
	ino, err := inode(fd)
	if err != nil {
		return nil, err
	}
	return &Namespace{fd: fd, ino: ino}, nil
}

func inode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat netns: %w", err)
	}
	return st.Ino, nil
}

// Inode identifies the namespace: two descriptors of one namespace have the
// same inode.
func (n *Namespace) Inode() uint64 {
	if n == nil {
		return 0
	}
	return n.ino
}

// Close releases the namespace's descriptor.
func (n *Namespace) Close() error {
	if n == nil {
		return nil
	}
	return n.fd.Close()
}

// Do runs fn inside the namespace (see inpod.Do); sockets fn creates stay
// in that namespace for their whole life.
func (n *Namespace) Do(fn func() error) error {
	if n == nil {
		return fn()
	}
	return inpod.Do(n.fd, fn)
}

// Options are socket options.
type Options struct {
	// Mark is set with SO_MARK when non-zero.
	Mark uint32
	// ReusePort sets SO_REUSEPORT.
	ReusePort bool
	// Transparent sets IP_TRANSPARENT (and IPV6_TRANSPARENT): a listener
	// accepts connections redirected by TPROXY; a dialer may bind a
	// source address that is not local.
	Transparent bool
}

func (o Options) control(network, _ string, rc syscall.RawConn) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		s := int(fd)
		if o.Mark != 0 {
			if err = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, int(o.Mark)); err != nil {
				err = fmt.Errorf("SO_MARK: %w", err)
				return
			}
		}
		if o.ReusePort {
			if err = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				err = fmt.Errorf("SO_REUSEPORT: %w", err)
				return
			}
		}
		if o.Transparent {
			if network == "tcp6" || network == "udp6" {
				err = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
			} else {
				err = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}
			if err != nil {
				err = fmt.Errorf("IP_TRANSPARENT: %w", err)
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// Listen opens a TCP listener on addr inside the namespace.
func (n *Namespace) Listen(ctx context.Context, addr string, o Options) (*net.TCPListener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		lc := net.ListenConfig{Control: o.control}
		ln, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln.(*net.TCPListener), nil
}

// ListenPacket opens a UDP socket on addr inside the namespace.
func (n *Namespace) ListenPacket(ctx context.Context, addr string, o Options) (*net.UDPConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		lc := net.ListenConfig{Control: o.control}
		pc, err = lc.ListenPacket(ctx, "udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listening on udp %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// Dial connects to dst from inside the namespace. A valid src binds that
// source address (with Options.Transparent when it is not local).
func (n *Namespace) Dial(ctx context.Context, dst netip.AddrPort, src netip.Addr, o Options) (*net.TCPConn, error) {
	d := net.Dialer{Control: o.control}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// DialContext adapts Dial to the signature of net.Dialer.DialContext, for
// HBONE clients.
func (n *Namespace) DialContext(o Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return n.Dial(ctx, ap, netip.Addr{}, o)
	}
}

// OriginalDst returns where a connection redirected by NAT (REDIRECT) was
// headed, from conntrack (SO_ORIGINAL_DST).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	var out netip.AddrPort
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		if local.Addr().Is4() || local.Addr().Is4In6() {
			var sa unix.RawSockaddrInet4
			size := uint32(unsafe.Sizeof(sa))
			serr = getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size)
			port := uint16(sa.Port>>8) | uint16(sa.Port<<8)
			out = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
			return
		}
		var sa unix.RawSockaddrInet6
		size := uint32(unsafe.Sizeof(sa))
		serr = getsockopt(fd, unix.SOL_IPV6, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size)
		port := uint16(sa.Port>>8) | uint16(sa.Port<<8)
		out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	})
	if cerr != nil {
		return netip.AddrPort{}, cerr
	}
	if serr != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", serr)
	}
	return out, nil
}

func getsockopt(fd uintptr, level, name int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(name), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// AddrPort converts a net.Addr from a TCP or UDP socket.
func AddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return netip.AddrPortFrom(unmap(a.IP), uint16(a.Port))
	case *net.UDPAddr:
		return netip.AddrPortFrom(unmap(a.IP), uint16(a.Port))
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func unmap(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
