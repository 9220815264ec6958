package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// ServerConfig configures Serve.
type ServerConfig struct {
	// Handler answers each request. It is required.
	Handler http.Handler
	// Limits bounds request heads and trailer sections.
	Limits Limits
	// ReadHeaderTimeout bounds the reading of a request head (0:
	// DefaultReadHeaderTimeout, negative: none). For a connection's first
	// request it runs from Serve's start, so a client that connects and
	// says nothing is dropped after it; for later requests it runs from
	// the request's first byte, the wait before that being IdleTimeout's.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection (0: DefaultIdleTimeout, negative: none).
	IdleTimeout time.Duration
	// ReadTimeout fails a request body read that gets no byte for this
	// long (0: DefaultReadTimeout, negative: none).
	ReadTimeout time.Duration
	// WriteTimeout fails a write to which the client takes no byte for
	// this long (0: DefaultWriteTimeout, negative: none). The handler's
	// Write or Flush returns the error and the connection is closed.
	WriteTimeout time.Duration
	// BaseContext, if set, is the parent of every request's context
	// instead of Serve's ctx. Either way a request's context ends when
	// its handler returns, when the connection ends, or when the client
	// is seen to go away (including a client that half-closes after its
	// request, as net/http has it).
	BaseContext context.Context
	// Drain, when it ends, starts a graceful close: the request in flight
	// is answered with "Connection: close", and a connection waiting for
	// its next request is closed. A server that is going away uses it so
	// that keep-alive clients move to another before it stops.
	Drain context.Context
	// Logger receives debug records of rejected requests and error
	// records of handler panics (nil: slog.Default()).
	Logger *slog.Logger
}

// errHandlerRequired is Serve's error for a config without a Handler.
var errHandlerRequired = errors.New("http1: ServerConfig.Handler is required")

