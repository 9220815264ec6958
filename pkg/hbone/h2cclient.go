package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2CClientConfig configures an H2CClientConn.
type H2CClientConfig struct {
	// StreamWindow and ConnWindow are the receive windows: how much of
	// the responses the server may send ahead of their reading. 0 means
	// DefaultStreamWindow and DefaultConnWindow.
	StreamWindow, ConnWindow uint32
	// WriteByteTimeout fails the connection once a write to it has made
	// no progress for that long; 0, never.
	WriteByteTimeout time.Duration
	// PingInterval and PingTimeout are ClientConfig's: a PING once the
	// connection has read nothing for PingInterval, and ErrPeerSilent if
	// nothing comes PingTimeout after it; 0, never.
	PingInterval, PingTimeout time.Duration
	Logger                    *slog.Logger
}

// H2CClientConn is one HTTP/2 connection with prior knowledge (h2c) to a
// server, over a connection the caller set up (a tunnel), with the engine
// of HBONE's tunnels. It is safe for concurrent use.
type H2CClientConn struct {
	c        *h2Conn
	reserved atomic.Int32
}

// ErrH2CUnavailable is returned by Reserve when the connection can take no
// more streams.
var ErrH2CUnavailable = errors.New("hbone: HTTP/2 connection has no stream available")

// NewH2CClientConn sends the client preface on nc and returns the
// connection; it owns nc from then on.
func NewH2CClientConn(nc net.Conn, cfg H2CClientConfig) (*H2CClientConn, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var conn net.Conn = nc
	if cfg.WriteByteTimeout > 0 {
		conn = writerConn{Conn: nc, w: &deadlineWriter{nc: nc, timeout: cfg.WriteByteTimeout}}
	}
	c := newH2Conn(conn, true, h2Config{
		streamWindow: cfg.StreamWindow,
		connWindow:   cfg.ConnWindow,
		logger:       cfg.Logger,
		http:         true,
		pingInterval: cfg.PingInterval,
		pingTimeout:  cfg.PingTimeout,
	})
	if err := c.start(); err != nil {
		return nil, err
	}
	return &H2CClientConn{c: c}, nil
}

// Reserve takes a stream for a RoundTrip to come, or fails with
// ErrH2CUnavailable if the server's stream limit is reached or the
// connection takes no new streams.
func (cc *H2CClientConn) Reserve() error {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.goAwayRecv || c.goAwaySent || c.nextID > math.MaxInt32 {
		return ErrH2CUnavailable
	}
	if int64(len(c.streams))+int64(cc.reserved.Load()) >= int64(c.peerMaxStreams) {
		return ErrH2CUnavailable
	}
	cc.reserved.Add(1)
	return nil
}

// Release gives back a stream Reserve took and no RoundTrip used.
func (cc *H2CClientConn) Release() { cc.unreserve() }

func (cc *H2CClientConn) unreserve() {
	for {
		n := cc.reserved.Load()
		if n <= 0 || cc.reserved.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// Err reports why the connection failed; nil while it works, even if it
// takes no new streams (after a GOAWAY) but still carries some.
func (cc *H2CClientConn) Err() error {
	cc.c.mu.Lock()
	defer cc.c.mu.Unlock()
	return cc.c.err
}

// Close closes the connection; requests in flight fail.
func (cc *H2CClientConn) Close() error {
	cc.c.close()
	return nil
}

// IsRefused reports whether err says a request was not processed by the
// server, so that it may be sent again elsewhere: REFUSED_STREAM, a
// GOAWAY that left it out, or a connection that failed or took no new
// streams before it was sent.
func IsRefused(err error) bool {
	var re retryableError
	if errors.As(err, &re) || errors.Is(err, ErrH2CUnavailable) {
		return true
	}
	var se streamResetError
	return errors.As(err, &se) && se.remote && se.code == http2.ErrCodeRefusedStream
}

// RoundTrip sends req and returns the response, its body streaming from
// the connection; it takes a stream Reserve took, if any. req's context
// ending before the response body has been read to its end resets the
// stream. The request body is sent on a goroutine of its own, then
// req.Trailer if set.
func (cc *H2CClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	cc.unreserve()
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	fields, err := requestFields(req, hasBody)
	if err != nil {
		if hasBody {
			req.Body.Close()
		}
		return nil, err
	}
	st, err := cc.c.openStreamFields(ctx, "request", fields, !hasBody, nil)
	if err != nil {
		if hasBody {
			req.Body.Close()
		}
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.abort(http2.ErrCodeCancel) })
	if hasBody {
		go sendRequestBody(st, req)
	}
	<-st.respCh
	c := cc.c
	c.mu.Lock()
	status, header, reset, noBody := st.status, st.header, st.reset, st.noBody
	c.mu.Unlock()
	if status == 0 {
		stop()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if reset == nil {
			reset = errConnClosed
		}
		return nil, reset
	}
	resp := &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		ContentLength: -1,
		Request:       req,
	}
	if v := header["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	}
	remain := resp.ContentLength
	if req.Method == http.MethodHead {
		remain = -1 // the length of the body a GET would get
	}
	if noBody && resp.ContentLength < 0 {
		resp.ContentLength = 0 // END_STREAM on the HEADERS
	}
	resp.Body = &h2cRespBody{st: st, resp: resp, remain: remain, head: req.Method == http.MethodHead, stop: stop}
	return resp, nil
}

// requestFields are req's header fields: the pseudo-header fields, then
// its header minus what HTTP/2 forbids.
func requestFields(req *http.Request, hasBody bool) ([]hpack.HeaderField, error) {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if req.URL == nil {
		return nil, errors.New("hbone: request without a URL")
	}
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = "http"
	}
	path := req.URL.RequestURI()
	if req.Method == http.MethodOptions && req.URL.Path == "*" && req.URL.RawQuery == "" {
		path = "*"
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	fields := make([]hpack.HeaderField, 0, 5+len(req.Header))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: method},
		hpack.HeaderField{Name: ":scheme", Value: scheme},
		hpack.HeaderField{Name: ":authority", Value: host},
		hpack.HeaderField{Name: ":path", Value: path},
	)
	for k, vs := range req.Header {
		switch k {
		case "Content-Length", "Trailer":
			continue
		case "Te":
			// The one value HTTP/2 allows (RFC 9113 §8.2.2).
			for _, v := range vs {
				if strings.EqualFold(strings.TrimSpace(v), "trailers") {
					fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
					break
				}
			}
			continue
		}
		fields = appendFieldValues(fields, k, vs)
	}
	if len(req.Trailer) > 0 {
		names := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			names = append(names, http.CanonicalHeaderKey(k))
		}
		fields = append(fields, hpack.HeaderField{Name: "trailer", Value: strings.Join(names, ",")})
	}
	switch {
	case req.ContentLength > 0 && hasBody:
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)})
	case !hasBody && (method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch):
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: "0"})
	}
	return fields, nil
}

