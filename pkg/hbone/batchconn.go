package hbone

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// batchConn sits between a tls.Conn and its socket. While an HTTP/2
// writer holds it, the TLS records written are gathered and leave in as
// few socket writes as its buffer allows: a 256 KB DATA frame is 16
// records, one system call instead of 16, and larger segments through
// the TCP stack. Outside a hold (handshake, alerts, key updates sent while
// reading) writes go straight through. The buffer is pooled and held only
// during a hold.
//
// Every write of the connection passes here, so it also enforces the
// write byte timeout (setWriteByteTimeout).
type batchConn struct {
	net.Conn

	// timeout, if positive, fails a socket write to which the peer takes
	// no byte for that long. Set before the first write it applies to.
	timeout time.Duration
	// limit is the write deadline set from above through
	// SetWriteDeadline, in Unix nanoseconds (0: none): renewals never
	// pass it. stale asks the next socket write to set the deadline
	// afresh, after such a change.
	limit atomic.Int64
	stale atomic.Bool

	mu   sync.Mutex
	held bool
	bp   *[]byte
	n    int
	err  error // first write error; every later write fails with it
	// dl is the socket's write deadline as a renewal last set it.
	dl time.Time
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

// setWriteByteTimeout arms the write byte timeout d (none if d <= 0).
// It must be called before the writes it is to bound start, and before
// any other goroutine uses b.
func (b *batchConn) setWriteByteTimeout(d time.Duration) { b.timeout = max(d, 0) }

// hold starts gathering writes; release ends it.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.held = true
	b.mu.Unlock()
}

// release sends what was gathered and returns the buffer.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held = false
	err := b.flushLocked()
	if b.bp != nil {
		largeCopyBufs.Put(b.bp)
		b.bp = nil
	}
	return err
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.held {
		return b.writeSocketLocked(p)
	}
	if b.bp == nil {
		b.bp = largeCopyBufs.Get().(*[]byte)
	}
	buf := *b.bp
	if b.n+len(p) > len(buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > len(buf) {
			return b.writeSocketLocked(p)
		}
	}
	b.n += copy(buf[b.n:], p)
	return len(p), nil
}

func (b *batchConn) flushLocked() error {
	if b.n == 0 {
		return b.err
	}
	_, err := b.writeSocketLocked((*b.bp)[:b.n])
	b.n = 0
	return err
}

// writeSocketLocked writes p to the socket; the first error sticks.
//
// With a write byte timeout the socket's write deadline is kept at least
// timeout ahead of the start of every write, and pushed on whenever a
// write that ran into it had made progress: only a peer that takes no
// byte for a whole timeout fails the write (within twice the timeout of
// the last byte it took, as x/net/http2's WriteByteTimeout). Moving a
// deadline updates a runtime timer, so it is not moved on every write:
// it is set timeout plus a quarter ahead, and moved once less than
// timeout is left.
func (b *batchConn) writeSocketLocked(p []byte) (int, error) {
	if b.timeout <= 0 {
		n, err := b.Conn.Write(p)
		if err != nil {
			b.err = err
		}
		return n, err
	}
	n := 0
	for {
		if err := b.renewDeadlineLocked(); err != nil {
			b.err = err
			return n, err
		}
		m, err := b.Conn.Write(p[n:])
		n += m
		if err == nil {
			return n, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !b.limitPassed() {
			if m > 0 {
				// Slow, not stalled: the peer took some of it.
				b.stale.Store(true)
				continue
			}
			err = fmt.Errorf("%w (nothing written for %v): %w", ErrWriteByteTimeout, b.timeout, err)
		}
		b.err = err
		return n, err
	}
}

// renewDeadlineLocked moves the socket's write deadline on if less than
// timeout is left, or if it was changed from above.
func (b *batchConn) renewDeadlineLocked() error {
	now := time.Now()
	if !b.stale.Load() && !b.dl.Before(now.Add(b.timeout)) {
		return nil
	}
	for {
		b.stale.Store(false)
		dl := now.Add(b.timeout + b.timeout/4)
		if lim := b.limit.Load(); lim != 0 && lim < dl.UnixNano() {
			dl = time.Unix(0, lim)
		}
		if err := b.Conn.SetWriteDeadline(dl); err != nil {
			return err
		}
		b.dl = dl
		// A SetWriteDeadline meanwhile may have been overwritten.
		if !b.stale.Load() {
			return nil
		}
	}
}

// limitPassed reports whether the deadline set from above has passed.
func (b *batchConn) limitPassed() bool {
	lim := b.limit.Load()
	return lim != 0 && time.Now().UnixNano() >= lim
}

// SetWriteDeadline sets a deadline for writes, as net.Conn's does; with a
// write byte timeout, that still applies before it. It does not wait for
// a write in progress, which it may cut short.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	if b.timeout <= 0 {
		return b.Conn.SetWriteDeadline(t)
	}
	var lim int64
	if !t.IsZero() {
		lim = max(t.UnixNano(), 1)
	}
	b.limit.Store(lim)
	// Before the socket's deadline changes: a renewal racing with this
	// call then sees lim, or is overwritten below.
	b.stale.Store(true)
	if p := time.Now().Add(b.timeout); t.IsZero() || p.Before(t) {
		t = p
	}
	return b.Conn.SetWriteDeadline(t)
}

// SetDeadline sets the read and write deadlines.
func (b *batchConn) SetDeadline(t time.Time) error {
	if err := b.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return b.SetWriteDeadline(t)
}
