package hbone

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults match ztunnel's: 4 MiB per stream, 16 MiB per connection, and
// 1 MiB frames so a bulk transfer needs few frames.
const (
	DefaultStreamWindow = 4 << 20
	DefaultConnWindow   = 16 << 20
	defaultMaxFrameSize = 1 << 20
	// connBufSize sizes each connection's read and write buffers: one
	// full TLS record. Larger frames bypass the buffers anyway.
	connBufSize       = 16 << 10
	maxHeaderListSize = 64 << 10
	initialWindowSize = 65535 // RFC 9113 §6.9.2

	// maxQueuedControlFrames bounds the frames the engine queues on its
	// own behalf (PING and SETTINGS acks, RST_STREAM, WINDOW_UPDATE). A
	// peer that makes us answer faster than it reads fills it; it is
	// then told ENHANCE_YOUR_CALM and dropped. x/net/http2 uses the same
	// figure.
	maxQueuedControlFrames = 10000
	// maxUnstartedPerStream bounds the streams waiting for a handler, as
	// a multiple of the stream limit (x/net/http2's figure): only a peer
	// resetting streams faster than their handlers finish gets there.
	maxUnstartedPerStream = 4
	// defaultGoAwayTimeout bounds how long a failing connection waits to
	// deliver its GOAWAY before closing.
	defaultGoAwayTimeout = time.Second
	// sentResetMemory is how many of the streams we reset are
	// remembered, so that what the peer had in flight on them is
	// ignored rather than answered.
	sentResetMemory = 32
)

// DefaultWriteByteTimeout is how long a write to an HTTP/2 connection may
// wait without the peer taking a byte before the connection is closed
// (x/net/http2 calls it WriteByteTimeout): far beyond a congested but live
// path's pauses, short enough that a peer that stopped reading frees the
// tunnels it stalls, and their goroutines and buffers, soon.
const DefaultWriteByteTimeout = 30 * time.Second

var (
	errConnClosed  = errors.New("hbone: connection closed")
	errWriteClosed = errors.New("hbone: write after CloseWrite")
	// errControlFlood closes a connection whose peer made us queue more
	// than maxQueuedControlFrames answers it did not read.
	errControlFlood = fmt.Errorf("hbone: peer does not read the frames it makes us send: %w",
		http2.ConnectionError(http2.ErrCodeEnhanceYourCalm))
	// errResetFlood closes a connection whose peer opens and resets
	// streams faster than their handlers finish (CVE-2023-44487).
	errResetFlood = fmt.Errorf("hbone: peer resets streams faster than their handlers finish: %w",
		http2.ConnectionError(http2.ErrCodeEnhanceYourCalm))
	// errGoAwayStalled closes a connection, hard, whose graceful GOAWAY
	// could not be written within goAwayTimeout: its peer does not read.
	errGoAwayStalled = errors.New("hbone: peer does not read: GOAWAY not sent in time")
)

// streamResetError reports a RST_STREAM from the peer or sent by us.
type streamResetError struct {
	code   http2.ErrCode
	remote bool
}

func (e streamResetError) Error() string {
	if e.remote {
		return "hbone: stream reset by peer: " + e.code.String()
	}
	return "hbone: stream reset: " + e.code.String()
}

// retryableError marks a stream the server never processed (REFUSED_STREAM,
// or above a GOAWAY's last stream ID): the request may go on another
// connection.
type retryableError struct{ err error }

func (e retryableError) Error() string { return e.err.Error() }
func (e retryableError) Unwrap() error { return e.err }

type h2Config struct {
	streamWindow uint32
	connWindow   uint32
	maxStreams   uint32 // advertised limit of peer-initiated streams (server)
	logger       *slog.Logger
	// goAwayTimeout bounds the delivery of the GOAWAY that ends a failing
	// connection; 0 means defaultGoAwayTimeout.
	goAwayTimeout time.Duration
	// writeByteTimeout fails the connection once a write to it has made
	// no progress for that long (ErrWriteByteTimeout); 0 or less, never.
	// It needs batch.
	writeByteTimeout time.Duration
	// batch, if set, is the socket under the TLS conn: frame writes are
	// sent through it in batches.
	batch *batchConn
	// gather, with batch, leaves the sending of frames to writeLoop,
	// which sends once the goroutines runnable now have run
	// (GatherWrites).
	gather bool
	// http serves any request, not only CONNECT (ServeH2C): handlers get
	// requests of every method, their bodies checked against their
	// content-length and their trailers kept.
	http bool
	// maxHeaderList is the header list size advertised and enforced; 0
	// means maxHeaderListSize.
	maxHeaderList uint32
	// spareHandlers bounds the handler goroutines kept waiting for the
	// connection's next stream (http): a goroutine that served one request
	// has grown its stack, and a new one would grow its own again.
	spareHandlers int32
	// pingInterval and pingTimeout set the health check (healthCheck);
	// 0, none.
	pingInterval, pingTimeout time.Duration
}

