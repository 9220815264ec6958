package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Stream is one CONNECT tunnel on an h2Conn. Its state is guarded by
// the connection's mu. It implements net.Conn and CloseWrite.
type h2Stream struct {
	c    *h2Conn
	id   uint32
	cond *sync.Cond // read side waits; on c.mu

	// Receive side.
	buf         recvBuffer
	recvWindow  int64
	recvUnacked int64
	remoteEnded bool

	// Send side.
	wlock      sync.Mutex // one Write or CloseWrite at a time, so frames keep order
	sendWindow int64
	localEnded bool

	// gone, if set, is called once the stream is closed or has left the
	// connection (server side: it cancels the handler's context).
	gone context.CancelFunc

	reset  error // set once the stream is aborted
	closed bool  // Close was called
	// readClosed: the reader is gone (a request body closed, http); data
	// that comes is dropped, its credit given back.
	readClosed bool
	// trailer holds the trailers received (http).
	trailer http.Header
	removed bool // left c.streams
	release func()

	// Sink mode (spliceTo): received data goes to sink without a reader
	// goroutine. sinkBusy marks the one writer at a time (the read loop
	// writing inline, or drainSink); sinkDone is called once, off c.mu.
	sink      *sockConn
	sinkDone  func(n int64, err error)
	sinkN     int64
	sinkBusy  bool
	sinkEnded bool

	// Server: answer is the status of a request that is not a tunnel,
	// which the engine answers itself (answerLocked); 0 for a tunnel.
	// Its body is counted against wantLen (-1 for no content-length)
	// and dropped; answerBody is what flow control has not let out yet
	// of the answer's, and blocked says the stream waits in c.blocked.
	answer     int
	answered   bool
	noBody     bool // HEAD; client: the response ended on its HEADERS
	blocked    bool
	wantLen    int64
	gotLen     int64
	answerBody []byte

	// Client: the response.
	respCh       chan struct{}
	respReceived bool
	status       int
	header       http.Header

	rdl, wdl deadline
}

type deadline struct {
	// timer is made on first use and reused after: a connection served
	// as HTTP moves its deadlines on every request, and a fresh
	// time.AfterFunc each time costs an allocation and a timer.
	timer *time.Timer
	// armed says the timer is set to fire at fireAt. It is moved only when
	// a deadline comes before fireAt: a later one (the usual move, as
	// requests follow each other) or none leaves it as it is, and the
	// firing arms it again for what remains, or does nothing.
	armed  bool
	fireAt time.Time
	// at is the deadline in force; zero for none.
	at      time.Time
	expired bool
}

// remoteEndLocked records the peer's END_STREAM; it reports whether the
// stream thereby left the connection.
func (st *h2Stream) remoteEndLocked() bool {
	st.remoteEnded = true
	st.cond.Broadcast()
	st.wakeSinkLocked()
	return st.maybeRemoveLocked()
}

// resetLocked aborts the stream with err; it reports whether the stream
// thereby left the connection.
func (st *h2Stream) resetLocked(err error) bool {
	if st.reset != nil || (st.remoteEnded && st.localEnded) {
		return st.maybeRemoveLocked()
	}
	st.reset = err
	// Data received before the peer's END_STREAM is complete: it stays
	// readable (the stream ended cleanly in that direction).
	if n := int64(st.buf.Len()); n > 0 && !st.remoteEnded {
		st.buf.Reset()
		st.c.creditConnLocked(n)
	}
	if !st.respReceived {
		close(st.respCh)
		st.respReceived = true
	}
	st.cond.Broadcast()
	st.c.sendCond.Broadcast()
	st.wakeSinkLocked()
	return st.maybeRemoveLocked()
}

func (st *h2Stream) maybeRemoveLocked() bool {
	if st.removed {
		return false
	}
	if st.reset == nil && !(st.remoteEnded && st.localEnded) {
		return false
	}
	st.removed = true
	delete(st.c.streams, st.id)
	if !st.respReceived {
		// Gone without a response (client): its waiter must not wait on.
		close(st.respCh)
		st.respReceived = true
	}
	if st.blocked {
		st.c.unblockLocked(st)
	}
	st.cond.Broadcast()
	st.goneLocked()
	return true
}

// cancelWhenGone arranges for cancel to run once the stream is closed or
// has left the connection: at once if it already has.
func (st *h2Stream) cancelWhenGone(cancel context.CancelFunc) {
	st.c.mu.Lock()
	defer st.c.mu.Unlock()
	st.gone = cancel
	if st.removed || st.closed {
		st.goneLocked()
	}
}

