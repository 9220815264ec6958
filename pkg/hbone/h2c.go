package hbone

import (
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2CConfig configures ServeH2C.
type H2CConfig struct {
	Handler http.Handler
	// MaxConcurrentStreams is advertised and enforced; 0 means
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (as HTTP/2 counts
	// it); a longer one is answered 431. 0 means 64 KiB.
	MaxHeaderBytes int
	// StreamWindow and ConnWindow are the receive windows: what a client
	// may send ahead of the handlers reading it. 0 means 1 MiB each.
	StreamWindow, ConnWindow uint32
	// PrefaceTimeout bounds the wait for the client preface; 0, none.
	PrefaceTimeout time.Duration
	// IdleTimeout sends GOAWAY and closes a connection that had no
	// stream for between one and two of it; 0, never.
	IdleTimeout time.Duration
	// WriteByteTimeout fails the connection once a write to it has made
	// no progress for that long; 0, never.
	WriteByteTimeout time.Duration
	// Drain, once done, sends GOAWAY: the connection closes once its
	// streams have ended. A connection that comes while it is done gets
	// its GOAWAY once it has served a stream and is idle, so that its
	// client is not sent away before one request is answered.
	Drain  <-chan struct{}
	Logger *slog.Logger
}

// h2cSpareHandlers is how many handler goroutines a connection keeps
// waiting for its next request.
const h2cSpareHandlers = 8

// ServeH2C serves HTTP/2 with prior knowledge (h2c) on nc with the
// engine of HBONE's tunnels, for the requests that travel inside one: a
// proxy that reads them (the waypoint). Handlers get net/http's types;
// the request's context ends when its stream does, or ctx. It returns
// once the connection is closed: at ctx's end at the latest.
func ServeH2C(ctx context.Context, nc net.Conn, cfg H2CConfig) error {
	if cfg.Handler == nil {
		nc.Close()
		return errors.New("hbone: ServeH2C without a handler")
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = 1 << 20
	}
	if cfg.ConnWindow == 0 {
		cfg.ConnWindow = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	maxHeaderList := uint32(maxHeaderListSize)
	if cfg.MaxHeaderBytes > 0 {
		maxHeaderList = uint32(min(cfg.MaxHeaderBytes, 1<<24))
	}
	if cfg.PrefaceTimeout > 0 {
		nc.SetReadDeadline(time.Now().Add(cfg.PrefaceTimeout))
	}
	if err := readClientPreface(nc); err != nil {
		refusePreface(nc)
		return err
	}
	nc.SetReadDeadline(time.Time{})
	var w io.Writer = nc
	if cfg.WriteByteTimeout > 0 {
		w = &deadlineWriter{nc: nc, timeout: cfg.WriteByteTimeout}
	}
	c := newH2Conn(writerConn{Conn: nc, w: w}, false, h2Config{
		streamWindow:  cfg.StreamWindow,
		connWindow:    cfg.ConnWindow,
		maxStreams:    cfg.MaxConcurrentStreams,
		logger:        cfg.Logger,
		http:          true,
		maxHeaderList: maxHeaderList,
		spareHandlers: h2cSpareHandlers,
	})
	base, cancel := context.WithCancel(ctx)
	defer cancel()
	remote := nc.RemoteAddr().String()
	c.onStream = func(st *h2Stream, f *http2.MetaHeadersFrame) {
		serveH2CStream(base, st, f, remote, cfg.Handler, cfg.Logger)
	}
	if err := c.start(); err != nil {
		return err
	}
	stopCtx := context.AfterFunc(ctx, func() { c.closeHard(ctx.Err()) })
	defer stopCtx()
	drain := cfg.Drain
	select {
	case <-drain:
		c.mu.Lock()
		c.goAwayWhenIdle = true
		c.mu.Unlock()
		drain = nil
	default:
	}
	var idle <-chan time.Time
	if cfg.IdleTimeout > 0 {
		t := time.NewTicker(cfg.IdleTimeout)
		defer t.Stop()
		idle = t.C
	}
	var lastID uint32
	for {
		select {
		case <-drain:
			c.goAway(time.Time{})
			drain = nil
		case <-idle:
			// Idle: no stream now, and none opened since the last tick.
			c.mu.Lock()
			quiet := len(c.streams) == 0 && c.handlers == 0 && c.maxPeerID == lastID
			lastID = c.maxPeerID
			c.mu.Unlock()
			if quiet {
				c.goAway(time.Time{})
				idle = nil
			}
		case <-c.done:
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			if errors.Is(err, errConnClosed) {
				return nil
			}
			return err
		}
	}
}

// refusePreface ends a connection whose preface was not HTTP/2's with a
// GOAWAY (RFC 9113 §3.4), and lets the client read it: closing with its
// bytes unread would reset the connection.
func refusePreface(nc net.Conn) {
	deadline := time.Now().Add(defaultGoAwayTimeout)
	nc.SetDeadline(deadline)
	fr := http2.NewFramer(nc, nil)
	if fr.WriteGoAway(0, http2.ErrCodeProtocol, nil) == nil {
		if cw, ok := nc.(closeWriter); ok && cw.CloseWrite() == nil {
			io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
		}
	}
	nc.Close()
}

// writerConn is a net.Conn whose writes go through w.
type writerConn struct {
	net.Conn
	w io.Writer
}

func (c writerConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite half-closes the connection if it can.
func (c writerConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// deadlineWriter gives each write to nc timeout to complete. The engine
// writes at most a buffer (or one frame) at a time, so a write that times
// out made no progress worth the name for that long.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.nc.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: %w", ErrWriteByteTimeout, err)
	}
	return n, err
}

// serveH2CStream runs h for one request.
func serveH2CStream(base context.Context, st *h2Stream, f *http2.MetaHeadersFrame, remote string, h http.Handler, log *slog.Logger) {
	r, err := newH2CRequest(st, f)
	if err != nil {
		// The pseudo-header fields passed checkRequest: the URL is
		// what does not parse.
		st.respond(http.StatusBadRequest, true)
		return
	}
	r.RemoteAddr = remote
	ctx, cancel := context.WithCancel(base)
	defer cancel()
	st.cancelWhenGone(cancel)
	r = r.WithContext(ctx)
	if b, ok := r.Body.(*h2cBody); ok {
		b.r = r // its trailers go to the request the handler has
	}
	w := &h2cResponseWriter{st: st, header: make(http.Header), declared: -1, head: r.Method == http.MethodHead}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				log.Error("hbone: HTTP handler panic", "panic", p, "stack", string(debug.Stack()))
			}
			st.abort(http2.ErrCodeInternal)
			w.release()
			return
		}
		w.finish()
	}()
	h.ServeHTTP(w, r)
}