// h2Conn is one HTTP/2 connection carrying CONNECT tunnels, for either
// side. It exists, rather than x/net/http2's Server, so that each side can
// half-close a stream (END_STREAM) while still reading, as TCP can. On
// the server only well-formed CONNECTs reach a handler: the engine resets
// malformed requests and answers the others itself (answerLocked).
//
// Locking: wmu (frame writes, hpack encoder) may be taken before mu, never
// after. The read loop never takes wmu, so a peer that stops reading cannot
// deadlock us: its control replies are queued for writeLoop.
type h2Conn struct {
	nc     net.Conn
	client bool
	cfg    h2Config
	fr     *http2.Framer
	bw     *bufio.Writer
	log    *slog.Logger

	wmu  sync.Mutex
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	// writeWaiters counts writers waiting for wmu in lockWrite. A writer
	// that leaves wmu while one waits does not send what it wrote: the
	// frames stay gathered in the batch (batchHeld, under wmu) and go out
	// in the same socket write as the next writer's (group commit). Many
	// tunnels answering at once then cost one system call, not one each.
	writeWaiters atomic.Int32
	batchHeld    bool
	// flushWake asks writeLoop to send the gathered frames (gather).
	flushWake chan struct{}
	// writeLoopDone is closed once writeLoop has stopped, after sending
	// what writers left gathered.
	writeLoopDone chan struct{}
	// wctx is held by a writer that takes wmu with lockWriteCtx, so that
	// only one at a time waits for wmu on a goroutine of its own.
	wctx chan struct{}

	ctrlMu   sync.Mutex
	ctrl     []func() error
	ctrlWake chan struct{}
	// flooded is set once ctrl overflowed: later control frames are
	// dropped and the read loop ends the connection.
	flooded atomic.Bool
	// framesRead counts the frames read, for the health check.
	framesRead atomic.Uint64

	mu             sync.Mutex
	sendCond       *sync.Cond // waits for send window, on any stream
	streams        map[uint32]*h2Stream
	nextID         uint32 // client: next stream ID
	maxPeerID      uint32 // server: highest stream ID the peer opened
	peerMaxStreams uint32
	peerInitWindow int64
	peerMaxFrame   uint32
	sendWindow     int64
	recvWindow     int64
	recvUnacked    int64
	goAwaySent     bool
	goAwayDone     bool // our graceful GOAWAY is written
	goAwayRecv     bool
	// goAwayWhenIdle sends GOAWAY once a stream has ended and none is
	// left (server): a connection that came while its server drains
	// serves at least one request.
	goAwayWhenIdle bool
	err            error
	done           chan struct{}
	settingsSeen   chan struct{}
	onClose        []func()

	// Server: handlers counts the onStream calls running; at most
	// cfg.maxStreams run at once, even if their streams were reset, and
	// the streams beyond wait in unstarted.
	handlers  uint32
	unstarted []unstartedStream
	// spare hands a new stream to a handler goroutine waiting for one;
	// spareCount counts those waiting (cfg.spareHandlers), and closing
	// sparesEnd ends them once the connection carries no stream. A
	// goroutine becomes a spare, and sparesEnd is closed and replaced,
	// under mu, so no spare misses the end.
	spare      chan unstartedStream
	spareCount atomic.Int32
	sparesEnd  chan struct{}

	// sentResets holds the last streams we reset: frames the peer sent
	// on them before it saw our RST_STREAM are ignored (RFC 9113 §5.1),
	// where other frames on closed streams get STREAM_CLOSED. Under mu.
	sentResets    [sentResetMemory]uint32
	sentResetNext int
	// blocked lists the server's own answers (answerStream) whose body
	// waits for flow-control credit. Under mu.
	blocked []*h2Stream

	// onStream is called, on a goroutine of its own, for each stream the
	// peer opens (server side).
	onStream func(st *h2Stream, f *http2.MetaHeadersFrame)
}

// unstartedStream is a stream waiting for a handler slot.
type unstartedStream struct {
	st *h2Stream
	f  *http2.MetaHeadersFrame
}

func newH2Conn(nc net.Conn, client bool, cfg h2Config) *h2Conn {
	if cfg.streamWindow == 0 {
		cfg.streamWindow = DefaultStreamWindow
	}
	if cfg.connWindow == 0 {
		cfg.connWindow = DefaultConnWindow
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.goAwayTimeout <= 0 {
		cfg.goAwayTimeout = defaultGoAwayTimeout
	}
	if cfg.maxHeaderList == 0 {
		cfg.maxHeaderList = maxHeaderListSize
	}
	if cfg.batch != nil {
		cfg.batch.setWriteByteTimeout(cfg.writeByteTimeout)
	} else {
		cfg.gather = false // it gathers in the batch
	}
	c := &h2Conn{
		nc:             nc,
		client:         client,
		cfg:            cfg,
		bw:             bufio.NewWriterSize(nc, connBufSize),
		log:            cfg.logger,
		ctrlWake:       make(chan struct{}, 1),
		flushWake:      make(chan struct{}, 1),
		writeLoopDone:  make(chan struct{}),
		wctx:           make(chan struct{}, 1),
		streams:        make(map[uint32]*h2Stream),
		nextID:         1,
		peerMaxStreams: math.MaxUint32,
		peerInitWindow: initialWindowSize,
		peerMaxFrame:   16384,
		sendWindow:     initialWindowSize,
		recvWindow:     int64(cfg.connWindow),
		done:           make(chan struct{}),
		settingsSeen:   make(chan struct{}),
		spare:          make(chan unstartedStream),
		sparesEnd:      make(chan struct{}),
	}
	c.sendCond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, connBufSize))
	c.fr.SetMaxReadFrameSize(defaultMaxFrameSize)
	// DATA frames are consumed before the next read: reuse one.
	c.fr.SetReuseFrames()
	c.fr.MaxHeaderListSize = cfg.maxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start sends the preface (client) and SETTINGS, then runs the loops. The
// server must have read the client preface already.
func (c *h2Conn) start() error {
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: c.cfg.streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: defaultMaxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.maxHeaderList},
	}
	if c.client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.maxStreams})
	}
	err := c.write(func() error {
		if c.client {
			if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
				return err
			}
		}
		if err := c.fr.WriteSettings(settings...); err != nil {
			return err
		}
		if c.cfg.connWindow > initialWindowSize {
			return c.fr.WriteWindowUpdate(0, c.cfg.connWindow-initialWindowSize)
		}
		return nil
	})
	if err != nil {
		close(c.writeLoopDone) // it never runs
		c.nc.Close()
		return fmt.Errorf("hbone: writing HTTP/2 preface: %w", err)
	}
	go c.readLoop()
	go c.writeLoop()
	c.startHealthCheck()
	return nil
}

// readClientPreface consumes the client connection preface (server side).
func readClientPreface(r io.Reader) error {
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("hbone: reading HTTP/2 preface: %w", err)
	}
	if string(buf) != http2.ClientPreface {
		return errors.New("hbone: bad HTTP/2 client preface")
	}
	return nil
}

// queue schedules a control frame write without blocking the caller.
// Once more than maxQueuedControlFrames wait, the peer is not reading
// what it makes us send: the queue is dropped, and the read loop is
// woken to end the connection with ENHANCE_YOUR_CALM.
func (c *h2Conn) queue(fn func() error) {
	c.ctrlMu.Lock()
	if c.flooded.Load() {
		c.ctrlMu.Unlock()
		return
	}
	if len(c.ctrl) >= maxQueuedControlFrames {
		c.flooded.Store(true)
		c.ctrl = nil
		c.ctrlMu.Unlock()
		c.nc.SetReadDeadline(time.Unix(1, 0))
		return
	}
	c.ctrl = append(c.ctrl, fn)
	c.ctrlMu.Unlock()
	select {
	case c.ctrlWake <- struct{}{}:
	default:
	}
}

// writeFrames runs fn, which writes frames into the framer's buffer, and
// passes them through TLS into the batch; unlockWrite sends them. With
// gather they stay in the framer's buffer until sendLocked: one TLS
// record then carries the frames of many writers, and they are encrypted
// on the sending goroutine, not deep in each writer's stack (whose growth
// cost more than the encryption). Caller holds wmu.
func (c *h2Conn) writeFrames(fn func() error) error {
	if c.cfg.batch != nil && !c.batchHeld {
		c.cfg.batch.hold()
		c.batchHeld = true
	}
	err := fn()
	if err == nil && !c.cfg.gather {
		err = c.bw.Flush()
	}
	return err
}