// sendRequestBody copies req's body to st, then its trailers or
// END_STREAM; a body that fails resets the stream.
func sendRequestBody(st *h2Stream, req *http.Request) {
	defer req.Body.Close()
	bp := h2cBufs.Get().(*[]byte)
	defer h2cBufs.Put(bp)
	buf := (*bp)[:cap(*bp)]
	var sent int64
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if req.ContentLength > 0 && sent > req.ContentLength {
				st.abort(http2.ErrCodeCancel)
				return
			}
			if _, werr := st.Write(buf[:n]); werr != nil {
				return // the stream is gone: its answer says why
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			st.abort(http2.ErrCodeCancel)
			return
		}
	}
	if req.ContentLength > 0 && sent != req.ContentLength {
		st.abort(http2.ErrCodeCancel)
		return
	}
	var trailers []hpack.HeaderField
	for k, vs := range req.Trailer {
		trailers = appendFieldValues(trailers, k, vs)
	}
	st.closeWriteWith(trailers)
}

// h2cRespBody is a response's body: the stream's data, checked against
// the content-length, then the trailers into the response's Trailer. One
// goroutine reads it; Close may come from another.
type h2cRespBody struct {
	st     *h2Stream
	resp   *http.Response
	remain int64 // -1 for unknown
	head   bool
	stop   func() bool
	once   sync.Once
	closed atomic.Bool
	err    error // sticky, once the body ended
}

func (b *h2cRespBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errBodyClosed
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.st.Read(p)
	if b.remain >= 0 {
		if int64(n) > b.remain {
			b.end()
			b.st.abort(http2.ErrCodeProtocol)
			b.err = errors.New("hbone: response body longer than its content-length")
			return 0, b.err
		}
		b.remain -= int64(n)
	}
	switch {
	case err == io.EOF && b.remain > 0 && !b.head:
		err = io.ErrUnexpectedEOF
	case err == io.EOF:
		c := b.st.c
		c.mu.Lock()
		trailer := b.st.trailer
		c.mu.Unlock()
		if len(trailer) > 0 {
			b.resp.Trailer = trailer
		}
	case err != nil && b.closed.Load():
		err = errBodyClosed
	case err != nil:
		err = fmt.Errorf("hbone: reading response body: %w", err)
	}
	if err != nil {
		b.err = err
		b.end()
	}
	return n, err
}

// Close resets the stream unless the body was read to its end.
func (b *h2cRespBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.st.abort(http2.ErrCodeCancel)
	b.end()
	return nil
}

func (b *h2cRespBody) end() { b.once.Do(func() { b.stop() }) }

// Idle reports whether the connection carries no stream and none is
// reserved.
func (cc *H2CClientConn) Idle() bool {
	cc.c.mu.Lock()
	defer cc.c.mu.Unlock()
	return len(cc.c.streams) == 0 && cc.reserved.Load() == 0
}
