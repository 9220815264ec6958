package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ClientConfig configures a ClientConn.
type ClientConfig struct {
	// Limits bounds response heads and trailer sections.
	Limits Limits
	// ResponseHeaderTimeout bounds the wait for a response head once the
	// request is sent (0 or negative: none; the request's context bounds
	// it).
	ResponseHeaderTimeout time.Duration
	// ReadTimeout fails a response body read that gets no byte for this
	// long (0: DefaultReadTimeout, negative: none).
	ReadTimeout time.Duration
	// WriteTimeout fails a request write to which the backend takes no
	// byte for this long (0: DefaultWriteTimeout, negative: none).
	WriteTimeout time.Duration
	// Logger receives debug records (nil: slog.Default()).
	Logger *slog.Logger
}

// max1xx bounds the informational responses before a final one.
const max1xx = 10

// ClientConn is one HTTP/1.1 connection to a backend. It carries one
// request at a time: RoundTrip may be called again once Reusable reports
// true. Reusable, Done and Close are safe to call from any goroutine.
//
// While the connection is idle, a background read watches it, so that a
// backend closing it (or sending bytes nobody asked for) makes it
// unusable at once, rather than failing the next request.
type ClientConn struct {
	conn net.Conn
	cfg  ClientConfig
	cr   connReader
	cw   connWriter
	br   *bufio.Reader
	bw   *bufio.Writer
	hr   headReader
	// breakFn is breakConn as a func value, made once: the end of each
	// exchange's context calls it.
	breakFn func()
	// keys and scratch are scratch space for writing heads.
	keys    []string
	scratch [24]byte

	mu    sync.Mutex
	state connState
	// wake starts the first-byte reader's next wait; firstByte carries
	// its result to a RoundTrip waiting for a response.
	wake      chan struct{}
	firstByte chan error
	done      chan struct{}
	// The request body writer: its progress, result, and end.
	wstate writeState
	werr   error
	wdone  chan struct{}
}

type connState uint8

const (
	stateIdle     connState = iota
	stateBusy               // a request is out or its response is being read
	stateBroken             // closed, or in an unknown state
	stateUpgraded           // handed to a 101 response's Body
)

type writeState uint8

const (
	writeNone    writeState = iota // no body being written
	writeRunning                   // copying the body
	writeFinal                     // flushing the end of the request
	writeDone
)

// NewClientConn returns a ClientConn speaking HTTP/1.1 on c.
func NewClientConn(c net.Conn, cfg ClientConfig) *ClientConn {
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.ReadTimeout = orDefault(cfg.ReadTimeout, DefaultReadTimeout)
	cfg.WriteTimeout = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.ResponseHeaderTimeout < 0 {
		cfg.ResponseHeaderTimeout = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cc := &ClientConn{conn: c, cfg: cfg, done: make(chan struct{}),
		wake: make(chan struct{}, 1), firstByte: make(chan error, 1)}
	cc.cr.init(c, nil)
	cc.cw = connWriter{conn: c, timeout: cfg.WriteTimeout}
	// A backend connection lives long, in a pool; its buffers are its own
	// (an abandoned body writer may still hold them after Close).
	cc.br = bufio.NewReaderSize(&cc.cr, bufSize)
	cc.bw = bufio.NewWriterSize(&cc.cw, bufSize)
	cc.hr = headReader{br: cc.br, lim: cfg.Limits}
	cc.breakFn = cc.breakConn
	go cc.firstByteReader()
	cc.wake <- struct{}{}
	return cc
}

// Reusable reports whether the connection can take a request now: it is
// idle (the last response was read to its end, its request fully sent)
// and nothing has broken it.
func (cc *ClientConn) Reusable() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.state == stateIdle
}

// Done is closed once the connection can never carry a request again:
// it was closed, broke, the backend closed it, or it was upgraded.
func (cc *ClientConn) Done() <-chan struct{} { return cc.done }

// Close closes the connection. After a 101 response the connection
// belongs to that response's Body, and Close leaves it alone.
func (cc *ClientConn) Close() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.state == stateUpgraded {
		return nil
	}
	cc.breakLocked()
	return nil
}