// sendLocked sends what writers gathered: the framer's buffer through
// TLS, then the batch. Caller holds wmu, with batchHeld set.
func (c *h2Conn) sendLocked() error {
	c.batchHeld = false
	err := c.bw.Flush()
	if e := c.cfg.batch.release(); err == nil {
		err = e
	}
	return err
}

// lockWrite takes wmu, counted as waiting while it does.
func (c *h2Conn) lockWrite() {
	c.writeWaiters.Add(1)
	c.wmu.Lock()
	c.writeWaiters.Add(-1)
}

// unlockWrite leaves wmu, sending the gathered frames unless a writer is
// waiting to add its own: the last of a run of writers sends them all.
// A failed send fails the connection.
func (c *h2Conn) unlockWrite() error { return c.unlockWriteFlush(false) }

// unlockWriteFlush is unlockWrite; with now, the frames are sent whoever
// waits, for a writer that must know they left (a GOAWAY before closing).
// With gather and not now, writeLoop sends them instead.
func (c *h2Conn) unlockWriteFlush(now bool) error {
	return c.unlockWriteSend(now, c.cfg.gather && !now)
}

// unlockWriteSend leaves wmu. The frames gathered are sent if now or if
// no writer waits, by this goroutine or, if later, by writeLoop.
func (c *h2Conn) unlockWriteSend(now, later bool) error {
	if later {
		select {
		case <-c.done:
			// writeLoop has stopped, or stops after its last send: a
			// writer that comes after that sends for itself.
			later = false
		default:
		}
	}
	var err error
	wake := false
	if c.batchHeld && (now || c.writeWaiters.Load() == 0) {
		if later {
			wake = true
		} else {
			err = c.sendLocked()
		}
	}
	c.wmu.Unlock()
	if wake {
		select {
		case c.flushWake <- struct{}{}:
		default:
		}
	}
	if err != nil {
		go c.closeWithError(fmt.Errorf("hbone: write: %w", err))
	}
	return err
}

// write writes fn's frames under wmu and sends them (or leaves them to a
// waiting writer to send with its own).
func (c *h2Conn) write(fn func() error) error { return c.writeAndFlush(fn, false) }

// writeNow writes fn's frames and sends them before returning.
func (c *h2Conn) writeNow(fn func() error) error { return c.writeAndFlush(fn, true) }

func (c *h2Conn) writeAndFlush(fn func() error, now bool) error {
	c.lockWrite()
	err := c.writeFrames(fn)
	if e := c.unlockWriteFlush(now); err == nil {
		err = e
	}
	return err
}

// writeLoop writes the queued control frames and, with gather, sends
// the frames other writers left gathered, the last time once the
// connection is done.
func (c *h2Conn) writeLoop() {
	defer close(c.writeLoopDone)
	for {
		select {
		case <-c.ctrlWake:
		case <-c.flushWake:
		case <-c.done:
			if c.cfg.gather {
				// The last frames of the streams that ended the
				// connection (say, after a GOAWAY) may wait here.
				c.lockWrite()
				if c.batchHeld {
					c.sendLocked()
				}
				c.wmu.Unlock()
			}
			return
		}
		if c.cfg.gather {
			// Let the goroutines runnable now (say, the handlers of the
			// tunnels one read woke) write first: their frames then
			// leave in this one send. With one thread this sends once
			// the process has nothing else to do, as an event loop does.
			runtime.Gosched()
		}
		c.lockWrite()
		err := c.writeFrames(c.writeQueued)
		if e := c.unlockWriteSend(false, false); err == nil {
			err = e
		}
		if err != nil {
			// Not here: closing waits for this loop to stop.
			go c.closeWithError(fmt.Errorf("hbone: write: %w", err))
			return
		}
	}
}

// writeQueued writes the queued control frames; caller holds wmu. The
// queue is taken under wmu, so a frame queued before a HEADERS is written
// (say the RST_STREAM of a stream whose slot the HEADERS reuses) precedes
// it on the wire.
func (c *h2Conn) writeQueued() error {
	c.ctrlMu.Lock()
	q := c.ctrl
	c.ctrl = nil
	c.ctrlMu.Unlock()
	for _, fn := range q {
		if err := fn(); err != nil {
			return err
		}
	}
	return nil
}

func (c *h2Conn) readLoop() {
	err := c.readFrames()
	if c.flooded.Load() {
		err = errControlFlood
	}
	var ce http2.ConnectionError
	if !errors.As(err, &ce) {
		c.closeWithError(err)
		return
	}
	if http2.ErrCode(ce) == http2.ErrCodeEnhanceYourCalm {
		c.log.Warn("hbone: closing connection of abusive peer", "remote", c.nc.RemoteAddr(), "err", err)
	}
	// Best effort: tell the peer why before hanging up.
	deadline := time.Now().Add(c.cfg.goAwayTimeout)
	if !c.writeGoAway(http2.ErrCode(ce), deadline) {
		c.closeWithError(err)
		return
	}
	c.closeAfter(err, func() { c.linger(deadline) })
}

// writeGoAway sends GOAWAY with code, giving up at deadline. It leaves
// the connection usable meanwhile: a client's pool closes one that is not
// as soon as it has no streams, which would cut the GOAWAY off.
func (c *h2Conn) writeGoAway(code http2.ErrCode, deadline time.Time) bool {
	c.mu.Lock()
	last := c.maxPeerID
	c.mu.Unlock()
	c.nc.SetWriteDeadline(deadline)
	return c.writeNow(func() error { return c.fr.WriteGoAway(last, code, nil) }) == nil
}

// linger lets the peer read the GOAWAY before the socket closes: closing
// a socket with unread input resets it, and the reset can discard what
// was sent. It half-closes the socket under TLS if it can, and discards
// what the peer still sends until it closes too or deadline passes.
// Read loop only.
func (c *h2Conn) linger(deadline time.Time) {
	raw := c.socket()
	if cw, ok := raw.(closeWriter); ok {
		cw.CloseWrite()
	}
	raw.SetReadDeadline(deadline)
	io.Copy(io.Discard, raw)
}