func (st *h2Stream) goneLocked() {
	if st.gone != nil {
		st.gone()
		st.gone = nil
	}
}

// released runs after the stream left the map; never with c.mu held.
func (st *h2Stream) released() {
	if st.release != nil {
		st.release()
	}
	st.c.streamGone()
}

func (st *h2Stream) creditLocked(n int64) {
	if st.remoteEnded || st.reset != nil {
		return
	}
	st.recvUnacked += n
	if st.recvUnacked >= int64(st.c.cfg.streamWindow)/4 {
		inc, id := uint32(st.recvUnacked), st.id
		st.recvWindow += st.recvUnacked
		st.recvUnacked = 0
		st.c.queue(func() error { return st.c.fr.WriteWindowUpdate(id, inc) })
	}
}

func (st *h2Stream) Read(p []byte) (int, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case st.closed || st.readClosed:
			return 0, net.ErrClosed
		case st.buf.Len() > 0:
			if len(p) == 0 {
				return 0, nil
			}
			n := st.buf.Read(p)
			c.creditConnLocked(int64(n))
			st.creditLocked(int64(n))
			return n, nil
		case st.remoteEnded:
			return 0, io.EOF
		case st.reset != nil:
			return 0, st.reset
		case st.rdl.expired:
			return 0, os.ErrDeadlineExceeded
		}
		st.cond.Wait()
	}
}

// reserveSend waits for flow-control credit and takes up to n bytes.
func (st *h2Stream) reserveSend(n int) (int, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case st.closed:
			return 0, net.ErrClosed
		case st.reset != nil:
			return 0, st.reset
		case st.localEnded:
			return 0, errWriteClosed
		case st.wdl.expired:
			return 0, os.ErrDeadlineExceeded
		case st.sendWindow > 0 && c.sendWindow > 0:
			m := int64(n)
			m = min(m, st.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
			st.sendWindow -= m
			c.sendWindow -= m
			return int(m), nil
		}
		c.sendCond.Wait()
	}
}

