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

	// The functions handed to the raw conn are made once, with their
	// state here: a closure made per call would escape, one allocation a
	// read or write.
	rmu    sync.Mutex
	rd     rawRead
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wr      rawWrite
	writeFn func(uintptr) bool
}

// rawRead is one read's arguments and results.
type rawRead struct {
	p     []byte     // read into p, or
	pool  *sync.Pool // into a buffer taken from pool once data is there
	bp    *[]byte
	n     int
	errno syscall.Errno
}

// rawWrite is one write's arguments and results.
type rawWrite struct {
	p     []byte
	try   bool // return at EAGAIN instead of waiting
	n     int
	errno syscall.Errno
}

func (c *sockConn) Close() error                       { return c.tc.Close() }
func (c *sockConn) CloseWrite() error                  { return c.tc.CloseWrite() }
func (c *sockConn) LocalAddr() net.Addr                { return c.tc.LocalAddr() }
func (c *sockConn) RemoteAddr() net.Addr               { return c.tc.RemoteAddr() }
func (c *sockConn) SetDeadline(t time.Time) error      { return c.tc.SetDeadline(t) }
func (c *sockConn) SetReadDeadline(t time.Time) error  { return c.tc.SetReadDeadline(t) }
func (c *sockConn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// fastConn returns c with sockConn's data path when c is a *net.TCPConn,
// c itself otherwise.
func fastConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &sockConn{tc: tc, rc: rc}
	sc.readFn = sc.readStep
	sc.writeFn = sc.writeStep
	return sc
}

// maxRW bounds one system call, as internal/poll does.
const maxRW = 1 << 30

// readStep is called by the raw conn, at first and whenever the socket
// is readable; it reports whether the read is done.
func (c *sockConn) readStep(fd uintptr) bool {
	r := &c.rd
	if r.pool != nil && r.bp == nil {
		r.bp = r.pool.Get().(*[]byte)
		r.p = *r.bp
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if r.pool != nil {
				r.pool.Put(r.bp)
				r.bp, r.p = nil, nil
			}
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// read runs c.rd; the caller holds rmu.
func (c *sockConn) read() (int, error) {
	err := c.rc.Read(c.readFn)
	n, errno := c.rd.n, c.rd.errno
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

func (c *sockConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rd = rawRead{p: p}
	n, err := c.read()
	c.rd = rawRead{}
	return n, err
}

// readPooled waits for data holding no buffer, then reads into one taken
// from pool. The caller returns the buffer (also on error, when not nil).
// An idle connection thus holds no read buffer.
func (c *sockConn) readPooled(pool *sync.Pool) (*[]byte, int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rd = rawRead{pool: pool}
	n, err := c.read()
	bp := c.rd.bp
	c.rd = rawRead{}
	return bp, n, err
}

// writeStep is called by the raw conn, at first and whenever the socket
// is writable; it reports whether the write is done.
func (c *sockConn) writeStep(fd uintptr) bool {
	w := &c.wr
	for w.n < len(w.p) {
		chunk := w.p[w.n:]
		if len(chunk) > maxRW {
			chunk = chunk[:maxRW]
		}
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)))
		switch e {
		case 0:
			w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return w.try
		default:
			w.errno = e
			return true
		}
	}
	return true
}

func (c *sockConn) write(p []byte, try bool) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr = rawWrite{p: p, try: try}
	err := c.rc.Write(c.writeFn)
	n, errno := c.wr.n, c.wr.errno
	c.wr = rawWrite{}
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (c *sockConn) Write(p []byte) (int, error) { return c.write(p, false) }

// tryWrite writes as much of p as the socket takes now, without waiting:
// a short count with a nil error means the socket buffer is full.
func (c *sockConn) tryWrite(p []byte) (int, error) { return c.write(p, true) }

// opError shapes err like net.TCPConn's errors.
func (c *sockConn) opError(op string, err error) error {
	return rawOpError(err, op, "tcp", c.tc.LocalAddr(), c.tc.RemoteAddr())
}

// rawOpError shapes an error of a raw conn's Read or Write, or of the
// system call made through it, like the net package's own conns': the
// raw conn reports closing and deadlines as "raw-read"/"raw-write".
func rawOpError(err error, op, network string, local, remote net.Addr) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: network, Source: local, Addr: remote, Err: err}
}
