package http1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past: setting it interrupts a
// blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// connReader sits between a connection and its bufio.Reader. It renews
// the read deadline on each body read (a body read fails only when it
// makes no progress), and on the server runs the background read that
// notices a client going away while its handler runs.
//
// The background read is one byte long and, once started, is left to run
// into the wait for the next request: on a kept-alive connection it is
// that wait, so the common case costs no interruption. A goroutine per
// connection does it, started with the first background read.
type connReader struct {
	conn net.Conn

	mu   sync.Mutex
	cond sync.Cond
	// progressTimeout, if positive, is added to the clock before each read
	// as the read deadline.
	progressTimeout time.Duration
	// inRead: a background read is running; aborted: it was asked to
	// stop.
	inRead, aborted bool
	// hasByte: the background read got the next message's first byte.
	hasByte bool
	byteBuf [1]byte
	// bgErr is the background read's error, for the next Read.
	bgErr error
	// start wakes the background reader; nil until it runs.
	start chan struct{}
	// onEnd is called when the background read sees the connection end.
	onEnd func()
}

func (cr *connReader) init(c net.Conn, onEnd func()) {
	cr.conn, cr.onEnd = c, onEnd
	cr.cond.L = &cr.mu
}

// setProgressTimeout sets (d > 0) or clears (d <= 0) the per-read
// deadline.
func (cr *connReader) setProgressTimeout(d time.Duration) {
	cr.mu.Lock()
	cr.progressTimeout = d
	cr.mu.Unlock()
}

func (cr *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	cr.mu.Lock()
	if cr.inRead {
		cr.mu.Unlock()
		return 0, errors.New("http1: read during the background read")
	}
	if cr.hasByte {
		p[0], cr.hasByte = cr.byteBuf[0], false
		cr.mu.Unlock()
		return 1, nil
	}
	if err := cr.bgErr; err != nil {
		cr.bgErr = nil
		cr.mu.Unlock()
		return 0, err
	}
	d := cr.progressTimeout
	cr.mu.Unlock()
	if d > 0 {
		if err := cr.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
			return 0, err
		}
	}
	return cr.conn.Read(p)
}

// startBackgroundRead starts reading one byte in the background, without
// a deadline, so that the end of the connection is noticed (and onEnd
// called) while no one else reads.
func (cr *connReader) startBackgroundRead() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.inRead || cr.hasByte || cr.bgErr != nil {
		return
	}
	if cr.start == nil {
		cr.start = make(chan struct{}, 1)
		go cr.backgroundReader(cr.start)
	}
	cr.inRead = true
	cr.conn.SetReadDeadline(time.Time{})
	cr.start <- struct{}{}
}

// backgroundReader does the background reads until stop.
func (cr *connReader) backgroundReader(start <-chan struct{}) {
	for range start {
		n, err := cr.conn.Read(cr.byteBuf[:])
		cr.mu.Lock()
		if n == 1 {
			cr.hasByte = true
		}
		if err != nil && !(cr.aborted && errors.Is(err, os.ErrDeadlineExceeded)) {
			cr.bgErr = err
			if cr.onEnd != nil {
				cr.onEnd()
			}
		}
		cr.inRead, cr.aborted = false, false
		cr.cond.Broadcast()
		cr.mu.Unlock()
	}
}

// stop ends the background reader; the connection must be closed or
// the reader idle.
func (cr *connReader) stop() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.start != nil {
		close(cr.start)
		cr.start = nil
	}
}

// waitPending waits for a running background read to end; the caller
// bounds it with the connection's read deadline.
func (cr *connReader) waitPending() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	for cr.inRead {
		cr.cond.Wait()
	}
}

// abortPendingRead stops the background read, if any, and waits for it.
// The byte it may have read stays for the next Read.
func (cr *connReader) abortPendingRead() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if !cr.inRead {
		return
	}
	cr.aborted = true
	cr.conn.SetReadDeadline(aLongTimeAgo)
	for cr.inRead {
		cr.cond.Wait()
	}
	cr.conn.SetReadDeadline(time.Time{})
}

// connWriter writes to a connection with a write deadline renewed for
// each piece of at most maxWriteChunk bytes: a write fails when the peer
// takes nothing for the timeout, not when a large write is merely slow.
type connWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (cw *connWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), maxWriteChunk)]
		if cw.timeout > 0 {
			if err := cw.conn.SetWriteDeadline(time.Now().Add(cw.timeout)); err != nil {
				return written, err
			}
		}
		n, err := cw.conn.Write(piece)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// lingerTimeout and lingerBytes bound how long and how much a closing
// server reads and drops after half-closing, so that its last response
// is not lost to a TCP reset caused by unread input.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 256 << 10
)

// closeLingering closes c after giving the peer its last bytes: it
// half-closes the write side where the connection allows it, then drops
// what the peer still sends until it closes, lingerBytes or
// lingerTimeout.
func closeLingering(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c, lingerBytes)
	c.Close()
}

// bufPools recycle connections' buffers. They only cache memory: a
// buffer handed to a hijacker is never put back.
var (
	readerPool sync.Pool
	writerPool sync.Pool
)

func getReader(r io.Reader) *bufio.Reader {
	if br, ok := readerPool.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, bufSize)
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writerPool.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, bufSize)
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writerPool.Put(bw)
}