func (c *h2Conn) readFrames() error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code, true)
				continue
			}
			if errors.Is(err, http2.ErrFrameTooLarge) {
				// Beyond the SETTINGS_MAX_FRAME_SIZE we advertised
				// (RFC 9113 §4.2): the frame cannot be skipped safely.
				return fmt.Errorf("hbone: %w: %w", err, http2.ConnectionError(http2.ErrCodeFrameSize))
			}
			if errors.Is(err, io.EOF) {
				return errConnClosed
			}
			return err
		}
		c.framesRead.Add(1)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			err = c.handleSettings(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				c.queue(func() error { return c.fr.WritePing(true, data) })
			}
		case *http2.WindowUpdateFrame:
			err = c.handleWindowUpdate(f)
		case *http2.MetaHeadersFrame:
			err = c.handleHeaders(f)
		case *http2.DataFrame:
			err = c.handleData(f)
		case *http2.RSTStreamFrame:
			err = c.handleRSTStream(f)
		case *http2.PriorityFrame:
			// Priorities are advisory and tunnels ignore them, but a
			// stream cannot depend on itself (RFC 9113 §5.3.1).
			if f.StreamDep == f.StreamID {
				c.resetStream(f.StreamID, http2.ErrCodeProtocol, false)
			}
		case *http2.GoAwayFrame:
			c.handleGoAway(f)
		case *http2.PushPromiseFrame:
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if err != nil {
			return err
		}
	}
}

// idleLocked reports whether stream id is idle, never opened by either
// side (RFC 9113 §5.1): only HEADERS and PRIORITY may name it. Neither
// side pushes, so every stream the server would open is idle. Caller
// holds mu.
func (c *h2Conn) idleLocked(id uint32) bool {
	if id%2 == 0 {
		return true
	}
	if c.client {
		return id >= c.nextID
	}
	return id > c.maxPeerID
}

func (c *h2Conn) handleRSTStream(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		idle := c.idleLocked(f.StreamID)
		c.mu.Unlock()
		if idle {
			return fmt.Errorf("hbone: RST_STREAM on idle stream %d: %w", f.StreamID, http2.ConnectionError(http2.ErrCodeProtocol))
		}
		return nil // closed: a race with our own end of the stream
	}
	removed := st.resetLocked(streamResetError{code: f.ErrCode, remote: true})
	c.mu.Unlock()
	if removed {
		st.released()
	}
	return nil
}

func (c *h2Conn) handleSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	var tableSize uint32
	haveTable := false
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > math.MaxInt32 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingHeaderTableSize:
			tableSize, haveTable = s.Val, true
		}
		return nil
	})
	select {
	case <-c.settingsSeen:
	default:
		close(c.settingsSeen)
	}
	c.sendCond.Broadcast()
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.queue(func() error {
		if haveTable {
			c.enc.SetMaxDynamicTableSizeLimit(tableSize)
		}
		return c.fr.WriteSettingsAck()
	})
	// After the ACK: what the new settings let out goes after it.
	removed := c.sendBlockedLocked()
	c.mu.Unlock()
	for _, st := range removed {
		st.released()
	}
	return nil
}

func (c *h2Conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	var removed []*h2Stream
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > math.MaxInt32 {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if st := c.streams[f.StreamID]; st != nil {
		st.sendWindow += int64(f.Increment)
		if st.sendWindow > math.MaxInt32 {
			if c.resetStreamLocked(st, http2.ErrCodeFlowControl) {
				removed = append(removed, st)
			}
		}
	} else if c.idleLocked(f.StreamID) {
		c.mu.Unlock()
		return fmt.Errorf("hbone: WINDOW_UPDATE on idle stream %d: %w", f.StreamID, http2.ConnectionError(http2.ErrCodeProtocol))
	}
	c.sendCond.Broadcast()
	removed = append(removed, c.sendBlockedLocked()...)
	c.mu.Unlock()
	for _, st := range removed {
		st.released()
	}
	return nil
}

func (c *h2Conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	st := c.streams[id]
	if c.client {
		if st == nil {
			idle := c.idleLocked(id)
			c.mu.Unlock()
			if idle {
				return fmt.Errorf("hbone: HEADERS on stream %d, which we did not open: %w", id, http2.ConnectionError(http2.ErrCodeProtocol))
			}
			return nil // a stream we reset already
		}
		if st.respReceived {
			// Trailers: only their END_STREAM matters to a tunnel.
			removed := false
			if f.StreamEnded() {
				st.trailer = headerOf(f)
				removed = st.remoteEndLocked()
			} else {
				removed = c.resetStreamLocked(st, http2.ErrCodeProtocol)
			}
			c.mu.Unlock()
			if removed {
				st.released()
			}
			return nil
		}
		status := f.PseudoValue("status")
		code, ok := parseStatus(status)
		if !ok || f.Truncated {
			removed := c.resetStreamLocked(st, http2.ErrCodeProtocol)
			c.mu.Unlock()
			if removed {
				st.released()
			}
			return nil
		}
		if code < 200 {
			c.mu.Unlock()
			return nil // interim response
		}
		st.respReceived = true
		st.status = code
		st.header = headerOf(f)
		close(st.respCh)
		removed := false
		if f.StreamEnded() {
			st.noBody = true
			removed = st.remoteEndLocked()
		}
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}

	// Server side.
	if st != nil {
		var removed bool
		switch {
		case st.remoteEnded:
			// Half-closed (remote): RFC 9113 §5.1.
			removed = c.resetStreamLocked(st, http2.ErrCodeStreamClosed)
		case st.answer != 0 || c.cfg.http:
			removed = c.handleTrailersLocked(st, f)
		default:
			// A CONNECT stream carries DATA only (RFC 9113 §8.5).
			removed = c.resetStreamLocked(st, http2.ErrCodeProtocol)
		}
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}
	if id%2 == 0 || id <= c.maxPeerID {
		c.mu.Unlock()
		return fmt.Errorf("hbone: HEADERS opening stream %d, not above %d: %w", id, c.maxPeerID, http2.ConnectionError(http2.ErrCodeProtocol))
	}
	c.maxPeerID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		// A stream cannot depend on itself (RFC 9113 §5.3.1).
		c.queueResetLocked(id, http2.ErrCodeProtocol)
		c.mu.Unlock()
		return nil
	}
	if c.goAwaySent || uint32(len(c.streams)) >= c.cfg.maxStreams {
		c.queueResetLocked(id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return nil
	}
	connect, err := checkRequest(f)
	if err != nil {
		// Malformed (RFC 9113 §8.1.1).
		c.queueResetLocked(id, http2.ErrCodeProtocol)
		c.mu.Unlock()
		c.log.Debug("hbone: malformed request", "remote", c.nc.RemoteAddr(), "stream", id, "err", err)
		return nil
	}
	if f.Truncated || !connect && !c.cfg.http {
		// Not a tunnel: the engine answers it without a handler.
		st = c.newStreamLocked(id)
		removed := c.answerLocked(st, f)
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}
	if c.handlers >= c.cfg.maxStreams &&
		int64(len(c.unstarted)) >= maxUnstartedPerStream*int64(c.cfg.maxStreams) {
		c.mu.Unlock()
		return errResetFlood
	}
	wantLen := int64(-1)
	if c.cfg.http {
		n, err := contentLength(f.RegularFields())
		if err != nil || f.StreamEnded() && n > 0 {
			// Malformed (RFC 9113 §8.1.1).
			c.queueResetLocked(id, http2.ErrCodeProtocol)
			c.mu.Unlock()
			return nil
		}
		wantLen = n
	}
	st = c.newStreamLocked(id)
	st.wantLen = wantLen
	if f.StreamEnded() {
		st.remoteEnded = true
	}
	if c.handlers >= c.cfg.maxStreams {
		// Handlers of streams the peer reset may still be running: the
		// stream waits for one of them to return.
		c.unstarted = append(c.unstarted, unstartedStream{st, f})
		c.mu.Unlock()
		return nil
	}
	c.handlers++
	c.mu.Unlock()
	c.startHandler(st, f)
	return nil
}

// startHandler serves st on a spare handler goroutine if one waits, else
// on a new one.
func (c *h2Conn) startHandler(st *h2Stream, f *http2.MetaHeadersFrame) {
	if c.spareCount.Load() > 0 {
		select {
		case c.spare <- unstartedStream{st, f}:
			return
		default:
		}
	}
	go c.runHandlers(st, f)
}

// runHandlers serves st, then streams that waited for a handler slot;
// then, as one of at most cfg.spareHandlers, it waits for the next
// stream while the connection carries others: once it carries none
// (streamGone), its spare goroutines end.
func (c *h2Conn) runHandlers(st *h2Stream, f *http2.MetaHeadersFrame) {
	for {
		var end chan struct{}
		for st != nil {
			c.onStream(st, f)
			st, f, end = c.nextUnstarted()
		}
		if end == nil {
			return
		}
		select {
		case u := <-c.spare:
			st, f = u.st, u.f
		case <-end:
		case <-c.done:
		}
		c.spareCount.Add(-1)
		if st == nil {
			return
		}
	}
}

// nextUnstarted takes the next waiting stream the peer has not reset in
// the meantime, or gives the handler slot back. Then, while the
// connection carries streams and fewer than cfg.spareHandlers wait, the
// caller becomes a spare: end is the channel that ends its wait.
func (c *h2Conn) nextUnstarted() (st *h2Stream, f *http2.MetaHeadersFrame, end chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.unstarted) > 0 {
		u := c.unstarted[0]
		c.unstarted[0] = unstartedStream{}
		c.unstarted = c.unstarted[1:]
		if !u.st.removed {
			return u.st, u.f, nil
		}
	}
	c.unstarted = nil
	c.handlers--
	if len(c.streams) == 0 || c.spareCount.Load() >= c.cfg.spareHandlers {
		return nil, nil, nil
	}
	c.spareCount.Add(1)
	return nil, nil, c.sparesEnd
}

