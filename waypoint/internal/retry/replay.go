package retry

import (
	"errors"
	"io"
	"slices"
	"sync"
)

// DefaultReplayLimit is how much of a request body is kept for a retry
// when NewReplayBody is given no limit (Linkerd's default too). A request
// that sent more is not retried.
const DefaultReplayLimit = 64 << 10

// Errors from the readers Replay returns.
var (
	// ErrSuperseded: a later Replay took over the body from this attempt.
	ErrSuperseded = errors.New("retry: request body read by an attempt a retry superseded")
	// ErrBodyClosed: the attempt's reader, or the whole ReplayBody, was
	// closed.
	ErrBodyClosed = errors.New("retry: read on a closed request body")
	// ErrBodyLost: a superseded attempt went on reading the original body
	// past what is kept, so this attempt cannot have those bytes.
	ErrBodyLost = errors.New("retry: request body bytes were read by a superseded attempt and not kept")
)

// bufPool holds the buffers bodies are recorded in.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooled is the largest buffer returned to bufPool: a body recorded
// under an unusually large limit should not pin its memory.
const maxPooled = 4 * DefaultReplayLimit

// ReplayBody lets a request body be sent more than once. Each attempt
// reads the body from the start through its own reader (Replay); the
// first attempt's reads pass through to the original and are recorded,
// up to a limit, so that later attempts read the recording and then go
// on with the rest of the original if the earlier attempts left some.
//
// Only one attempt reads at a time: Replay supersedes the previous
// attempt's reader, whose reads then fail with ErrSuperseded. A transport
// may still be reading an attempt's body in its own goroutine after the
// attempt failed (net/http's may); that is tolerated: bytes it takes from
// the original are recorded for the next attempt, whose reads wait for
// it. All methods are safe for concurrent use.
//
// Closing an attempt's reader does not close the original; Close does,
// once the request is done, and returns the recording's buffer for reuse.
type ReplayBody struct {
	limit  int
	length int64 // Content-Length, or -1

	// srcMu is held across reads of src, so that one reader at a time
	// consumes the original and records what it read in order.
	srcMu sync.Mutex
	src   io.ReadCloser

	mu        sync.Mutex
	recording bool    // false once the body is known to exceed limit
	buf       *[]byte // the recording; nil until the first byte, and after it stops
	read      int     // bytes taken from src
	eof       bool
	err       error  // src's first error other than io.EOF
	gen       uint64 // the current attempt's number
	closed    bool
}

// NewReplayBody wraps body (nil: empty) for replay. length is the body's
// Content-Length, or -1 when unknown; a body known to exceed limit is
// never recorded, and can be replayed only before any of it is read.
// limit 0 means DefaultReplayLimit; negative records nothing.
func NewReplayBody(body io.ReadCloser, length int64, limit int) *ReplayBody {
	if limit == 0 {
		limit = DefaultReplayLimit
	}
	if body == nil {
		body = io.NopCloser(eofReader{})
	}
	return &ReplayBody{
		limit:     limit,
		src:       body,
		length:    length,
		recording: limit >= 0 && length <= int64(limit),
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Replay returns the reader for the next attempt (the first call, the
// first attempt's), which reads the body from the start. It returns false
// when the body cannot be sent again: more of it was read than was kept,
// reading the original failed, or the ReplayBody was closed.
func (b *ReplayBody) Replay() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.err != nil || b.read > b.recordedLocked() {
		return nil, false
	}
	b.gen++
	return &attempt{b: b, gen: b.gen}, true
}

// Kept returns a copy of the whole body when it was read to its end and
// kept, for a request mirrored once the body is in: ok is false while
// part of it is unread, or when it was too large to keep.
func (b *ReplayBody) Kept() (body []byte, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.err != nil || !b.eof || b.read > b.recordedLocked() {
		return nil, false
	}
	if b.buf == nil {
		return []byte{}, true
	}
	return slices.Clone(*b.buf), true
}

// Close closes the original body and releases the recording. Call it
// once the request is done, with no attempt to come.
func (b *ReplayBody) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.releaseLocked()
	b.mu.Unlock()
	return b.src.Close()
}

func (b *ReplayBody) recordedLocked() int {
	if b.buf == nil {
		return 0
	}
	return len(*b.buf)
}

func (b *ReplayBody) releaseLocked() {
	if b.buf == nil {
		return
	}
	if cap(*b.buf) <= maxPooled {
		*b.buf = (*b.buf)[:0]
		bufPool.Put(b.buf)
	}
	b.buf = nil
}

// recordLocked keeps p, the bytes just read from src, or stops recording
// for good if they take the body past the limit.
func (b *ReplayBody) recordLocked(p []byte) {
	if !b.recording || b.closed || len(p) == 0 {
		return
	}
	if b.recordedLocked()+len(p) > b.limit {
		b.recording = false
		b.releaseLocked()
		return
	}
	if b.buf == nil {
		b.buf = bufPool.Get().(*[]byte)
		if b.length > 0 { // known to fit: one allocation at most
			*b.buf = slices.Grow(*b.buf, int(b.length))
		}
	}
	*b.buf = append(*b.buf, p...)
}

// attempt is one attempt's reader.
type attempt struct {
	b      *ReplayBody
	gen    uint64
	off    int  // bytes this attempt has read
	closed bool // under b.mu
}

func (a *attempt) Read(p []byte) (int, error) {
	b := a.b
	for {
		b.mu.Lock()
		n, err, done := a.fromStateLocked(p)
		b.mu.Unlock()
		if done {
			return n, err
		}
		if n, err, done := a.fromSource(p); done {
			return n, err
		}
		// Another reader took from the original while this one waited:
		// look at the recording again.
	}
}

// fromStateLocked answers a read from what is known without reading the
// original: an error, recorded bytes, or the original's end. done is
// false when the original must be read.
func (a *attempt) fromStateLocked(p []byte) (n int, err error, done bool) {
	b := a.b
	switch {
	case a.closed || b.closed:
		return 0, ErrBodyClosed, true
	case a.gen != b.gen:
		return 0, ErrSuperseded, true
	case a.off < b.recordedLocked():
		n = copy(p, (*b.buf)[a.off:])
		a.off += n
		return n, nil, true
	case a.off < b.read:
		return 0, ErrBodyLost, true
	case b.eof:
		return 0, io.EOF, true
	case b.err != nil:
		return 0, b.err, true
	case len(p) == 0:
		return 0, nil, true
	}
	return 0, nil, false
}

// fromSource reads the original, if this attempt is still the one at its
// front once it has it to itself.
func (a *attempt) fromSource(p []byte) (n int, err error, done bool) {
	b := a.b
	b.srcMu.Lock()
	defer b.srcMu.Unlock()
	b.mu.Lock()
	ready := !a.closed && !b.closed && a.gen == b.gen && a.off == b.read && !b.eof && b.err == nil
	b.mu.Unlock()
	if !ready {
		return 0, nil, false
	}
	n, err = b.src.Read(p)
	n = min(max(n, 0), len(p)) // a broken reader must not break the bookkeeping
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recordLocked(p[:n])
	b.read += n
	a.off += n
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.err == nil:
		b.err = err
	}
	return n, err, true
}

// Close ends the attempt's reading; the original stays open for the next
// attempt.
func (a *attempt) Close() error {
	a.b.mu.Lock()
	defer a.b.mu.Unlock()
	a.closed = true
	return nil
}