// newH2CRequest builds the request of a HEADERS frame that checkRequest
// passed.
func newH2CRequest(st *h2Stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	method := f.PseudoValue("method")
	authority := f.PseudoValue("authority")
	path := f.PseudoValue("path")
	hdr := make(http.Header, len(f.Fields))
	var cookies []string
	for _, hf := range f.RegularFields() {
		if hf.Name == "cookie" {
			// Split cookie fields are joined for HTTP/1.1 semantics
			// (RFC 9113 §8.2.3).
			cookies = append(cookies, hf.Value)
			continue
		}
		k := http.CanonicalHeaderKey(hf.Name)
		hdr[k] = append(hdr[k], hf.Value)
	}
	if len(cookies) > 0 {
		hdr["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = hdr.Get("Host")
	}
	delete(hdr, "Host")
	var u *url.URL
	var err error
	switch {
	case method == http.MethodConnect:
		u = &url.URL{Host: authority}
		path = authority
	case method == http.MethodOptions && path == "*":
		u = &url.URL{Path: "*"}
	default:
		u, err = url.ParseRequestURI(path)
		if err != nil {
			return nil, err
		}
	}
	r := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     hdr,
		Host:       authority,
		RequestURI: path,
	}
	if names := trailerNames(hdr["Trailer"]); len(names) > 0 {
		r.Trailer = make(http.Header, len(names))
		for _, k := range names {
			r.Trailer[k] = nil
		}
	}
	if f.StreamEnded() {
		r.Body = http.NoBody
		return r, nil
	}
	r.ContentLength = st.wantLen
	r.Body = &h2cBody{st: st, r: r}
	return r, nil
}