// Serve reads requests from c and answers them, one at a time, until the
// client closes, an error, or ctx ends; it then closes c, unless a
// handler hijacked it. When ctx ends c is closed at once, whatever is in
// flight.
//
// Serve returns nil when the connection ended normally: the client
// closed or stayed idle past IdleTimeout, a response asked to close,
// ctx ended, or a handler hijacked c. It returns a *ProtocolError for a
// request it refused (after answering it), and otherwise the error that
// broke the exchange (a timeout, the client leaving mid-request, a write
// failure).
func Serve(ctx context.Context, c net.Conn, cfg ServerConfig) error {
	if cfg.Handler == nil {
		c.Close()
		return errHandlerRequired
	}
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.ReadHeaderTimeout = orDefault(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.ReadTimeout = orDefault(cfg.ReadTimeout, DefaultReadTimeout)
	cfg.WriteTimeout = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	parent := cfg.BaseContext
	if parent == nil {
		parent = ctx
	}

	sc := &serverConn{conn: c, cfg: &cfg}
	sc.ctx, sc.cancel = context.WithCancel(parent)
	sc.cr.init(c, sc.cancel)
	sc.cw = connWriter{conn: c, timeout: cfg.WriteTimeout}
	sc.br = getReader(&sc.cr)
	sc.bw = getWriter(&sc.cw)
	sc.hr = headReader{br: sc.br, lim: cfg.Limits}
	if a := c.RemoteAddr(); a != nil {
		sc.remoteAddr = a.String()
	}
	stop := context.AfterFunc(ctx, func() {
		sc.cancel()
		if !sc.hijacked.Load() {
			c.Close()
		}
	})
	defer stop()
	if cfg.Drain != nil {
		stopDrain := context.AfterFunc(cfg.Drain, sc.drain)
		defer stopDrain()
	}
	err := sc.serve()
	sc.cancel()
	sc.cr.stop()
	if sc.hijacked.Load() {
		return nil
	}
	if ctx.Err() != nil {
		err = nil
	}
	putReader(sc.br)
	putWriter(sc.bw)
	return err
}

// serverConn is one connection being served.
type serverConn struct {
	conn   net.Conn
	cfg    *ServerConfig
	ctx    context.Context // ends with the connection
	cancel context.CancelFunc
	cr     connReader
	cw     connWriter
	br     *bufio.Reader
	bw     *bufio.Writer
	hr     headReader
	// pending holds a response's first body bytes until the head is
	// written, so that a small response gets a Content-Length.
	pending []byte
	// keys is scratch space for sorting a header's keys.
	keys       []string
	scratch    [24]byte
	remoteAddr string
	hijacked   atomic.Bool

	// mu orders a drain with the wait for the next request: a drain that
	// comes during the wait ends it, one that comes before prevents it.
	mu   sync.Mutex
	idle bool
}

// drain ends the wait for the next request, if it is under way
// (ServerConfig.Drain).
func (sc *serverConn) drain() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.idle {
		sc.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// isDraining reports whether ServerConfig.Drain has ended: responses
// then close the connection. It is read directly rather than set by
// drain, which runs a moment after.
func (sc *serverConn) isDraining() bool {
	return sc.cfg.Drain != nil && sc.cfg.Drain.Err() != nil
}

// awaitNext waits up to IdleTimeout for the next request's first byte. It
// reports false when there is none: the client closed, went quiet, or the
// server is draining.
func (sc *serverConn) awaitNext() bool {
	sc.mu.Lock()
	if sc.isDraining() {
		sc.mu.Unlock()
		return false
	}
	sc.idle = true
	// The deadline is set here, under mu, so that a drain's deadline is
	// never overwritten by this one; it also bounds the background read
	// started during the last request, if any.
	setReadDeadline(sc.conn, sc.cfg.IdleTimeout)
	sc.mu.Unlock()
	sc.cr.waitPending()
	_, err := sc.br.Peek(1)
	sc.mu.Lock()
	sc.idle = false
	sc.mu.Unlock()
	return err == nil
}

// errDone ends serve without an error: the connection is finished.
var errDone = errors.New("connection done")

func (sc *serverConn) serve() error {
	for first := true; ; first = false {
		err := sc.serveOne(first)
		if err == nil {
			continue
		}
		if err == errDone {
			err = nil
		}
		if !sc.hijacked.Load() {
			sc.conn.Close()
		}
		return err
	}
}

// exchange holds one request's server-side state, allocated together.
// The parsed head stays on serveOne's stack: the handler gets a copy of
// its request, made with the request's context, so only what that copy
// points to (its URL) lives here.
type exchange struct {
	url  url.URL
	body requestBody
	w    response
}

// serveOne reads one request, runs the handler and finishes the
// response. It returns nil to go on with the next request.
func (sc *serverConn) serveOne(first bool) error {
	c := sc.conn
	if !first && sc.br.Buffered() == 0 && !sc.awaitNext() {
		return errDone // the client closed, went quiet, ctx ended, or draining
	}
	setReadDeadline(c, sc.cfg.ReadHeaderTimeout)

	ex := new(exchange)
	head := requestHead{url: &ex.url}
	err := sc.hr.read(true)
	if err == nil {
		err = parseRequestHead(&sc.hr, sc.hr.text(), &head)
	}
	switch {
	case err == nil:
	case err == io.EOF || first && errors.Is(err, os.ErrDeadlineExceeded) && sc.hr.n == 0:
		return errDone
	case err == errHeadTooLarge:
		return sc.reject(&ProtocolError{Status: http.StatusRequestURITooLong, Reason: "request line too long"})
	default:
		var pe *ProtocolError
		if errors.As(err, &pe) {
			return sc.reject(pe)
		}
		return fmt.Errorf("http1: reading request head: %w", err)
	}

	if head.body == bodyChunked {
		// A probe and its malformed chunks usually arrive in one piece:
		// check the framing of what is already here, so that such a
		// request is refused before any backend sees its head. A framing
		// error further on can only cut the forwarded body short.
		if pe := sc.prescanChunked(); pe != nil {
			return sc.reject(pe)
		}
	}

	ctx, cancel := context.WithCancel(sc.ctx)
	defer cancel()
	head.req.RemoteAddr = sc.remoteAddr
	if head.body == bodyNone {
		head.req.Body = http.NoBody
	} else {
		ex.body.init(sc, &head, &ex.w)
		head.req.Body = &ex.body
	}
	req := head.req.WithContext(ctx)
	ex.body.b.trailer = &req.Trailer
	ex.w.init(sc, req, &head)

	c.SetReadDeadline(time.Time{})
	sc.cr.setProgressTimeout(sc.cfg.ReadTimeout)
	if head.body == bodyNone && sc.br.Buffered() == 0 {
		sc.cr.startBackgroundRead()
	}
	aborted := sc.runHandler(&ex.w, req)
	if sc.hijacked.Load() {
		return errDone
	}
	sc.cr.setProgressTimeout(0)
	var keep bool
	if aborted {
		// The handler gave up on the response: end the connection without
		// completing it, so that the client sees it cut short.
		sc.cr.abortPendingRead()
		ex.w.mu.Lock()
		if ex.w.committed {
			sc.bw.Flush()
		}
		ex.w.mu.Unlock()
		err = errors.New("http1: handler aborted the response")
	} else {
		keep, err = ex.w.finish(&ex.body, head.body != bodyNone)
	}
	cancel()
	if !keep {
		// Closing first unblocks a body read still running on some
		// goroutine of the handler's; abandon waits for it, so that the
		// buffers are no longer in use when Serve returns.
		sc.conn.Close()
		ex.body.abandon()
		if err == nil {
			err = errDone
		}
		return err
	}
	return nil
}

// runHandler calls the handler, recovering a panic; it reports whether
// the handler panicked.
func (sc *serverConn) runHandler(w *response, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				sc.cfg.Logger.Error("http1: handler panic", "remote", sc.remoteAddr, "panic", v, "stack", string(debug.Stack()))
			}
		}
	}()
	sc.cfg.Handler.ServeHTTP(w, req)
	return false
}

// reject answers a request the parser refused, and ends the connection.
func (sc *serverConn) reject(pe *ProtocolError) error {
	sc.cfg.Logger.Debug("http1: request refused", "remote", sc.remoteAddr, "status", pe.Status, "reason", pe.Reason)
	sc.writeError(pe.Status, pe.Reason)
	sc.bw.Flush()
	sc.closeLingering()
	return pe
}