func (st *h2Stream) Write(p []byte) (int, error) {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	c := st.c
	written := 0
	for len(p) > 0 {
		n, err := st.reserveSend(len(p))
		if err != nil {
			return written, err
		}
		err = c.write(func() error { return c.fr.WriteData(st.id, false, p[:n]) })
		if err != nil {
			c.closeWithError(err)
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite sends END_STREAM: the peer reads EOF, and this side can go
// on reading.
func (st *h2Stream) CloseWrite() error {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	return st.endLocalLocked(nil)
}

// closeWriteWith is CloseWrite, with trailers if there are any.
func (st *h2Stream) closeWriteWith(trailers []hpack.HeaderField) error {
	st.wlock.Lock()
	defer st.wlock.Unlock()
	return st.endLocalLocked(trailers)
}

// endLocalLocked sends END_STREAM, on trailers if there are any, else on
// an empty DATA frame; caller holds wlock.
func (st *h2Stream) endLocalLocked(trailers []hpack.HeaderField) error {
	c := st.c
	c.mu.Lock()
	switch {
	case st.reset != nil:
		c.mu.Unlock()
		return st.reset
	case st.localEnded:
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.lockWrite()
	removed := st.endSendingLocked()
	var err error
	if len(trailers) > 0 {
		err = c.writeHeadersLocked(st.id, trailers, true)
	} else {
		err = c.writeFrames(func() error { return c.fr.WriteData(st.id, true, nil) })
	}
	if e := c.unlockWrite(); err == nil {
		err = e
	}
	if removed {
		st.released()
	}
	if err != nil {
		c.closeWithError(err)
		return err
	}
	return nil
}

// Close ends the tunnel like closing a TCP socket: gracefully (END_STREAM)
// if the peer has finished sending, abortively (RST_STREAM CANCEL) if it
// has not.
func (st *h2Stream) Close() error {
	c := st.c
	c.mu.Lock()
	if st.closed {
		c.mu.Unlock()
		return nil
	}
	st.closed = true
	st.goneLocked()
	if n := int64(st.buf.Len()); n > 0 {
		st.buf.Reset()
		c.creditConnLocked(n)
	}
	st.cond.Broadcast()
	c.sendCond.Broadcast()
	st.wakeSinkLocked()
	st.stopTimersLocked()
	remoteDone := st.remoteEnded || st.reset != nil
	localDone := st.localEnded || st.reset != nil
	c.mu.Unlock()
	switch {
	case !remoteDone:
		st.abort(http2.ErrCodeCancel)
	case !localDone:
		st.wlock.Lock()
		err := st.endLocalLocked(nil)
		st.wlock.Unlock()
		return err
	}
	return nil
}

// abort resets the stream with code.
func (st *h2Stream) abort(code http2.ErrCode) {
	c := st.c
	c.mu.Lock()
	if st.reset != nil || (st.remoteEnded && st.localEnded) {
		c.mu.Unlock()
		return
	}
	removed := c.resetStreamLocked(st, code)
	c.mu.Unlock()
	if removed {
		st.released()
	}
}

// closeRead drops what was received and what is still to come: the
// reader is gone, but the stream may still send.
func (st *h2Stream) closeRead() {
	c := st.c
	c.mu.Lock()
	st.readClosed = true
	if n := int64(st.buf.Len()); n > 0 {
		st.buf.Reset()
		c.creditConnLocked(n)
	}
	st.cond.Broadcast()
	c.mu.Unlock()
}

// respond sends the response HEADERS (server side), extra after :status.
func (st *h2Stream) respond(status int, end bool, extra ...hpack.HeaderField) error {
	fields := append([]hpack.HeaderField{{Name: ":status", Value: itoa3(status)}}, extra...)
	st.wlock.Lock()
	defer st.wlock.Unlock()
	c := st.c
	c.lockWrite()
	removed := end && st.endSendingLocked()
	err := c.writeHeadersLocked(st.id, fields, end)
	if e := c.unlockWrite(); err == nil {
		err = e
	}
	if removed {
		st.released()
	}
	if err != nil {
		return err
	}
	if end {
		st.askToStopSending()
	}
	return nil
}

// endSendingLocked records that the stream sends no more and reports
// whether it thereby left the connection. The caller holds wmu and writes
// the frame that carries END_STREAM next: a peer that has read that frame
// and sends on the stream must find it in its new state, closed or
// half-closed (RFC 9113 §5.1), which marking it after the write would
// race.
func (st *h2Stream) endSendingLocked() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.localEnded = true
	return st.maybeRemoveLocked()
}

// askToStopSending resets a request still open once its response is
// complete (server side): the client may stop sending (RFC 9113 §8.1).
func (st *h2Stream) askToStopSending() {
	c := st.c
	c.mu.Lock()
	ended := st.remoteEnded
	c.mu.Unlock()
	if !ended {
		st.abort(http2.ErrCodeNo)
	}
}

func itoa3(n int) string {
	if n < 100 || n > 999 {
		n = 500
	}
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}

func (st *h2Stream) LocalAddr() net.Addr  { return st.c.nc.LocalAddr() }
func (st *h2Stream) RemoteAddr() net.Addr { return st.c.nc.RemoteAddr() }

func (st *h2Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	return st.SetWriteDeadline(t)
}

func (st *h2Stream) SetReadDeadline(t time.Time) error {
	st.setDeadline(&st.rdl, t, st.cond)
	return nil
}

func (st *h2Stream) SetWriteDeadline(t time.Time) error {
	st.setDeadline(&st.wdl, t, st.c.sendCond)
	return nil
}

// setDeadline moves d to t and wakes the waiters on wake when it passes.
// wake is a condition variable rather than its Broadcast method: a method
// value would be allocated on every call, and HTTP moves deadlines on
// every request.
func (st *h2Stream) setDeadline(d *deadline, t time.Time, wake *sync.Cond) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	d.at = t
	d.expired = false
	if t.IsZero() {
		return // an armed timer finds no deadline when it fires
	}
	now := time.Now()
	if !now.Before(t) {
		d.expired = true
		wake.Broadcast()
		return
	}
	if d.armed && !t.Before(d.fireAt) {
		return // it fires first, and arms itself again for t
	}
	d.armed, d.fireAt = true, t
	if d.timer != nil {
		d.timer.Reset(t.Sub(now))
		return
	}
	d.timer = time.AfterFunc(t.Sub(now), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		d.armed = false
		switch now := time.Now(); {
		case d.at.IsZero():
		case now.Before(d.at):
			d.armed, d.fireAt = true, d.at
			d.timer.Reset(d.at.Sub(now))
		default:
			d.expired = true
			wake.Broadcast()
		}
	})
}

func (st *h2Stream) stopTimersLocked() {
	for _, d := range []*deadline{&st.rdl, &st.wdl} {
		if d.timer != nil {
			d.timer.Stop()
		}
		d.armed = false
		d.at = time.Time{}
	}
}

// spliceTo has the read loop deliver the stream's data straight to dst,
// the receiving half of a Splice without a goroutine blocked in Read: a
// DATA frame is written to the socket as it arrives, and only what the
// socket does not take at once is buffered and written by a short-lived
// goroutine (drainSink). Flow-control credit is returned as bytes reach
// the socket, as Read does. Once the peer's END_STREAM has been passed on
// (dst.CloseWrite), or the stream fails or is closed, done is called
// once, off the connection's lock, with the bytes delivered; it must not
// block. Read must not be used afterwards.
func (st *h2Stream) spliceTo(dst *sockConn, done func(n int64, err error)) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.sink, st.sinkDone = dst, done
	if st.buf.Len() > 0 {
		st.startDrainLocked()
		return
	}
	st.wakeSinkLocked()
}