// h2cBody is a request's body: the stream's data, then its trailers into
// the request's Trailer.
// One goroutine reads it; Close may come from another, and ends a Read
// that waits.
type h2cBody struct {
	st     *h2Stream
	r      *http.Request
	closed atomic.Bool
	eof    bool
}

var errBodyClosed = errors.New("http: invalid Read on closed Body")

func (b *h2cBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.st.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		b.st.c.mu.Lock()
		trailer := b.st.trailer
		b.st.c.mu.Unlock()
		// As net/http: trailers the request declared (a Trailer field)
		// are kept, in the map the request had from the start.
		if b.r.Trailer != nil {
			for k, v := range trailer {
				b.r.Trailer[k] = v
			}
		}
	case err != nil && b.closed.Load():
		err = errBodyClosed
	case err != nil:
		err = fmt.Errorf("hbone: reading request body: %w", err)
	}
	return n, err
}

func (b *h2cBody) Close() error {
	if !b.closed.Swap(true) {
		b.st.closeRead()
	}
	return nil
}

// h2cResponseWriter is a handler's http.ResponseWriter. Small bodies are
// gathered and leave with the HEADERS (and the END_STREAM) in one write
// to the connection.
type h2cResponseWriter struct {
	st     *h2Stream
	header http.Header
	// status is what WriteHeader set; 0 until then.
	status int
	// sent: the response HEADERS are out.
	sent bool
	// head: the request was a HEAD, and the body is dropped.
	head     bool
	declared int64 // content-length, -1 for none
	written  int64
	buf      *[]byte
	err      error
	// trailers are the names a Trailer field declared at WriteHeader.
	trailers []string
}

// h2cBufSize is how much of a body is gathered before it is sent.
const h2cBufSize = 16 << 10

var h2cBufs = sync.Pool{New: func() any { b := make([]byte, 0, h2cBufSize); return &b }}

func (w *h2cResponseWriter) Header() http.Header { return w.header }

func (w *h2cResponseWriter) WriteHeader(code int) {
	if w.status != 0 || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return // no such thing in HTTP/2
		}
		// Interim: sent at once, the header as it stands.
		fields := w.fields(code)
		w.st.wlock.Lock()
		w.err = w.st.c.writeHeaders(w.st.id, fields, false)
		w.st.wlock.Unlock()
		return
	}
	w.status = code
	if v := w.header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.declared = n
		}
	}
	w.trailers = trailerNames(w.header["Trailer"])
}

// trailerNames are the field names a Trailer field declares, those a
// trailer may carry.
func trailerNames(values []string) []string {
	var names []string
	for _, line := range values {
		for _, k := range strings.Split(line, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if k != "" && httpguts.ValidTrailerHeader(k) {
				names = append(names, k)
			}
		}
	}
	return names
}

func (w *h2cResponseWriter) bodyAllowed() bool {
	return !w.head && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *h2cResponseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.bodyAllowed() {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.buf == nil && len(p) >= h2cBufSize {
		// Large: straight from the caller's buffer.
		if err := w.send(p, false, nil); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if w.buf == nil {
		w.buf = h2cBufs.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	if len(*w.buf) >= h2cBufSize {
		if err := w.send(*w.buf, false, nil); err != nil {
			return 0, err
		}
		*w.buf = (*w.buf)[:0]
	}
	return len(p), nil
}

// Flush sends the header and what is gathered of the body.
func (w *h2cResponseWriter) Flush() { w.FlushError() }

// FlushError is Flush, reporting a failure (http.ResponseController).
func (w *h2cResponseWriter) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	var p []byte
	if w.buf != nil {
		p = *w.buf
	}
	if err := w.send(p, false, nil); err != nil {
		return err
	}
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
	}
	return nil
}

// finish ends the response once the handler has returned.
func (w *h2cResponseWriter) finish() {
	defer w.release()
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		w.st.abort(http2.ErrCodeInternal)
		return
	}
	if w.declared >= 0 && w.written != w.declared && w.bodyAllowed() {
		// The body is short of its content-length: the client must not
		// take it for whole.
		w.st.abort(http2.ErrCodeInternal)
		return
	}
	var p []byte
	if w.buf != nil {
		p = *w.buf
	}
	w.send(p, true, w.trailerFields())
}