func (cc *ClientConn) breakLocked() {
	if cc.state == stateBroken {
		return
	}
	if cc.state != stateUpgraded {
		close(cc.done)
		close(cc.wake)
	}
	cc.state = stateBroken
	cc.conn.Close()
}

func (cc *ClientConn) breakConn() {
	cc.mu.Lock()
	cc.breakLocked()
	cc.mu.Unlock()
}

// firstByteReader waits for the first byte of each response, from the
// moment the connection goes idle: while idle, its wait notices the
// backend closing the connection (or sending bytes nobody asked for) and
// makes the connection unusable at once, rather than failing the next
// request; once a request is out, the same wait is for the response.
// It ends with the connection.
func (cc *ClientConn) firstByteReader() {
	for range cc.wake {
		_, err := cc.br.Peek(1)
		cc.mu.Lock()
		switch cc.state {
		case stateBusy:
			select {
			case cc.firstByte <- err: // one result per wake: never blocks
			default:
			}
			cc.mu.Unlock()
			continue
		case stateIdle:
			cc.cfg.Logger.Debug("http1: backend connection ended while idle", "err", err)
			cc.breakLocked()
		}
		cc.mu.Unlock()
		return
	}
}

// idleLocked makes the connection idle and starts the wait for the next
// response's first byte.
func (cc *ClientConn) idleLocked() {
	cc.state = stateIdle
	cc.cr.setProgressTimeout(0)
	cc.conn.SetReadDeadline(time.Time{})
	cc.wake <- struct{}{}
}

// RoundTrip sends req and reads the response head. The request line's
// target is req.URL's escaped path and query (its Opaque if set; its
// Host for CONNECT); Host is req.Host, else req.URL.Host. req.Header
// follows in sorted key order, without Host, Content-Length and
// Transfer-Encoding, which RoundTrip writes: Content-Length when
// req.ContentLength >= 0 and there is a body (and "Content-Length: 0"
// for a POST, PUT or PATCH without one), chunked framing when it is -1,
// with req.Trailer sent after the body, and "Connection: close" when
// req.Close is set. Nothing else is added. An "Expect: 100-continue"
// field goes out as it is, but the body is not held back for the 100.
//
// The body is sent while the response is read, so a backend may answer
// early; RoundTrip closes req.Body, possibly after it returns. The
// response body streams from the connection; when it has been read to
// its end the connection is idle again (if it can be reused).
// Informational responses: 100 is consumed; others (103, ...) go to the
// Got1xxResponse hook of an httptrace.ClientTrace in req's context. A
// 101 (or a 2xx to CONNECT) is returned with a Body that is the raw
// connection (an io.ReadWriteCloser); the ClientConn is then spent.
//
// An error that came before any byte of a response wraps ErrNoResponse,
// unless it is the end of req's context or a failure to read req.Body:
// those are returned as they are (wrapped). A malformed response is a
// *ProtocolError with Status 502. Any error leaves the connection
// unusable, except one refusing req before anything was sent.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	return cc.RoundTripContext(req.Context(), req)
}

// RoundTripContext is RoundTrip with ctx in the place of req's context,
// for a caller that would otherwise copy req to give it one.
func (cc *ClientConn) RoundTripContext(ctx context.Context, req *http.Request) (*http.Response, error) {
	cc.mu.Lock()
	if cc.state != stateIdle {
		cc.mu.Unlock()
		closeBody(req)
		return nil, &noResponseError{ErrConnUnusable}
	}
	cc.state, cc.wstate, cc.werr, cc.wdone = stateBusy, writeNone, nil, nil
	cc.mu.Unlock()

	framing, err := cc.writeHead(req)
	if err != nil {
		cc.bw.Reset(&cc.cw)
		closeBody(req)
		cc.mu.Lock()
		if cc.state == stateBusy {
			cc.state = stateIdle
		}
		// The first-byte reader may have finished meanwhile, or not.
		select {
		case err := <-cc.firstByte:
			cc.breakLocked()
			cc.cfg.Logger.Debug("http1: backend connection ended while idle", "err", err)
		default:
		}
		cc.mu.Unlock()
		return nil, err
	}

	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, cc.breakFn)
	}
	if framing.kind == bodyNone {
		closeBody(req)
		if err := cc.bw.Flush(); err != nil {
			stop()
			cc.breakConn()
			return nil, cc.failure(ctx, &noResponseError{fmt.Errorf("http1: writing request: %w", err)})
		}
	} else {
		cc.mu.Lock()
		cc.wstate, cc.wdone = writeRunning, make(chan struct{})
		cc.mu.Unlock()
		go cc.writeBody(req, framing, cc.wdone)
	}

	resp, err := cc.readResponse(req, ctx)
	if err != nil {
		stop()
		cc.breakConn()
		return nil, cc.failure(ctx, err)
	}
	return cc.finishHead(ctx, req, resp, stop, framing)
}