func (c *h2Conn) handleData(f *http2.DataFrame) error {
	n := int64(f.Length)
	data := f.Data()
	pad := n - int64(len(data))
	c.mu.Lock()
	c.recvWindow -= n
	if c.recvWindow < 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	st := c.streams[f.StreamID]
	if st == nil || st.remoteEnded {
		// Not ours to buffer; give the connection credit back.
		c.creditConnLocked(n)
		removed := false
		switch {
		case st == nil && c.idleLocked(f.StreamID):
			c.mu.Unlock()
			return fmt.Errorf("hbone: DATA on idle stream %d: %w", f.StreamID, http2.ConnectionError(http2.ErrCodeProtocol))
		case st == nil && c.resetSentLocked(f.StreamID):
			// Sent before the peer saw our RST_STREAM.
		case st == nil:
			// Closed (RFC 9113 §6.1).
			c.queueResetLocked(f.StreamID, http2.ErrCodeStreamClosed)
		default:
			// Half-closed (remote).
			removed = c.resetStreamLocked(st, http2.ErrCodeStreamClosed)
		}
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}
	st.recvWindow -= n
	if c.client && !st.respReceived || st.recvWindow < 0 {
		// Beyond the window, or DATA before a response's HEADERS (RFC
		// 9113 §8.1).
		code := http2.ErrCodeFlowControl
		if st.recvWindow >= 0 {
			code = http2.ErrCodeProtocol
		}
		removed := c.resetStreamLocked(st, code)
		c.creditConnLocked(n)
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}
	if st.answer != 0 {
		removed := c.answerDataLocked(st, n, int64(len(data)), f.StreamEnded())
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil
	}
	if st.wantLen >= 0 {
		// A request body is checked against its content-length (RFC
		// 9113 §8.1.1).
		st.gotLen += int64(len(data))
		if st.gotLen > st.wantLen || f.StreamEnded() && st.gotLen != st.wantLen {
			removed := c.resetStreamLocked(st, http2.ErrCodeProtocol)
			c.creditConnLocked(n)
			c.mu.Unlock()
			if removed {
				st.released()
			}
			return nil
		}
	}
	if pad > 0 && !st.closed && !st.readClosed {
		c.creditConnLocked(pad)
		st.creditLocked(pad)
	}
	switch {
	case st.closed || st.readClosed:
		c.creditConnLocked(n)
	case len(data) == 0:
	case st.deliverLocked(data):
	default:
		st.buf.Write(data)
	}
	removed := false
	if f.StreamEnded() {
		removed = st.remoteEndLocked()
	}
	st.cond.Broadcast()
	c.mu.Unlock()
	if removed {
		st.released()
	}
	return nil
}

func (c *h2Conn) handleGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goAwayRecv = true
	var removed []*h2Stream
	if c.client {
		for id, st := range c.streams {
			if id > f.LastStreamID {
				if st.resetLocked(retryableError{fmt.Errorf("hbone: stream refused by GOAWAY: %v", f.ErrCode)}) {
					removed = append(removed, st)
				}
			}
		}
	}
	idle := len(c.streams) == 0
	c.mu.Unlock()
	for _, st := range removed {
		st.released()
	}
	switch {
	case idle && c.cfg.http:
		// Answer ours, and let the client read what is in flight (a
		// PING's answer, say) before the connection ends.
		c.goAway(time.Time{})
	case idle:
		c.closeWithError(errConnClosed)
	}
}

// resetStream sends RST_STREAM for id and aborts the stream locally;
// with open, id counts as opened by the peer (a HEADERS in error).
func (c *h2Conn) resetStream(id uint32, code http2.ErrCode, open bool) {
	c.mu.Lock()
	st := c.streams[id]
	removed := false
	if st != nil {
		removed = c.resetStreamLocked(st, code)
	} else {
		c.queueResetLocked(id, code)
	}
	if open && !c.client && id > c.maxPeerID && id%2 == 1 {
		c.maxPeerID = id
	}
	c.mu.Unlock()
	if removed {
		st.released()
	}
}

