package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// closeWriter is a connection that can half-close: *net.TCPConn,
// *tls.Conn, and every tunnel this package returns.
type closeWriter interface {
	CloseWrite() error
}

// Copy buffers. An idle tunnel spends its life blocked in Read, holding
// whatever buffer it passed in, so each direction reads into a small
// buffer and borrows a large one from the pool only while reads keep
// filling the small one: bulk transfers get large reads, idle tunnels
// cost a few kilobytes.
const (
	smallCopyBuf = 1 << 10
	largeCopyBuf = 256 << 10
)

var largeCopyBufs = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

// copyAdaptive copies src to dst until EOF (returning a nil error) or an
// error, like io.Copy, switching between a small and a large buffer.
func copyAdaptive(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, smallCopyBuf)
	buf := small
	var large *[]byte
	defer func() {
		if large != nil {
			largeCopyBufs.Put(large)
		}
	}()
	var written int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nw != nr {
				return written, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
		switch {
		case large == nil && nr == len(small):
			large = largeCopyBufs.Get().(*[]byte)
			buf = *large
		case large != nil && nr < len(small):
			largeCopyBufs.Put(large)
			large, buf = nil, small
		}
	}
}

// copyConn copies src to dst like copyAdaptive; from a socket it reads
// into pooled buffers taken only once data is there (readPooled), so a
// tunnel waiting for data holds none.
func copyConn(dst io.Writer, src net.Conn) (int64, error) {
	sc, ok := src.(*sockConn)
	if !ok {
		return copyAdaptive(dst, src)
	}
	var written int64
	pool := &recvChunks
	for {
		bp, nr, rerr := sc.readPooled(pool)
		full := false
		if bp != nil {
			full = nr == len(*bp)
			var werr error
			if nr > 0 {
				var nw int
				nw, werr = dst.Write((*bp)[:nr])
				written += int64(nw)
				if werr == nil && nw != nr {
					werr = io.ErrShortWrite
				}
			}
			pool.Put(bp)
			if werr != nil {
				return written, werr
			}
		}
		if rerr == io.EOF {
			return written, nil
		}
		if rerr != nil {
			return written, rerr
		}
		// Reads that fill a buffer get a larger one: bulk transfers make
		// fewer, larger frames and system calls.
		pool = &recvChunks
		if full {
			pool = &largeCopyBufs
		}
	}
}

// Splice copies a to b and b to a until both directions end. When one
// side reaches EOF, the other is half-closed (CloseWrite), so each peer
// sees the other's end in order and no byte is lost. An error in either
// direction, or ctx ending, closes both at once. Both conns are closed
// when Splice returns. The error is the first that was not a clean EOF.
//
// Splice uses the calling goroutine and at most one more; a tunnel
// spliced to a TCP connection uses none more: its received data is
// written to the socket by the HTTP/2 connection's read loop.
func Splice(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	a, b = fastConn(a), fastConn(b)
	var (
		once     sync.Once
		firstErr error
	)
	abort := func(e error) {
		once.Do(func() { firstErr = e })
		a.Close()
		b.Close()
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
		defer stop()
	}

	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var e error
		*n, e = copyConn(dst, src)
		if e != nil {
			abort(e)
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if e := cw.CloseWrite(); e != nil && !errors.Is(e, net.ErrClosed) {
				abort(e)
			}
			return
		}
		// No half-close possible: ending the whole conn is the only way
		// to signal EOF.
		dst.Close()
	}
	// sink sends src to dst from the read loop when src is a tunnel and
	// dst a socket.
	sink := func(dst, src net.Conn, n *int64) bool {
		st, ok := src.(*h2Stream)
		sc, ok2 := dst.(*sockConn)
		if !ok || !ok2 {
			return false
		}
		// done never runs on the read loop: abort may block there.
		st.spliceTo(sc, func(m int64, e error) {
			*n = m
			if e != nil {
				abort(e)
			}
			wg.Done()
		})
		return true
	}
	switch {
	case sink(a, b, &bToA):
		pipe(b, a, &aToB)
	case sink(b, a, &aToB):
		pipe(a, b, &bToA)
	default:
		// One direction runs on the calling goroutine: an idle tunnel
		// costs one goroutine fewer.
		go pipe(b, a, &aToB)
		pipe(a, b, &bToA)
	}
	wg.Wait()
	a.Close()
	b.Close()
	once.Do(func() {})
	return aToB, bToA, firstErr
}
