package http1

import "time"

// Defaults for zero Limits and timeouts.
const (
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxHeaderCount    = 100
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
)

const (
	// maxDiscard is how much of a request body the handler left unread
	// the server reads and drops to keep the connection; past it the
	// connection is closed instead.
	maxDiscard = 256 << 10
	// maxLeadingEmptyLines bounds the empty lines skipped before a
	// request line (RFC 9112 2.2 allows "at least one").
	maxLeadingEmptyLines = 8
	// bufSize is the size of a connection's read and write buffers; it is
	// also the longest chunk-size line (with its extensions) accepted.
	bufSize = 4 << 10
	// extSlack is the chunk-extension bytes a body may carry beyond its
	// data bytes: extensions can never cost more than the data they ride
	// on, plus this.
	extSlack = 16 << 10
	// maxWriteChunk bounds one write to the connection, so that a slow
	// but live peer renews the write deadline as it takes bytes.
	maxWriteChunk = 64 << 10
)

// Limits bounds a message head (or a trailer section).
type Limits struct {
	// MaxHeaderBytes bounds the head: the start line and the field lines,
	// with their line endings (0: DefaultMaxHeaderBytes). A trailer
	// section has the same bound.
	MaxHeaderBytes int
	// MaxHeaderCount bounds the number of field lines (0:
	// DefaultMaxHeaderCount).
	MaxHeaderCount int
}

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaderCount <= 0 {
		l.MaxHeaderCount = DefaultMaxHeaderCount
	}
	return l
}

// orDefault returns d if v is zero and v otherwise; a negative v means no
// timeout and is returned as 0.
func orDefault(v, d time.Duration) time.Duration {
	switch {
	case v == 0:
		return d
	case v < 0:
		return 0
	}
	return v
}
