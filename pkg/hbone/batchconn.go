package hbone

import (
	"net"
	"sync"
)

// batchConn sits between a tls.Conn and its socket. While an HTTP/2
// writer holds it, the TLS records written are gathered and leave in as
// few socket writes as its buffer allows: a 256 KB DATA frame is 16
// records, one system call instead of 16, and larger segments through
// the TCP stack. Outside a hold (handshake, alerts, key updates sent while
// reading) writes go straight through. The buffer is pooled and held only
// during a hold.
type batchConn struct {
	net.Conn

	mu   sync.Mutex
	held bool
	bp   *[]byte
	n    int
	err  error // first write error; every later write fails with it
}

func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

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
		n, err := b.Conn.Write(p)
		if err != nil {
			b.err = err
		}
		return n, err
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
			n, err := b.Conn.Write(p)
			if err != nil {
				b.err = err
			}
			return n, err
		}
	}
	b.n += copy(buf[b.n:], p)
	return len(p), nil
}

func (b *batchConn) flushLocked() error {
	if b.n == 0 {
		return b.err
	}
	_, err := b.Conn.Write((*b.bp)[:b.n])
	b.n = 0
	if err != nil {
		b.err = err
	}
	return err
}
