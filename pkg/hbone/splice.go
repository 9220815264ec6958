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

// Splice copies a to b and b to a until both directions end. When one
// side reaches EOF, the other is half-closed (CloseWrite), so each peer
// sees the other's end in order and no byte is lost. An error in either
// direction, or ctx ending, closes both at once. Both conns are closed
// when Splice returns. The error is the first that was not a clean EOF.
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
	stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
	defer stop()

	// One direction runs on the calling goroutine: an idle tunnel costs
	// one goroutine fewer.
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var e error
		*n, e = copyAdaptive(dst, src)
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
	go pipe(b, a, &aToB)
	pipe(a, b, &bToA)
	wg.Wait()
	a.Close()
	b.Close()
	once.Do(func() {})
	return aToB, bToA, firstErr
}
