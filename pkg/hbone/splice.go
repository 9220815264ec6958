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

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Splice copies a to b and b to a until both directions end. When one
// side reaches EOF, the other is half-closed (CloseWrite), so each peer
// sees the other's end in order and no byte is lost. An error in either
// direction, or ctx ending, closes both at once. Both conns are closed
// when Splice returns. The error is the first that was not a clean EOF.
func Splice(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
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

	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		bp := spliceBufs.Get().(*[]byte)
		defer spliceBufs.Put(bp)
		var e error
		*n, e = io.CopyBuffer(dst, src, *bp)
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
	go pipe(a, b, &bToA)
	wg.Wait()
	a.Close()
	b.Close()
	once.Do(func() {})
	return aToB, bToA, firstErr
}