// failure returns the error a failed round trip reports: the context's
// if it ended, the request body's if reading it failed, else err.
func (cc *ClientConn) failure(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("http1: round trip: %w", context.Cause(ctx))
	}
	cc.mu.Lock()
	werr := cc.werr
	cc.mu.Unlock()
	var se *bodySourceError
	if errors.As(werr, &se) {
		return werr
	}
	return err
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// requestFraming is how a request's body goes out.
type requestFraming struct {
	kind   bodyKind // bodyNone, bodyFixed or bodyChunked
	length int64
	close  bool // the request asks to close the connection after it
}

// writeHead validates req and writes its head into the buffer.
func (cc *ClientConn) writeHead(req *http.Request) (requestFraming, error) {
	var f requestFraming
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return f, fmt.Errorf("http1: invalid method %q", method)
	}
	if req.URL == nil {
		return f, errors.New("http1: request without URL")
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host != "" && !validAuthority(host) {
		return f, fmt.Errorf("http1: invalid Host %q", host)
	}
	var path, query string
	withQuery := false
	switch {
	case method == http.MethodConnect:
		path = req.URL.Host
		if path == "" {
			path = host
		}
		if !validAuthority(path) {
			return f, fmt.Errorf("http1: invalid CONNECT target %q", path)
		}
	case req.URL.Opaque != "":
		path = req.URL.Opaque
	default:
		path = req.URL.EscapedPath()
		if path == "" {
			path = "/"
		}
		withQuery = req.URL.RawQuery != "" || req.URL.ForceQuery
		query = req.URL.RawQuery
	}
	if !validTarget(path) || query != "" && !validTarget(query) {
		return f, fmt.Errorf("http1: invalid request-target %q", path)
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case !hasBody && req.ContentLength > 0:
		return f, fmt.Errorf("http1: ContentLength %d without a Body", req.ContentLength)
	case hasBody && req.ContentLength > 0:
		f.kind, f.length = bodyFixed, req.ContentLength
	case hasBody && req.ContentLength < 0:
		f.kind = bodyChunked
	}
	f.close = req.Close || hasToken(req.Header["Connection"], "close")

	bw := cc.bw
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if withQuery {
		bw.WriteByte('?')
		bw.WriteString(query)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if dropped := writeFields(bw, req.Header, &cc.keys, clientOwned); dropped > 0 {
		return f, errors.New("http1: invalid request header field")
	}
	switch {
	case f.kind == bodyFixed:
		bw.WriteString("Content-Length: ")
		bw.Write(appendInt(cc.scratch[:0], f.length))
		bw.WriteString("\r\n")
	case f.kind == bodyChunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case hasBody || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close && !hasToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	return f, nil
}

// clientOwned names the fields RoundTrip writes itself.
func clientOwned(k string) bool {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding":
		return true
	}
	return false
}

// copyBufSize is the size of the buffer a request body is read into.
const copyBufSize = 32 << 10

var copyBufPool sync.Pool

func getCopyBuf() *[]byte {
	if p, ok := copyBufPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, copyBufSize)
	return &b
}

