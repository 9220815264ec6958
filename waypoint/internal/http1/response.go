package http1

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// response is the server's http.ResponseWriter, with http.Flusher,
// FlushError and Hijack (so http.ResponseController works on it).
type response struct {
	sc     *serverConn
	minor  int  // the request's HTTP minor version
	isHead bool // the request is HEAD: no body, whatever is written
	header http.Header

	// mu guards the head against the 100 Continue that a body read on
	// another goroutine may write, and against Hijack.
	mu            sync.Mutex
	wroteHeader   bool // a final status was set
	committed     bool // the head is in the write buffer
	switched      bool // 101 was sent
	hijacked      bool
	wroteContinue bool

	status        int
	contentLength int64 // the handler's Content-Length, or -1
	written       int64
	chunked       bool
	closeAfter    bool
	handlerDone   bool
	err           error // sticky write error
}

func (w *response) init(sc *serverConn, req *http.Request, head *requestHead) {
	w.sc, w.minor = sc, head.req.ProtoMinor
	w.isHead = req.Method == http.MethodHead
	w.contentLength = -1
	w.closeAfter = req.Close
	if sc.pending == nil {
		sc.pending = make([]byte, 0, bufSize)
	}
	sc.pending = sc.pending[:0]
}

// Header returns the response header map.
func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader sends (1xx) or sets (others) the response status. 1xx
// statuses other than 101 are written at once, with the current header
// map, and may repeat; HTTP/1.0 clients do not get them. 101 is written
// at once and must be followed by Hijack.
func (w *response) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeHeaderLocked(code)
}

func (w *response) writeHeaderLocked(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		w.sc.cfg.Logger.Error("http1: invalid response status, sending 500", "status", code)
		code = http.StatusInternalServerError
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		if w.minor == 0 {
			return
		}
		bw := w.sc.bw
		writeStatusLine(bw, code, w.sc.scratch[:0])
		w.writeFields()
		bw.WriteString("\r\n")
		if err := bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
		if code == http.StatusContinue {
			w.wroteContinue = true
		}
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header["Content-Length"]; len(cl) == 1 {
		if n, ok := parseContentLength(trimOWS(cl[0])); ok {
			w.contentLength = n
		}
	}
	if hasToken(w.header["Connection"], "close") {
		w.closeAfter = true
	}
	if code == http.StatusSwitchingProtocols {
		w.switched = true
		w.commitLocked()
		if err := w.sc.bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
	}
}

// bodyAllowed reports whether the status allows a body (RFC 9110 15).
func (w *response) bodyAllowed() bool {
	return w.status >= 200 && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

// writeContinue sends 100 Continue, unless the response has started.
func (w *response) writeContinue() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader || w.hijacked || w.wroteContinue {
		return nil
	}
	w.wroteContinue = true
	w.sc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	// A failure stays in the writer, which returns it to the handler's
	// next write: w.err belongs to the handler's goroutine.
	return w.sc.bw.Flush()
}

// Write writes body bytes. It refuses bytes past the handler's
// Content-Length (http.ErrContentLength) and any body for 204, 304 and
// 1xx (http.ErrBodyNotAllowed); for HEAD it drops them.
func (w *response) Write(p []byte) (int, error) { return write(w, p) }

// WriteString is Write for a string, without a copy.
func (w *response) WriteString(s string) (int, error) { return write(w, s) }

func write[T string | []byte](w *response, p T) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case w.hijacked:
		return 0, http.ErrHijacked
	case w.switched:
		return 0, errors.New("http1: write after 101 Switching Protocols; use Hijack")
	case !w.bodyAllowed():
		return 0, http.ErrBodyNotAllowed
	case w.err != nil:
		return 0, w.err
	case w.isHead:
		return len(p), nil
	case w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength:
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.written += int64(len(p))
	sc := w.sc
	if !w.committed {
		if len(sc.pending)+len(p) <= cap(sc.pending) {
			sc.pending = append(sc.pending, p...)
			return len(p), nil
		}
		w.mu.Lock()
		w.commitLocked()
		w.mu.Unlock()
	}
	bw := sc.bw
	if w.chunked {
		bw.Write(appendChunkHeader(sc.scratch[:0], len(p)))
	}
	var err error
	switch p := any(p).(type) {
	case string:
		_, err = bw.WriteString(p)
	case []byte:
		_, err = bw.Write(p)
	}
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.err = err
		w.closeAfter = true
		return 0, err
	}
	return len(p), nil
}

