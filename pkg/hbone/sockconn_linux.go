package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// sockConn is a TCP connection whose Read and Write make their system
// calls without telling the Go scheduler (syscall.RawSyscall), waiting for
// readiness through the runtime's poller as net.TCPConn does.
//
// Why: the socket is non-blocking, so read and write never block, but on
// a veth a write runs the receiver's TCP stack inline and takes tens of
// microseconds. Announced the usual way (entersyscall), every such call of
// a process that was idle wakes the runtime's monitor thread, and a long
// one makes it hand the P to another thread: at 1,000 small requests per
// second that thread traffic cost ztunnel more CPU than the copying. The
// P is held for the duration of the call instead, which is what a
// single-threaded event loop does too.
//
// It deliberately has no ReadFrom or WriteTo: those of *net.TCPConn would
// bypass it.
type sockConn struct {
	tc *net.TCPConn
	rc syscall.RawConn
}

func (c *sockConn) Close() error                       { return c.tc.Close() }
func (c *sockConn) CloseWrite() error                  { return c.tc.CloseWrite() }
func (c *sockConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *sockConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *sockConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *sockConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *sockConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// fastConn returns c with sockConn's data path when c is a *net.TCPConn
// (or already one), c itself otherwise.
func fastConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &sockConn{tc: tc, rc: rc}
}

// maxRW bounds one system call, as internal/poll does.
const maxRW = 1 << 30

func (c *sockConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *sockConn) Write(p []byte) (int, error) {
	var (
		nn    int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for nn < len(p) {
			chunk := p[nn:]
			if len(chunk) > maxRW {
				chunk = chunk[:maxRW]
			}
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)))
			switch e {
			case 0:
				nn += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return nn, c.opError("write", err)
	case errno != 0:
		return nn, c.opError("write", os.NewSyscallError("write", errno))
	}
	return nn, nil
}

// opError shapes err like net.TCPConn's errors (the raw conn reports
// closing and deadlines as "raw-read"/"raw-write").
func (c *sockConn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.tc.LocalAddr(), Addr: c.tc.RemoteAddr(), Err: err}
}

// tryWrite writes as much of p as the socket takes now, without waiting:
// a short count with a nil error means the socket buffer is full.
func (c *sockConn) tryWrite(p []byte) (int, error) {
	var (
		nn    int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for nn < len(p) {
			chunk := p[nn:]
			if len(chunk) > maxRW {
				chunk = chunk[:maxRW]
			}
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)))
			switch e {
			case 0:
				nn += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return true
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return nn, c.opError("write", err)
	case errno != 0:
		return nn, c.opError("write", os.NewSyscallError("write", errno))
	}
	return nn, nil
}

// readPooled waits for data holding no buffer, then reads into one taken
// from pool. The caller returns the buffer (also on error, when not nil).
// An idle connection thus holds no read buffer.
func (c *sockConn) readPooled(pool *sync.Pool) (*[]byte, int, error) {
	var (
		bp    *[]byte
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		if bp == nil {
			bp = pool.Get().(*[]byte)
		}
		p := *bp
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				pool.Put(bp)
				bp = nil
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil:
		return bp, 0, c.opError("read", err)
	case errno != 0:
		return bp, 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return bp, 0, io.EOF
	}
	return bp, n, nil
}