// writeBody sends the request body, then the end of the request, and
// records the outcome. It stops early when the exchange is abandoned
// (the connection is then closed under it).
func (cc *ClientConn) writeBody(req *http.Request, f requestFraming, done chan struct{}) {
	defer close(done)
	err := cc.copyBody(req, f)
	req.Body.Close()
	cc.mu.Lock()
	cc.wstate, cc.werr = writeDone, err
	var se *bodySourceError
	if err != nil && (errors.As(err, &se) || errors.Is(err, os.ErrDeadlineExceeded)) {
		// The backend waits for bytes that will not come: unblock the
		// response reader.
		cc.breakLocked()
	}
	cc.mu.Unlock()
}

func (cc *ClientConn) copyBody(req *http.Request, f requestFraming) error {
	bufp := getCopyBuf()
	defer copyBufPool.Put(bufp)
	buf, bw := *bufp, cc.bw
	var sent int64
	for f.kind == bodyChunked || sent < f.length {
		p := buf
		if f.kind == bodyFixed {
			p = buf[:min(int64(len(buf)), f.length-sent)]
		}
		n, rerr := req.Body.Read(p)
		if n > 0 {
			sent += int64(n)
			if f.kind == bodyFixed && sent == f.length {
				// From here the backend may have the whole request.
				cc.setWriteState(writeFinal)
			}
			if f.kind == bodyChunked {
				bw.Write(appendChunkHeader(cc.scratch[:0], n))
			}
			bw.Write(p[:n])
			if f.kind == bodyChunked {
				bw.WriteString("\r\n")
			}
			// Stream: what was read goes out now, unless more is at hand.
			if rerr == nil && (f.kind == bodyChunked || sent < f.length) {
				if err := bw.Flush(); err != nil {
					return fmt.Errorf("http1: writing request body: %w", err)
				}
			}
		}
		if rerr == io.EOF {
			if f.kind == bodyFixed && sent < f.length {
				return &bodySourceError{fmt.Errorf("body ended after %d of %d bytes: %w", sent, f.length, io.ErrUnexpectedEOF)}
			}
			break
		}
		if rerr != nil {
			return &bodySourceError{rerr}
		}
	}
	cc.setWriteState(writeFinal)
	if f.kind == bodyChunked {
		bw.WriteString("0\r\n")
		if len(req.Trailer) > 0 {
			writeFields(bw, req.Trailer, &cc.keys, func(k string) bool { return forbiddenTrailers[k] })
		}
		bw.WriteString("\r\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("http1: writing request: %w", err)
	}
	return nil
}

func (cc *ClientConn) setWriteState(s writeState) {
	cc.mu.Lock()
	cc.wstate = s
	cc.mu.Unlock()
}

// readResponse reads the final response head, passing informational ones
// to the request's trace hook.
func (cc *ClientConn) readResponse(req *http.Request, ctx context.Context) (*clientResponse, error) {
	if d := cc.cfg.ResponseHeaderTimeout; d > 0 {
		cc.conn.SetReadDeadline(time.Now().Add(d))
	} else {
		cc.conn.SetReadDeadline(time.Time{})
	}
	select {
	case err := <-cc.firstByte:
		if err != nil {
			return nil, &noResponseError{err}
		}
	case <-cc.done:
		return nil, &noResponseError{net.ErrClosed}
	}
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; n1xx++ {
		err := cc.hr.read(true)
		if err != nil {
			if n1xx == 0 && cc.hr.n == 0 {
				return nil, &noResponseError{err}
			}
			var pe *ProtocolError
			if errors.As(err, &pe) {
				return nil, &ProtocolError{Status: http.StatusBadGateway, Reason: "malformed response: " + pe.Reason}
			}
			if err == errHeadTooLarge {
				return nil, &ProtocolError{Status: http.StatusBadGateway, Reason: "response status line too long"}
			}
			return nil, fmt.Errorf("http1: reading response: %w", err)
		}
		s := cc.hr.text()
		cr := new(clientResponse)
		if err := parseResponseHead(&cc.hr, s, &cr.resp); err != nil {
			return nil, err
		}
		code := cr.resp.StatusCode
		if code >= 200 || code == http.StatusSwitchingProtocols {
			return cr, nil
		}
		if n1xx == max1xx {
			return nil, &ProtocolError{Status: http.StatusBadGateway, Reason: "too many informational responses"}
		}
		if code == http.StatusContinue {
			if trace != nil && trace.Got100Continue != nil {
				trace.Got100Continue()
			}
			continue
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(cr.resp.Header)); err != nil {
				return nil, fmt.Errorf("http1: informational response refused: %w", err)
			}
		}
	}
}