// hasTrailers reports whether the handler declared trailers or set
// TrailerPrefix keys.
func (w *response) hasTrailers() bool {
	if len(w.header["Trailer"]) > 0 {
		return true
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// commitLocked writes the head, choosing the framing, and then the
// pending body bytes.
func (w *response) commitLocked() {
	if w.committed {
		return
	}
	w.committed = true
	sc := w.sc
	bw := sc.bw
	writeStatusLine(bw, w.status, sc.scratch[:0])
	trailers := w.hasTrailers()
	switch {
	case w.switched || !w.bodyAllowed():
	case w.isHead:
		if w.contentLength >= 0 {
			bw.WriteString("Content-Length: ")
			bw.Write(appendInt(sc.scratch[:0], w.contentLength))
			bw.WriteString("\r\n")
		}
	case w.contentLength < 0 && w.handlerDone && !trailers:
		// The whole body is here: give it a length.
		w.contentLength = int64(len(sc.pending))
		fallthrough
	case w.contentLength >= 0:
		bw.WriteString("Content-Length: ")
		bw.Write(appendInt(sc.scratch[:0], w.contentLength))
		bw.WriteString("\r\n")
	case w.minor == 1:
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		w.closeAfter = true // an HTTP/1.0 body of unknown length ends with the connection
	}
	if !w.switched && !w.closeAfter && sc.isDraining() {
		w.closeAfter = true
	}
	switch {
	case w.switched:
	case w.closeAfter:
		bw.WriteString("Connection: close\r\n")
	case w.minor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	switch {
	case w.switched:
		// The handler's Connection field ("upgrade") belongs to a 101.
		w.writeFieldsSkipping(func(k string) bool { return strings.HasPrefix(k, http.TrailerPrefix) })
	case len(w.header["Trailer"]) > 0:
		// Fields declared as trailers go in the trailer section only.
		w.writeFieldsSkipping(func(k string) bool { return serverOwned(k) || hasToken(w.header["Trailer"], k) })
	default:
		w.writeFields()
	}
	bw.WriteString("\r\n")
	if len(sc.pending) > 0 {
		if w.chunked {
			bw.Write(appendChunkHeader(sc.scratch[:0], len(sc.pending)))
			bw.Write(sc.pending)
			bw.WriteString("\r\n")
		} else {
			bw.Write(sc.pending)
		}
		sc.pending = sc.pending[:0]
	}
}

// writeFields writes the handler's header fields but for those the
// server owns.
func (w *response) writeFields() { w.writeFieldsSkipping(serverOwned) }

func (w *response) writeFieldsSkipping(skip func(string) bool) {
	if dropped := writeFields(w.sc.bw, w.header, &w.sc.keys, skip); dropped > 0 {
		w.sc.cfg.Logger.Debug("http1: invalid response header fields left out", "count", dropped)
	}
}

// serverOwned names the fields the server writes itself (framing,
// connection) and the TrailerPrefix keys, which are trailers.
func serverOwned(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Connection":
		return true
	}
	return strings.HasPrefix(k, http.TrailerPrefix)
}

// Flush sends what the handler has written so far.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush, returning the write error if any.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.err != nil {
		return w.err
	}
	w.commitLocked()
	if err := w.sc.bw.Flush(); err != nil {
		w.err, w.closeAfter = err, true
		return err
	}
	return nil
}

// EnableFullDuplex lets http.ResponseController callers know that the
// request body stays readable while the response is written: it always
// does here.
func (w *response) EnableFullDuplex() error { return nil }

