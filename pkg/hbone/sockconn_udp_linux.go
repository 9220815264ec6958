package hbone

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// UDP socket buffer size asked for, each way: what quic-go asks for
// (7 MiB), rounded up. Without CAP_NET_ADMIN the kernel caps it at
// net.core.rmem_max and wmem_max.
const udpBufferSize = 8 << 20

// groBufSize holds the largest datagram, or train of coalesced ones, a
// read can return.
const groBufSize = 64 << 10

// tuneUDP prepares a QUIC socket: large buffers, and reads through
// generic receive offload where the kernel offers it. pc is returned as it
// is unless it is a *net.UDPConn: quic-go's own optimizations (GSO, ECN,
// batched reads) need a *net.UDPConn too, so a socket handed over in any
// other type goes without all of them.
func tuneUDP(pc net.PacketConn, log *slog.Logger) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		log.Debug("hbone: QUIC socket is not a *net.UDPConn: no offloads", "type", fmt.Sprintf("%T", pc))
		return pc
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return pc
	}
	// quic-go asks for 7 MiB itself, and warns through the log package
	// when it gets less; this says so through ours, with the fix.
	rcv, snd, err := setUDPBuffers(rc, udpBufferSize)
	if err != nil {
		log.Warn("hbone: QUIC socket buffers", "err", err)
	} else if rcv < udpBufferSize || snd < udpBufferSize {
		log.Warn("hbone: QUIC socket buffers are smaller than asked: raise net.core.rmem_max and wmem_max, or grant CAP_NET_ADMIN",
			"receive", rcv, "send", snd, "want", udpBufferSize)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil || serr != nil {
		log.Debug("hbone: UDP GRO unavailable", "err", errors.Join(err, serr))
		return pc
	}
	c := &groConn{UDPConn: uc, rc: rc}
	c.readFn = c.recv
	return c
}

// setUDPBuffers sets both socket buffers to size, with SO_RCVBUFFORCE and
// SO_SNDBUFFORCE (which pass net.core.rmem_max and wmem_max, given
// CAP_NET_ADMIN), else SO_RCVBUF and SO_SNDBUF; it returns the sizes the
// kernel reports (twice what it grants: half is its bookkeeping).
func setUDPBuffers(rc syscall.RawConn, size int) (rcv, snd int, err error) {
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		set := func(force, plain int) (int, error) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, size) != nil {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, plain, size); err != nil {
					return 0, err
				}
			}
			got, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, plain)
			return got / 2, err
		}
		var e1, e2 error
		rcv, e1 = set(unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		snd, e2 = set(unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
		serr = errors.Join(e1, e2)
	})
	if err := errors.Join(cerr, serr); err != nil {
		return rcv, snd, fmt.Errorf("hbone: setting UDP socket buffers: %w", err)
	}
	return rcv, snd, nil
}

// groConn is a UDP socket with UDP_GRO on: the kernel hands over a train
// of datagrams of one size from one sender in one read (coalesced on
// receive, or a GSO send from the same host left whole), and ReadBatch,
// which quic-go calls in place of recvmmsg, deals the train out as
// datagrams. quic-go sends with GSO but reads datagram by datagram; on
// loopback and veth this saves the kernel segmenting each send and
// delivering each datagram on its own: a third of QUIC's CPU per byte.
//
// A train needs a 64 KiB buffer. It is taken from a pool once a datagram
// is there and given back once the train is dealt out, so a socket waiting
// for datagrams, as most pods' are, holds none.
type groConn struct {
	*net.UDPConn
	rc     syscall.RawConn
	readFn func(uintptr) bool // c.recv, made once: a method value per read would escape

	mu sync.Mutex // quic-go reads from one goroutine; this is for safety
	bp *[]byte    // the buffer of the train being dealt out; nil between trains
	// What of the last read is left to deal out: the datagrams, their
	// size (the last may be shorter), the control messages each gets (ECN,
	// packet info), and the sender, reused while it does not change.
	rest   []byte
	seg    int
	cmsgs  []byte
	from   *net.UDPAddr
	fromAP netip.AddrPort

	// One recvmsg's arguments and results, kept here so that a read
	// allocates nothing.
	msg   unix.Msghdr
	iov   unix.Iovec
	sa    unix.RawSockaddrInet6 // large enough for either family
	oob   [256]byte
	n     int
	errno syscall.Errno
}