// resetStreamLocked sends RST_STREAM for st and aborts it; it reports
// whether the stream thereby left the connection.
func (c *h2Conn) resetStreamLocked(st *h2Stream, code http2.ErrCode) bool {
	c.queueResetLocked(st.id, code)
	return st.resetLocked(streamResetError{code: code})
}

// queueResetLocked queues RST_STREAM for id, and remembers that we sent
// it. Caller holds mu.
func (c *h2Conn) queueResetLocked(id uint32, code http2.ErrCode) {
	c.sentResets[c.sentResetNext] = id
	c.sentResetNext = (c.sentResetNext + 1) % len(c.sentResets)
	c.queue(func() error { return c.fr.WriteRSTStream(id, code) })
}

// resetSentLocked reports whether we reset stream id lately.
func (c *h2Conn) resetSentLocked(id uint32) bool {
	for _, r := range c.sentResets {
		if r == id {
			return true
		}
	}
	return false
}

func (c *h2Conn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.connWindow)/4 {
		inc := uint32(c.recvUnacked)
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
		c.queue(func() error { return c.fr.WriteWindowUpdate(0, inc) })
	}
}

func (c *h2Conn) newStreamLocked(id uint32) *h2Stream {
	st := &h2Stream{
		c:          c,
		id:         id,
		wantLen:    -1,
		sendWindow: c.peerInitWindow,
		recvWindow: int64(c.cfg.streamWindow),
		respCh:     make(chan struct{}),
	}
	st.cond = sync.NewCond(&c.mu)
	c.streams[id] = st
	return st
}

// writeHeaders encodes and writes a header block for stream id.
func (c *h2Conn) writeHeaders(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.lockWrite()
	err := c.writeHeadersLocked(id, fields, endStream)
	if e := c.unlockWrite(); err == nil {
		err = e
	}
	return err
}

func (c *h2Conn) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) error {
	err := c.writeFrames(func() error {
		if err := c.writeQueued(); err != nil {
			return err
		}
		return c.writeHeaderFrames(id, fields, endStream)
	})
	if err != nil {
		go c.closeWithError(fmt.Errorf("hbone: write: %w", err))
		return err
	}
	return nil
}

// writeHeaderFrames encodes fields and writes HEADERS and CONTINUATION
// frames; caller holds wmu.
func (c *h2Conn) writeHeaderFrames(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.hbuf.Reset()
	for _, hf := range fields {
		if err := c.enc.WriteField(hf); err != nil {
			return err
		}
	}
	c.mu.Lock()
	max := int(c.peerMaxFrame)
	c.mu.Unlock()
	block := c.hbuf.Bytes()
	first := true
	for {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		var err error
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      id,
				BlockFragment: frag,
				EndStream:     endStream,
				EndHeaders:    len(block) == 0,
			})
			first = false
		} else {
			err = c.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
		if len(block) == 0 {
			return nil
		}
	}
}

// openStream sends a CONNECT request (client side). release is called
// once the stream is gone, or before openStream returns an error. It
// gives up when ctx ends: while it waits to write, leaving the connection
// as it was; while it writes, closing the connection, whose framing a
// half-written HEADERS would break.
func (c *h2Conn) openStream(ctx context.Context, authority string, hdr http.Header, release func()) (*h2Stream, error) {
	fields := []hpack.HeaderField{
		{Name: ":method", Value: http.MethodConnect},
		{Name: ":authority", Value: authority},
	}
	fields = appendHeaderFields(fields, hdr)
	return c.openStreamFields(ctx, "CONNECT", fields, false, release)
}

// openStreamFields opens a stream with a request of the given header
// fields, what names it in errors; end sends END_STREAM with them.
func (c *h2Conn) openStreamFields(ctx context.Context, what string, fields []hpack.HeaderField, end bool, release func()) (*h2Stream, error) {
	if release == nil {
		release = func() {}
	}
	if err := c.lockWriteCtx(ctx); err != nil {
		release()
		return nil, fmt.Errorf("hbone: waiting to send %s: %w", what, err)
	}
	defer c.unlockWriteCtx()
	c.mu.Lock()
	if c.err != nil || c.goAwayRecv || c.goAwaySent || c.nextID > math.MaxInt32 {
		err := c.err
		c.mu.Unlock()
		release()
		if err == nil {
			err = errConnClosed
		}
		return nil, retryableError{err}
	}
	id := c.nextID
	c.nextID += 2
	st := c.newStreamLocked(id)
	st.release = release
	c.mu.Unlock()
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			c.closeHard(fmt.Errorf("hbone: %s abandoned while being sent: %w", what, ctx.Err()))
		})
	}
	if end {
		// Before the write: the answer may come before it returns.
		c.mu.Lock()
		st.localEnded = true
		c.mu.Unlock()
	}
	// IDs must hit the wire in order, hence wmu held since allocation.
	err := c.writeHeadersLocked(id, fields, end)
	if !stop() {
		err = fmt.Errorf("hbone: sending %s: %w", what, ctx.Err())
	} else if err != nil {
		err = retryableError{fmt.Errorf("hbone: sending %s: %w", what, err)}
	}
	if err != nil {
		c.mu.Lock()
		removed := st.resetLocked(streamResetError{code: http2.ErrCodeInternal})
		c.mu.Unlock()
		if removed {
			st.released()
		}
		return nil, err
	}
	return st, nil
}