// Hijack hands the connection to the handler: the server writes nothing
// more on it and stops serving it. The returned reader holds the bytes
// the client sent after the request head (after the body, if the handler
// read it). Hijack may come before any write, or after a 101.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	sc := w.sc
	if w.wroteHeader {
		w.commitLocked()
	}
	if err := sc.bw.Flush(); err != nil {
		return nil, nil, err
	}
	sc.cr.abortPendingRead()
	sc.cr.setProgressTimeout(0)
	sc.cr.mu.Lock()
	pulled := sc.cr.hasByte
	sc.cr.mu.Unlock()
	if pulled && sc.br.Buffered() == 0 {
		sc.br.Peek(1) // move the background read's byte into the buffer
	}
	sc.conn.SetDeadline(time.Time{})
	w.hijacked = true
	sc.hijacked.Store(true)
	return sc.conn, bufio.NewReadWriter(sc.br, sc.bw), nil
}

// finish completes the response after the handler returned: it writes
// what is pending, the last chunk and trailers, and flushes; then it
// drops the request body the handler left unread. The response goes
// first, so that a handler answering early (a denial, a 413) is not held
// back by a slow upload; the head says "Connection: close" when it is
// already known that the body can't be dropped. finish reports whether
// the connection can take another request.
func (w *response) finish(body *requestBody, hasBody bool) (keep bool, err error) {
	// The body is looked at before taking w.mu: a body read holds the
	// body's lock while it takes w.mu to send 100 Continue.
	reusable := true
	var perr *ProtocolError
	if hasBody {
		reusable, perr = body.check()
	}
	keep, err = w.complete(reusable, perr)
	if err != nil || !keep {
		return false, err
	}
	if hasBody && !body.finish() {
		// Too late to say so in the head: the client learns it from the
		// close.
		w.sc.closeLingering()
		return false, nil
	}
	return true, nil
}

// complete writes the rest of the response; reusable and perr are what
// became of the request body, if that is known yet.
func (w *response) complete(reusable bool, perr *ProtocolError) (keep bool, err error) {
	sc := w.sc
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlerDone = true
	if perr != nil && !w.wroteHeader {
		// The body was malformed and nothing answered it yet.
		sc.cfg.Logger.Debug("http1: request body refused", "remote", sc.remoteAddr, "reason", perr.Reason)
		sc.writeError(perr.Status, perr.Reason)
		sc.bw.Flush()
		sc.closeLingering()
		return false, perr
	}
	if w.switched {
		// 101 without Hijack: nothing more can be said on this connection.
		sc.bw.Flush()
		return false, nil
	}
	if !w.wroteHeader {
		w.writeHeaderLocked(http.StatusOK)
	}
	if !reusable {
		w.closeAfter = true
	}
	w.commitLocked()
	bw := sc.bw
	if w.chunked && w.err == nil {
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if !w.isHead && w.bodyAllowed() && w.contentLength >= 0 && w.written < w.contentLength {
		// A short body: closing is how the client learns it is short.
		w.closeAfter = true
	}
	if w.err == nil {
		w.err = bw.Flush()
	}
	if w.err != nil {
		return false, w.err
	}
	if w.closeAfter {
		// Half-close and linger even when the request was read whole: on
		// a tunnel (HBONE), a plain close while the client has not ended
		// its side resets the stream, and the client may lose the
		// response it has not read yet.
		sc.closeLingering()
		return false, nil
	}
	return true, nil
}

// writeTrailers writes the trailer fields: the values of names the
// Trailer field declared, then the TrailerPrefix keys, leaving out
// fields not allowed in trailers.
func (w *response) writeTrailers() {
	bw := w.sc.bw
	for _, decl := range w.header["Trailer"] {
		for decl != "" {
			var name string
			name, decl, _ = strings.Cut(decl, ",")
			key := http.CanonicalHeaderKey(trimOWS(name))
			if forbiddenTrailers[key] || !validToken(key) {
				continue
			}
			for _, v := range w.header[key] {
				if validFieldValue(v) {
					writeField(bw, key, v)
				}
			}
		}
	}
	var prefixed http.Header
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			key := http.CanonicalHeaderKey(name)
			if forbiddenTrailers[key] {
				continue
			}
			if prefixed == nil {
				prefixed = make(http.Header)
			}
			prefixed[key] = append(prefixed[key], vv...)
		}
	}
	if prefixed != nil {
		writeFields(bw, prefixed, &w.sc.keys, nil)
	}
}