// clientResponse is a response and its body, allocated together.
type clientResponse struct {
	resp http.Response
	body clientBody
}

// parseResponseHead parses a status line and fields into resp, checking
// them as strictly as requests (but answering 502).
func parseResponseHead(h *headReader, s string, resp *http.Response) error {
	bad := func(reason string) error {
		return &ProtocolError{Status: http.StatusBadGateway, Reason: reason}
	}
	line := s[h.start.lo:h.start.hi]
	proto, rest, ok := strings.Cut(line, " ")
	if !ok {
		return bad("malformed status line")
	}
	major, minor, ok := parseVersion(proto)
	if !ok || major != 1 || minor > 1 {
		return bad("unsupported response version")
	}
	if len(rest) < 3 || len(rest) > 3 && rest[3] != ' ' {
		return bad("malformed status line")
	}
	code := 0
	for _, c := range []byte(rest[:3]) {
		if c < '0' || c > '9' {
			return bad("malformed status code")
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return bad("malformed status code")
	}
	if len(rest) > 3 && !validFieldValue(rest[4:]) {
		return bad("malformed reason phrase")
	}
	resp.Status = rest
	resp.StatusCode = code
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = proto, 1, minor
	resp.Header = h.header(s)
	return nil
}

// finishHead decides the response's framing (RFC 9112 6.3) and hands
// it back with its body.
func (cc *ClientConn) finishHead(ctx context.Context, req *http.Request, cr *clientResponse, stop func() bool, f requestFraming) (*http.Response, error) {
	resp := &cr.resp
	resp.Request = req
	h, code := resp.Header, resp.StatusCode
	conn := h["Connection"]
	keep := !f.close && !hasToken(conn, "close") && (resp.ProtoMinor == 1 || hasToken(conn, "keep-alive"))
	fail := func(reason string) (*http.Response, error) {
		stop()
		cc.breakConn()
		return nil, &ProtocolError{Status: http.StatusBadGateway, Reason: reason}
	}
	var kind bodyKind
	var n int64
	switch {
	case code == http.StatusSwitchingProtocols || req.Method == http.MethodConnect && code/100 == 2:
		return cc.upgrade(resp, stop)
	case req.Method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified:
		kind, resp.ContentLength = bodyNone, 0
		if req.Method == http.MethodHead {
			resp.ContentLength = -1
			if cls := h["Content-Length"]; len(cls) == 1 {
				if v, ok := parseContentLength(cls[0]); ok {
					resp.ContentLength = v
				}
			}
		}
	default:
		tes, cls := h["Transfer-Encoding"], h["Content-Length"]
		switch {
		case len(tes) > 0:
			switch {
			case resp.ProtoMinor == 0:
				return fail("Transfer-Encoding in an HTTP/1.0 response")
			case len(tes) > 1 || !asciiEqualFold(tes[0], "chunked"):
				return fail("unsupported Transfer-Encoding")
			}
			// Chunked framing wins over a Content-Length (RFC 9112 6.3).
			delete(h, "Transfer-Encoding")
			delete(h, "Content-Length")
			kind, resp.ContentLength = bodyChunked, -1
			resp.TransferEncoding = []string{"chunked"}
			if decl := h["Trailer"]; len(decl) > 0 {
				resp.Trailer = declaredTrailers(decl)
			}
		case len(cls) > 1:
			return fail("more than one Content-Length field")
		case len(cls) == 1:
			v, ok := parseContentLength(cls[0])
			if !ok {
				return fail("invalid Content-Length")
			}
			kind, n, resp.ContentLength = bodyFixed, v, v
			if v == 0 {
				kind = bodyNone
			}
		default:
			kind, resp.ContentLength, keep = bodyUntilClose, -1, false
		}
	}
	resp.Close = !keep
	if kind == bodyNone {
		resp.Body = http.NoBody
		cc.responseDone(keep, stop)
		return resp, nil
	}
	cb := &cr.body
	cb.cc, cb.resp, cb.keep, cb.stop, cb.ctx = cc, resp, keep, stop, ctx
	cb.b.reset(cc.br, kind, n, http.StatusBadGateway, &cc.hr, &resp.Trailer)
	resp.Body = cb
	cc.conn.SetReadDeadline(time.Time{})
	cc.cr.setProgressTimeout(cc.cfg.ReadTimeout)
	return resp, nil
}

// upgrade hands the connection to a 101 (or CONNECT) response's body,
// once the request is wholly sent.
func (cc *ClientConn) upgrade(resp *http.Response, stop func() bool) (*http.Response, error) {
	cc.mu.Lock()
	wd := cc.wdone
	cc.mu.Unlock()
	if wd != nil {
		<-wd
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !stop() || cc.werr != nil || cc.state != stateBusy {
		cc.breakLocked()
		return nil, errors.New("http1: connection lost while switching protocols")
	}
	cc.state = stateUpgraded
	close(cc.done)
	close(cc.wake)
	cc.cr.setProgressTimeout(0)
	cc.conn.SetDeadline(time.Time{})
	resp.ContentLength = -1
	resp.Body = &upgradedConn{br: cc.br, conn: cc.conn}
	return resp, nil
}

// responseDone is called when a response has been read to its end: the
// connection goes idle if it can be reused, or is closed.
func (cc *ClientConn) responseDone(keep bool, stop func() bool) {
	cc.mu.Lock()
	ws, wd := cc.wstate, cc.wdone
	cc.mu.Unlock()
	switch ws {
	case writeRunning:
		// The backend answered before the request was sent: stop
		// sending. The rest of the body can't be unsent, so the
		// connection goes.
		keep = false
	case writeFinal:
		<-wd
	}
	if !stop() {
		keep = false // the request's context ended; the connection is closing
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !keep || cc.werr != nil || cc.state != stateBusy {
		cc.breakLocked()
		return
	}
	cc.idleLocked()
}

// clientBody is a response body read from the connection.
type clientBody struct {
	cc   *ClientConn
	resp *http.Response
	ctx  context.Context
	keep bool
	stop func() bool

	closed atomic.Bool
	mu     sync.Mutex
	b      bodyReader
	ended  bool
}

func (cb *clientBody) Read(p []byte) (int, error) {
	if cb.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	cb.mu.Lock()
	defer cb.mu.Unlock()
	n, err := cb.b.Read(p)
	if err == nil || cb.ended {
		return n, err
	}
	cb.ended = true
	if err == io.EOF {
		cb.cc.responseDone(cb.keep, cb.stop)
		return n, err
	}
	cb.stop()
	cb.cc.breakConn()
	if cb.ctx.Err() != nil {
		err = context.Cause(cb.ctx)
	}
	return n, fmt.Errorf("http1: reading response body: %w", err)
}

// Close ends the body. Closing it before its end closes the connection:
// what is left of the response can't be skipped reliably.
func (cb *clientBody) Close() error {
	if cb.closed.Swap(true) {
		return nil
	}
	if !cb.mu.TryLock() {
		// A Read is in progress, so the body has not ended.
		cb.cc.breakConn()
		return nil
	}
	defer cb.mu.Unlock()
	if !cb.ended {
		cb.ended = true
		cb.stop()
		cb.cc.breakConn()
	}
	return nil
}

// upgradedConn is the connection after a 101: the bytes already buffered,
// then the connection's.
type upgradedConn struct {
	br   *bufio.Reader
	conn net.Conn
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.conn.Write(p) }
func (u *upgradedConn) Close() error                { return u.conn.Close() }

// CloseWrite half-closes the connection, where it allows that.
func (u *upgradedConn) CloseWrite() error {
	if cw, ok := u.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("http1: connection cannot half-close")
}