// lockWriteCtx takes wmu, or gives up when ctx ends: a write stalled on a
// peer that does not read can hold wmu for good. Only one such caller at a
// time waits for wmu, on a goroutine of its own, so giving up leaves at
// most one goroutine behind per connection, until the stall ends. The
// hot paths take wmu as it is.
func (c *h2Conn) lockWriteCtx(ctx context.Context) error {
	select {
	case c.wctx <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		<-c.wctx
		return err
	}
	if !c.wmu.TryLock() {
		locked := make(chan struct{})
		go func() {
			c.wmu.Lock()
			select {
			case locked <- struct{}{}:
			case <-ctx.Done():
				c.unlockWriteCtx()
			}
		}()
		select {
		case <-locked:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		c.unlockWriteCtx()
		return err
	}
	return nil
}

func (c *h2Conn) unlockWriteCtx() {
	c.unlockWrite()
	<-c.wctx
}

// goAway stops new streams and sends GOAWAY; the connection closes once
// that is written and the last stream has ended. It does not wait for the
// write: a peer that does not read can stall it (or a write holding wmu)
// for good. If the GOAWAY is not written by deadline (zero: within
// goAwayTimeout), the connection is closed hard.
func (c *h2Conn) goAway(deadline time.Time) {
	c.mu.Lock()
	if c.goAwaySent || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.goAwaySent = true
	last := c.maxPeerID
	c.mu.Unlock()
	wait := c.cfg.goAwayTimeout
	if !deadline.IsZero() {
		wait = time.Until(deadline)
	}
	timer := time.AfterFunc(wait, func() { c.closeHard(errGoAwayStalled) })
	go func() {
		err := c.writeNow(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
		if !timer.Stop() {
			return // closed hard meanwhile
		}
		if err != nil {
			c.closeWithError(fmt.Errorf("hbone: write: %w", err))
			return
		}
		c.mu.Lock()
		c.goAwayDone = true
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			c.endIdle()
		}
	}()
}

// endIdle closes a connection whose streams have all ended after a
// GOAWAY. Served inside a tunnel (http), it half-closes the tunnel
// first, and the read loop closes the connection once the client has
// closed its side too (or after goAwayTimeout): closing the tunnel at
// once would reset it, and the reset can overtake the last response on
// its way to the client, which then loses it.
func (c *h2Conn) endIdle() {
	if cw, ok := c.nc.(closeWriter); ok && c.cfg.http {
		c.lockWrite()
		err := cw.CloseWrite()
		c.wmu.Unlock()
		if err == nil {
			time.AfterFunc(c.cfg.goAwayTimeout, c.close)
			return
		}
	}
	c.closeWithError(errConnClosed)
}

// streamGone is called after a stream left the map.
func (c *h2Conn) streamGone() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && (c.goAwayDone || c.goAwayRecv)
	drain := c.goAwayWhenIdle && len(c.streams) == 0 && !c.goAwaySent
	if len(c.streams) == 0 && c.spareCount.Load() > 0 {
		close(c.sparesEnd)
		c.sparesEnd = make(chan struct{})
	}
	c.mu.Unlock()
	if idle {
		c.endIdle()
	}
	if drain {
		c.goAway(time.Time{})
	}
}

// usable reports whether new streams may be opened on the connection.
func (c *h2Conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil && !c.goAwayRecv && !c.goAwaySent && c.nextID < math.MaxInt32
}

func (c *h2Conn) maxStreams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peerMaxStreams > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(c.peerMaxStreams)
}

func (c *h2Conn) close() { c.closeWithError(errConnClosed) }

func (c *h2Conn) closeWithError(err error) { c.closeAfter(err, nil) }

// closeHard fails the connection with err and closes its socket under
// TLS: a write stalled on a peer that does not read fails at once, where
// closing the TLS conn would first try to send it an alert.
func (c *h2Conn) closeHard(err error) {
	c.closeAfter(err, func() { c.socket().Close() })
}

// socket is the connection under TLS and batching.
func (c *h2Conn) socket() net.Conn {
	raw := c.nc
	if u, ok := raw.(interface{ NetConn() net.Conn }); ok {
		raw = u.NetConn()
	}
	if b, ok := raw.(*batchConn); ok {
		raw = b.Conn
	}
	return raw
}

// closeAfter fails the connection's streams with err and closes it; if
// linger is set, it runs first, with the connection failed but the
// socket open.
func (c *h2Conn) closeAfter(err error, linger func()) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	var removed []*h2Stream
	for _, st := range c.streams {
		if st.resetLocked(fmt.Errorf("%w: %w", errConnClosed, err)) {
			removed = append(removed, st)
		}
	}
	c.sendCond.Broadcast()
	hooks := c.onClose
	c.onClose = nil
	c.mu.Unlock()
	close(c.done)
	if linger == nil && c.cfg.gather {
		// writeLoop sends what writers left gathered before it stops;
		// a peer that does not read gets goAwayTimeout for that, as for
		// a GOAWAY.
		t := time.NewTimer(c.cfg.goAwayTimeout)
		select {
		case <-c.writeLoopDone:
		case <-t.C:
		}
		t.Stop()
	}
	if linger != nil {
		for _, st := range removed {
			st.released()
		}
		removed = nil
		linger()
	}
	c.nc.Close()
	for _, st := range removed {
		st.released()
	}
	for _, fn := range hooks {
		fn()
	}
}

// addCloseHook runs fn once the connection is closed.
func (c *h2Conn) addCloseHook(fn func()) {
	c.mu.Lock()
	if c.err == nil {
		c.onClose = append(c.onClose, fn)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	fn()
}

func parseStatus(s string) (int, bool) {
	if len(s) != 3 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 100
}

func headerOf(f *http2.MetaHeadersFrame) http.Header {
	h := make(http.Header)
	for _, hf := range f.RegularFields() {
		h.Add(hf.Name, hf.Value)
	}
	return h
}

// checkRequest checks the header fields of a request, and reports
// whether it is a CONNECT (RFC 9113 §8.3.1, §8.5); an error means it is
// malformed. The framer has checked the pseudo-header fields' names,
// order and uniqueness, and the fields' names and values.
func checkRequest(f *http2.MetaHeadersFrame) (connect bool, err error) {
	var method, authority, scheme, path string
	var seen uint8 // a bit per pseudo-header field
	const haveScheme, havePath, haveProtocol = 1 << 2, 1 << 3, 1 << 4
	for _, hf := range f.PseudoFields() {
		var bit uint8
		switch hf.Name {
		case ":method":
			method, bit = hf.Value, 1<<0
		case ":authority":
			authority, bit = hf.Value, 1<<1
		case ":scheme":
			scheme, bit = hf.Value, haveScheme
		case ":path":
			path, bit = hf.Value, havePath
		case ":protocol":
			bit = haveProtocol
		default:
			return false, fmt.Errorf("hbone: response pseudo-header field %s in a request", hf.Name)
		}
		if seen&bit != 0 {
			// The framer rejects these already.
			return false, fmt.Errorf("hbone: duplicate pseudo-header field %s", hf.Name)
		}
		seen |= bit
	}
	if err := checkFields(f.RegularFields()); err != nil {
		return false, err
	}
	switch {
	case method == "":
		return false, errors.New("hbone: request without :method")
	case seen&haveProtocol != 0:
		// Extended CONNECT (RFC 8441) needs a setting we do not send.
		return false, errors.New("hbone: :protocol in a request, and extended CONNECT is not enabled")
	case method == http.MethodConnect:
		if seen&(haveScheme|havePath) != 0 {
			return false, errors.New("hbone: CONNECT with :scheme or :path")
		}
		if authority == "" {
			return false, errors.New("hbone: CONNECT without :authority")
		}
		return true, nil
	case scheme == "" || path == "":
		return false, errors.New("hbone: request without :scheme or :path, or with an empty one")
	}
	return false, nil
}

// checkFields rejects connection-specific header fields, which HTTP/2
// forbids, and a TE other than "trailers" (RFC 9113 §8.2.2).
func checkFields(fields []hpack.HeaderField) error {
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return fmt.Errorf("hbone: connection-specific header field %q", hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return fmt.Errorf("hbone: te %q, not trailers", hf.Value)
			}
		}
	}
	return nil
}