// wakeSinkLocked starts drainSink when the sink has something to act on
// (buffered data, the end of the stream) and no writer.
func (st *h2Stream) wakeSinkLocked() {
	if st.sink == nil || st.sinkBusy || st.sinkEnded {
		return
	}
	if st.buf.Len() > 0 || st.remoteEnded || st.reset != nil || st.closed {
		st.startDrainLocked()
	}
}

func (st *h2Stream) startDrainLocked() {
	st.sinkBusy = true
	go st.drainSink()
}

// deliverLocked hands a DATA frame's payload to the sink (read loop, c.mu
// held; it is released during the write). It reports false when the stream
// is not in sink mode, and the caller buffers as usual.
func (st *h2Stream) deliverLocked(data []byte) bool {
	c := st.c
	if st.sink == nil || st.sinkEnded || st.closed {
		return false
	}
	if st.sinkBusy || st.buf.Len() > 0 {
		st.buf.Write(data) // behind what drainSink is writing
		return true
	}
	st.sinkBusy = true
	sink := st.sink
	c.mu.Unlock()
	n, err := sink.tryWrite(data)
	c.mu.Lock()
	st.sinkBusy = false
	st.sinkN += int64(n)
	c.creditConnLocked(int64(n))
	st.creditLocked(int64(n))
	rest := data[n:]
	switch {
	case err != nil:
		c.creditConnLocked(int64(len(rest)))
		st.endSinkLocked(err)
		return true
	case len(rest) > 0 && (st.closed || st.reset != nil):
		c.creditConnLocked(int64(len(rest)))
	case len(rest) > 0:
		st.buf.Write(rest)
	}
	// Whatever happened meanwhile (a close, a reset) or is left over is
	// now drainSink's.
	st.wakeSinkLocked()
	return true
}

// endSinkLocked reports the end of sink mode after a failure: done runs
// on a goroutine of its own, as its abort closes conns and c.mu is held.
func (st *h2Stream) endSinkLocked(err error) {
	if st.sinkEnded {
		return
	}
	st.sinkEnded = true
	done, n := st.sinkDone, st.sinkN
	go done(n, err)
}

// drainSink writes buffered data to the sink, blocking on a full socket,
// and passes the end of the stream on; it exits once the buffer is empty.
func (st *h2Stream) drainSink() {
	c := st.c
	var bp *[]byte
	defer func() {
		if bp != nil {
			recvChunks.Put(bp)
		}
	}()
	for {
		c.mu.Lock()
		switch {
		case st.closed:
			st.sinkBusy = false
			st.endSinkLocked(net.ErrClosed)
			c.mu.Unlock()
			return
		case st.buf.Len() > 0:
			if bp == nil {
				bp = recvChunks.Get().(*[]byte)
			}
			n := st.buf.Read(*bp)
			c.creditConnLocked(int64(n))
			st.creditLocked(int64(n))
			c.mu.Unlock()
			w, err := st.sink.Write((*bp)[:n])
			c.mu.Lock()
			st.sinkN += int64(w)
			if err != nil {
				st.sinkBusy = false
				st.endSinkLocked(err)
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
		case st.reset != nil && !st.remoteEnded:
			st.sinkBusy = false
			st.endSinkLocked(st.reset)
			c.mu.Unlock()
			return
		case st.remoteEnded:
			st.sinkEnded = true
			st.sinkBusy = false
			done, n := st.sinkDone, st.sinkN
			c.mu.Unlock()
			err := st.sink.CloseWrite()
			if errors.Is(err, net.ErrClosed) {
				err = nil
			}
			done(n, err)
			return
		default:
			st.sinkBusy = false
			c.mu.Unlock()
			return
		}
	}
}