// groBufs holds the buffers of trains being dealt out.
var groBufs = sync.Pool{New: func() any {
	b := make([]byte, groBufSize)
	return &b
}}

// ReadBatch fills ms with datagrams: those left from the last read, else
// those of one new read, which it waits for. It implements quic-go's
// batchConn.
func (c *groConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rest) == 0 {
		if err := c.read(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(ms) && len(c.rest) > 0 {
		m := &ms[n]
		d := c.rest[:min(c.seg, len(c.rest))]
		c.rest = c.rest[len(d):]
		m.N = copy(m.Buffers[0], d)
		m.Flags = 0
		if m.N < len(d) {
			m.Flags = unix.MSG_TRUNC
		}
		m.NN = 0
		if len(c.cmsgs) <= len(m.OOB) {
			m.NN = copy(m.OOB, c.cmsgs)
		}
		m.Addr = c.from
		n++
	}
	if len(c.rest) == 0 {
		c.release()
	}
	return n, nil
}

// release gives the train's buffer back.
func (c *groConn) release() {
	if c.bp != nil {
		groBufs.Put(c.bp)
		c.bp, c.rest = nil, nil
	}
}

// read waits for the next datagram, or train, and makes it c.rest.
func (c *groConn) read() error {
	for {
		err := c.rc.Read(c.readFn)
		if err == nil && c.errno != 0 {
			err = os.NewSyscallError("recvmsg", c.errno)
		}
		if err != nil {
			c.release()
			return rawOpError(err, "read", "udp", c.LocalAddr(), nil)
		}
		if c.n == 0 {
			// An empty datagram is no QUIC packet.
			continue
		}
		seg, cmsgs := splitGRO(c.oob[:c.msg.Controllen])
		if seg <= 0 {
			seg = c.n
		}
		if ap := sockaddrAddrPort(&c.sa); c.from == nil || ap != c.fromAP {
			c.from, c.fromAP = net.UDPAddrFromAddrPort(ap), ap
		}
		c.rest, c.seg, c.cmsgs = (*c.bp)[:c.n], seg, cmsgs
		return nil
	}
}

// recv is called by the raw conn, at first and whenever the socket is
// readable; it reports whether the read is done. It takes a buffer only
// when it has a datagram to put in it.
func (c *groConn) recv(fd uintptr) bool {
	if c.bp == nil {
		c.bp = groBufs.Get().(*[]byte)
	}
	buf := *c.bp
	c.iov.Base = &buf[0]
	c.iov.SetLen(len(buf))
	c.msg = unix.Msghdr{
		Name:    (*byte)(unsafe.Pointer(&c.sa)),
		Namelen: uint32(unsafe.Sizeof(c.sa)),
		Iov:     &c.iov,
		Control: &c.oob[0],
	}
	c.msg.SetIovlen(1)
	c.msg.SetControllen(len(c.oob))
	for {
		// As sockConn's reads: the socket never blocks, so the call need
		// not tell the scheduler.
		n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			groBufs.Put(c.bp)
			c.bp = nil
			return false
		}
		c.n, c.errno = int(n), e
		return true
	}
}

// sockaddrAddrPort is the address in sa, as ReadMsgUDPAddrPort returns
// it: an IPv4 sender on an IPv6 socket stays IPv4-mapped.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	ip := netip.AddrFrom16(sa.Addr)
	if sa.Scope_id != 0 {
		ip = ip.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
	}
	return netip.AddrPortFrom(ip, port)
}

// splitGRO returns the datagram size a UDP_GRO control message gives (0
// if there is none) and the other control messages, moved up in oob.
func splitGRO(oob []byte) (seg int, rest []byte) {
	rest = oob[:0]
	// A header cut short (MSG_CTRUNC) is left out: the parser would read
	// past it.
	for len(oob) >= unix.SizeofCmsghdr {
		h, body, remainder, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		whole := oob[:len(oob)-len(remainder)]
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO {
			if len(body) >= 4 {
				seg = int(int32(binary.NativeEndian.Uint32(body)))
			}
		} else {
			rest = append(rest, whole...)
		}
		oob = remainder
	}
	return seg, rest
}