// contentLength returns the value of the content-length fields, -1 if
// there is none; several must agree.
func contentLength(fields []hpack.HeaderField) (int64, error) {
	n := int64(-1)
	for _, hf := range fields {
		if hf.Name != "content-length" {
			continue
		}
		v, err := strconv.ParseInt(hf.Value, 10, 64)
		if err != nil || v < 0 || hf.Value[0] == '+' || n >= 0 && v != n {
			return 0, fmt.Errorf("hbone: bad content-length %q", hf.Value)
		}
		n = v
	}
	return n, nil
}

// appendHeaderFields adds hdr, lower-cased, minus connection-specific
// fields that HTTP/2 forbids (RFC 9113 §8.2.2) and values it cannot carry.
func appendHeaderFields(fields []hpack.HeaderField, hdr http.Header) []hpack.HeaderField {
	for k, vs := range hdr {
		fields = appendFieldValues(fields, k, vs)
	}
	return fields
}

func validHeaderName(s string) bool {
	if s == "" || s[0] == ':' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || ('A' <= c && c <= 'Z') || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// notConnectBody is the body of the 405 answer to a request that is not
// a CONNECT.
const notConnectBody = "hbone: this port serves HTTP/2 CONNECT tunnels only\n"

// answerLocked sets up a new stream whose request the engine answers
// itself, without a handler: 431 if its header list was cut short, at
// once (a CONNECT waits for its answer before it ends); 405 for any
// method but CONNECT, once the request has ended, so that all of it is
// checked. It reports whether the stream left the connection.
func (c *h2Conn) answerLocked(st *h2Stream, f *http2.MetaHeadersFrame) bool {
	st.wantLen = -1
	st.remoteEnded = f.StreamEnded()
	if f.Truncated {
		st.answer = http.StatusRequestHeaderFieldsTooLarge
		return c.sendAnswerLocked(st)
	}
	st.answer = http.StatusMethodNotAllowed
	st.noBody = f.PseudoValue("method") == http.MethodHead
	wantLen, err := contentLength(f.RegularFields())
	if err != nil || st.remoteEnded && wantLen > 0 {
		// Malformed (RFC 9113 §8.1.1).
		return c.resetStreamLocked(st, http2.ErrCodeProtocol)
	}
	st.wantLen = wantLen
	if !st.remoteEnded {
		return false
	}
	return c.sendAnswerLocked(st)
}

// answerDataLocked takes a DATA frame of n octets, payload of them data,
// on a stream the engine answers: the data is dropped, its credit given
// back, and counted against the content-length (RFC 9113 §8.1.1). It
// reports whether the stream left the connection.
func (c *h2Conn) answerDataLocked(st *h2Stream, n, payload int64, end bool) bool {
	c.creditConnLocked(n)
	st.creditLocked(n)
	st.gotLen += payload
	if st.wantLen >= 0 && (st.gotLen > st.wantLen || end && st.gotLen != st.wantLen) {
		return c.resetStreamLocked(st, http2.ErrCodeProtocol)
	}
	if !end {
		return false
	}
	st.remoteEnded = true
	return c.sendAnswerLocked(st)
}

// handleTrailersLocked takes a second HEADERS on a stream the engine
// answers, or on a request (http): trailers, which end the request and
// carry no pseudo-header field (RFC 9113 §8.1). It reports whether the
// stream left the connection.
func (c *h2Conn) handleTrailersLocked(st *h2Stream, f *http2.MetaHeadersFrame) bool {
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 || checkFields(f.RegularFields()) != nil ||
		st.wantLen >= 0 && st.gotLen != st.wantLen {
		return c.resetStreamLocked(st, http2.ErrCodeProtocol)
	}
	if st.answer == 0 {
		st.trailer = headerOf(f)
		return st.remoteEndLocked()
	}
	st.remoteEnded = true
	return c.sendAnswerLocked(st)
}

// sendAnswerLocked sends st's answer: HEADERS first, then as much of the
// body as flow control allows; the rest waits in c.blocked for credit.
// Once all is sent, a request still open is reset with NO_ERROR (RFC
// 9113 §8.1). Nothing blocks: the frames go through the control queue.
// It reports whether the stream left the connection.
func (c *h2Conn) sendAnswerLocked(st *h2Stream) bool {
	if !st.answered {
		st.answered = true
		fields := []hpack.HeaderField{{Name: ":status", Value: itoa3(st.answer)}}
		if st.answer == http.StatusMethodNotAllowed {
			fields = append(fields, hpack.HeaderField{Name: "allow", Value: http.MethodConnect})
			if !st.noBody {
				st.answerBody = []byte(notConnectBody)
				fields = append(fields,
					hpack.HeaderField{Name: "content-type", Value: "text/plain; charset=utf-8"},
					hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(notConnectBody))})
			}
		}
		id, end := st.id, len(st.answerBody) == 0
		c.queue(func() error { return c.writeHeaderFrames(id, fields, end) })
	}
	for len(st.answerBody) > 0 {
		m := min(int64(len(st.answerBody)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		if m <= 0 {
			if !st.blocked {
				st.blocked = true
				c.blocked = append(c.blocked, st)
			}
			return false
		}
		chunk := st.answerBody[:m]
		st.answerBody = st.answerBody[m:]
		st.sendWindow -= m
		c.sendWindow -= m
		id, end := st.id, len(st.answerBody) == 0
		c.queue(func() error { return c.fr.WriteData(id, end, chunk) })
	}
	st.localEnded = true
	if !st.remoteEnded {
		return c.resetStreamLocked(st, http2.ErrCodeNo)
	}
	return st.maybeRemoveLocked()
}

// unblockLocked takes st, which left the connection, off c.blocked.
func (c *h2Conn) unblockLocked(st *h2Stream) {
	st.blocked = false
	c.blocked = slices.DeleteFunc(c.blocked, func(b *h2Stream) bool { return b == st })
}

// sendBlockedLocked goes on with the answers that wait for flow-control
// credit; it returns the streams that thereby left the connection.
func (c *h2Conn) sendBlockedLocked() []*h2Stream {
	if len(c.blocked) == 0 || c.sendWindow <= 0 {
		return nil
	}
	var removed []*h2Stream
	q := c.blocked
	c.blocked = nil
	for _, st := range q {
		st.blocked = false
		if c.sendAnswerLocked(st) {
			removed = append(removed, st)
		}
	}
	return removed
}