// writeError writes a complete error response with a short text body,
// closing the connection.
func (sc *serverConn) writeError(status int, reason string) {
	bw := sc.bw
	writeStatusLine(bw, status, sc.scratch[:0])
	bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
	bw.Write(appendInt(sc.scratch[:0], int64(len(reason)+1)))
	bw.WriteString("\r\n\r\n")
	bw.WriteString(reason)
	bw.WriteString("\n")
}

// closeLingering closes the connection after a response the client may
// not have read yet while it still sends.
func (sc *serverConn) closeLingering() {
	sc.cr.abortPendingRead()
	closeLingering(sc.conn)
}

func setReadDeadline(c net.Conn, d time.Duration) {
	if d > 0 {
		c.SetReadDeadline(time.Now().Add(d))
	} else {
		c.SetReadDeadline(time.Time{})
	}
}

// requestBody is a request's Body. It serialises reads (the proxy may read
// the body on another goroutine than the handler's), sends 100 Continue
// on the first read when the client expects it, and starts the
// background read once the body has ended.
type requestBody struct {
	sc *serverConn
	w  *response
	// closed is set by Close, which must not wait for a Read in progress.
	closed atomic.Bool

	mu sync.Mutex
	b  bodyReader
	// needContinue: the client waits for 100 Continue before sending.
	needContinue bool
	// finished: the handler returned; reads now fail.
	finished bool
}

func (rb *requestBody) init(sc *serverConn, head *requestHead, w *response) {
	rb.sc, rb.w = sc, w
	rb.needContinue = head.expectContinue
	rb.b.reset(sc.br, head.body, head.contentLength, http.StatusBadRequest, &sc.hr, nil)
}

func (rb *requestBody) Read(p []byte) (int, error) {
	if rb.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.finished {
		return 0, http.ErrBodyReadAfterClose
	}
	if rb.needContinue {
		rb.needContinue = false
		if err := rb.w.writeContinue(); err != nil {
			return 0, err
		}
	}
	n, err := rb.b.Read(p)
	if err == io.EOF && rb.sc.br.Buffered() == 0 {
		rb.sc.cr.startBackgroundRead()
	}
	return n, err
}

// Close stops the handler's reading; what it left unread is the server's
// to drop or not after the handler returns.
func (rb *requestBody) Close() error {
	rb.closed.Store(true)
	return nil
}

// abandon ends all access to the body.
func (rb *requestBody) abandon() {
	rb.mu.Lock()
	rb.finished = true
	rb.mu.Unlock()
}

// check looks at what the handler left of the body, without waiting. It
// reports whether the connection may still be kept (the body ended, or
// what is left may be dropped), and the body's framing error if the
// handler met one.
func (rb *requestBody) check() (reusable bool, perr *ProtocolError) {
	if !rb.mu.TryLock() {
		// A goroutine the handler left behind is still reading (say, to
		// send the body to a backend that has already answered). Waiting
		// for it could take up to ReadTimeout: the connection goes
		// instead, and closing it ends that read.
		rb.closed.Store(true)
		return false, nil
	}
	defer rb.mu.Unlock()
	switch {
	case rb.needContinue:
		// The client has not sent the body and may never: the connection
		// can't be relied on.
		return false, nil
	case rb.b.err == io.EOF:
		return true, nil
	case rb.b.err != nil:
		errors.As(rb.b.err, &perr)
		return false, perr
	case rb.b.kind == bodyFixed && rb.b.remaining > maxDiscard:
		return false, nil
	}
	return true, nil
}

// finish ends the handler's access to the body and drops what it left,
// up to maxDiscard. It reports whether the body ended cleanly, so that
// the connection can carry another request.
func (rb *requestBody) finish() bool {
	if !rb.mu.TryLock() {
		rb.closed.Store(true)
		return false
	}
	defer rb.mu.Unlock()
	rb.finished = true
	if rb.needContinue {
		return false
	}
	if rb.b.err == nil {
		n, _ := io.CopyN(io.Discard, &rb.b, maxDiscard+1)
		if n > maxDiscard {
			return false
		}
	}
	return rb.b.err == io.EOF
}

// prescanChunked decodes the chunked body bytes already buffered, without
// consuming them, and returns the framing error they hold, if any.
func (sc *serverConn) prescanChunked() *ProtocolError {
	buf, _ := sc.br.Peek(sc.br.Buffered())
	if len(buf) == 0 {
		return nil
	}
	br := bufio.NewReaderSize(bytes.NewReader(buf), max(len(buf), 16))
	var trailer http.Header
	hr := headReader{br: br, lim: sc.cfg.Limits}
	var b bodyReader
	b.reset(br, bodyChunked, 0, http.StatusBadRequest, &hr, &trailer)
	var scratch [512]byte
	for {
		_, err := b.Read(scratch[:])
		var pe *ProtocolError
		switch {
		case err == nil:
			continue
		case errors.As(err, &pe):
			return pe
		default:
			return nil // the end, or the end of what is buffered
		}
	}
}