func (w *h2cResponseWriter) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		h2cBufs.Put(w.buf)
		w.buf = nil
	}
}

// fields are the response's header fields: :status, then the header
// minus what HTTP/2 forbids and the trailers.
func (w *h2cResponseWriter) fields(status int) []hpack.HeaderField {
	fields := make([]hpack.HeaderField, 1, 1+len(w.header))
	fields[0] = hpack.HeaderField{Name: ":status", Value: itoa3(status)}
	for k, vs := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Trailer" {
			continue
		}
		fields = appendFieldValues(fields, k, vs)
	}
	return fields
}

// trailerFields are the trailers the handler set: under declared names
// or with http.TrailerPrefix; nil for none.
func (w *h2cResponseWriter) trailerFields() []hpack.HeaderField {
	var fields []hpack.HeaderField
	for _, k := range w.trailers {
		fields = appendFieldValues(fields, k, w.header[k])
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			fields = appendFieldValues(fields, name, vs)
		}
	}
	return fields
}

// appendFieldValues adds the field k, lower-cased, with the values that
// may go on the wire; connection-specific fields are left out (RFC 9113
// §8.2.2).
func appendFieldValues(fields []hpack.HeaderField, k string, vs []string) []hpack.HeaderField {
	lk := lowerHeaderName(k)
	switch lk {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host":
		return fields
	}
	if !validHeaderName(lk) {
		return fields
	}
	for _, v := range vs {
		if httpguts.ValidHeaderFieldValue(v) {
			fields = append(fields, hpack.HeaderField{Name: lk, Value: v})
		}
	}
	return fields
}

// lowerHeaderName lower-cases k without allocating when it is already.
func lowerHeaderName(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(k)
		}
	}
	return k
}

// send writes the response HEADERS if they are not out yet, then p as
// DATA within flow control, then trailers; end ends the stream with the
// last frame. A first send with all of a small body costs one write to
// the connection.
func (w *h2cResponseWriter) send(p []byte, end bool, trailers []hpack.HeaderField) error {
	st := w.st
	c := st.c
	st.wlock.Lock()
	defer st.wlock.Unlock()
	if w.sent && len(p) == 0 && !end {
		return nil
	}
	var head []hpack.HeaderField
	if !w.sent {
		head = w.fields(w.status)
		w.sent = true
	}
	for {
		var n int
		if len(p) > 0 {
			var err error
			if n, err = st.reserveSend(len(p)); err != nil {
				w.err = err
				return err
			}
		}
		chunk := p[:n]
		p = p[n:]
		last := len(p) == 0
		removed := false
		err := c.write(func() error {
			// Control frames queued first: a SETTINGS whose window let
			// this DATA out is acknowledged before it, as peers expect.
			if err := c.writeQueued(); err != nil {
				return err
			}
			if last && end {
				removed = st.endSendingLocked()
			}
			if head != nil {
				// END_STREAM on HEADERS: nothing else follows.
				if err := c.writeHeaderFrames(st.id, head, end && last && n == 0 && trailers == nil); err != nil {
					return err
				}
			}
			if n > 0 || last && end && trailers == nil && head == nil {
				if err := c.fr.WriteData(st.id, last && end && trailers == nil, chunk); err != nil {
					return err
				}
			}
			if last && end && trailers != nil {
				return c.writeHeaderFrames(st.id, trailers, true)
			}
			return nil
		})
		head = nil
		if removed {
			st.released()
		}
		if err != nil {
			c.closeWithError(err)
			w.err = err
			return err
		}
		if last {
			if end {
				st.askToStopSending()
			}
			return nil
		}
	}
}
