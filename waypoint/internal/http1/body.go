package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
)

// bodyKind is how a message body is delimited (RFC 9112 6.3).
type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyFixed
	bodyChunked
	bodyUntilClose
)

// chunkState is a step of the chunked decoder.
type chunkState uint8

const (
	chunkSize     chunkState = iota // before a chunk-size line
	chunkData                       // within chunk data
	chunkCRLF                       // after chunk data, before its CRLF
	chunkTrailers                   // after the last chunk
)

// bodyReader reads one message body from a connection's buffered reader
// and decodes its framing. It is not safe for concurrent use; the
// server's and client's wrappers serialise it.
type bodyReader struct {
	br   *bufio.Reader
	kind bodyKind
	// status is what a framing error answers: 400 for a request, 502 for
	// a response.
	status int
	// remaining is the bytes left: of the body (bodyFixed) or of the
	// current chunk (bodyChunked).
	remaining int64
	// state is where a chunked body is.
	state chunkState
	// data and ext count a chunked body's data and extension bytes, which
	// bound the latter.
	data, ext int64
	// trailers reads the trailer section, whose fields go into *trailer:
	// into the map there if any (whoever holds it then sees them), else
	// a new one.
	trailers *headReader
	trailer  *http.Header
	// err is sticky: io.EOF once the body ended, else the first error.
	err error
}

func (b *bodyReader) reset(br *bufio.Reader, kind bodyKind, n int64, status int, trailers *headReader, trailer *http.Header) {
	*b = bodyReader{br: br, kind: kind, remaining: n, status: status, trailers: trailers, trailer: trailer}
	if kind == bodyNone || kind == bodyFixed && n == 0 {
		b.err = io.EOF
	}
}

func (b *bodyReader) protoErr(reason string) error {
	return &ProtocolError{Status: b.status, Reason: reason}
}

// Read reads body bytes. The read that delivers the body's last bytes
// also returns io.EOF when the framing's end is already buffered, so that
// a caller learns of the end without another call.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.kind {
	case bodyFixed:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := b.br.Read(p)
		b.remaining -= int64(n)
		switch {
		case b.remaining == 0:
			b.err = io.EOF
		case err == io.EOF:
			b.err = io.ErrUnexpectedEOF
		case err != nil:
			b.err = err
		}
		if n > 0 && b.err != io.EOF {
			return n, nil
		}
		return n, b.err
	case bodyUntilClose:
		n, err := b.br.Read(p)
		if err != nil {
			b.err = err
		}
		return n, err
	}
	return b.readChunked(p)
}

func (b *bodyReader) readChunked(p []byte) (n int, err error) {
	// With data in hand, each step between chunks goes on only if its
	// bytes are already buffered, so as not to block.
	for b.err == nil {
		switch b.state {
		case chunkData:
			if n == len(p) {
				return n, nil
			}
			m := min(int64(len(p)-n), b.remaining)
			k, err := b.br.Read(p[n : n+int(m)])
			n += k
			b.remaining -= int64(k)
			b.data += int64(k)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				b.err = err
				break
			}
			if b.remaining > 0 {
				return n, nil
			}
			b.state = chunkCRLF
		case chunkCRLF:
			if n > 0 && b.br.Buffered() < 2 {
				return n, nil
			}
			if err := b.readCRLF(); err != nil {
				b.err = err
				break
			}
			b.state = chunkSize
		case chunkSize:
			if n > 0 && !b.buffered(lineBuffered) {
				return n, nil
			}
			size, err := b.readChunkLine()
			if err != nil {
				b.err = err
				break
			}
			if size == 0 {
				b.state = chunkTrailers
				break
			}
			b.state, b.remaining = chunkData, size
		case chunkTrailers:
			if n > 0 && !b.buffered(sectionBuffered) {
				return n, nil
			}
			b.err = b.readTrailers()
		}
	}
	if n > 0 && b.err != io.EOF {
		// Deliver the data now, the error on the next call.
		return n, nil
	}
	return n, b.err
}

// buffered applies complete to the bytes already buffered.
func (b *bodyReader) buffered(complete func([]byte) bool) bool {
	buf, _ := b.br.Peek(b.br.Buffered())
	return complete(buf)
}

func lineBuffered(buf []byte) bool { return bytes.IndexByte(buf, '\n') >= 0 }

// sectionBuffered reports whether buf holds a whole field section: an
// empty line at its start or after a line.
func sectionBuffered(buf []byte) bool {
	if bytes.HasPrefix(buf, []byte("\n")) || bytes.HasPrefix(buf, []byte("\r\n")) {
		return true
	}
	return bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n"))
}

func (b *bodyReader) readCRLF() error {
	cr, err := b.br.ReadByte()
	if err == nil && cr == '\r' {
		var lf byte
		lf, err = b.br.ReadByte()
		if err == nil && lf == '\n' {
			return nil
		}
	}
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	return b.protoErr("chunk data not followed by CRLF")
}

// readChunkLine reads and checks one chunk-size line: 1*16HEXDIG, then
// chunk extensions "; name [= token / quoted-string]" with whitespace
// only where RFC 9112 7.1.1 puts BWS, then exactly CRLF.
func (b *bodyReader) readChunkLine() (int64, error) {
	line, err := b.br.ReadSlice('\n')
	switch err {
	case nil:
	case bufio.ErrBufferFull:
		return 0, b.protoErr("chunk-size line too long")
	case io.EOF:
		return 0, io.ErrUnexpectedEOF
	default:
		return 0, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return 0, b.protoErr("chunk-size line not ended by CRLF")
	}
	size, ext, ok := parseChunkLine(line[:len(line)-2])
	if !ok {
		return 0, b.protoErr("malformed chunk-size line")
	}
	b.ext += int64(ext)
	if b.ext > b.data+extSlack {
		return 0, b.protoErr("too many chunk extension bytes")
	}
	return size, nil
}

// parseChunkLine parses a chunk-size line without its CRLF, returning
// the size and the length of the extensions.
func parseChunkLine(line []byte) (size int64, ext int, ok bool) {
	i := hexRun(line)
	if i == 0 || i > 16 || i == 16 && unhex(line[0]) > 7 {
		return 0, 0, false // no size, or one that would overflow int64
	}
	for _, c := range line[:i] {
		size = size<<4 | int64(unhex(c))
	}
	rest := line[i:]
	ext = len(rest)
	for len(rest) > 0 {
		rest = skipBWS(rest)
		if len(rest) == 0 || rest[0] != ';' {
			return 0, 0, false
		}
		rest = skipBWS(rest[1:])
		n := tokenLen(rest)
		if n == 0 {
			return 0, 0, false
		}
		rest = rest[n:]
		if after := skipBWS(rest); len(after) > 0 && after[0] == '=' {
			rest = skipBWS(after[1:])
			if len(rest) > 0 && rest[0] == '"' {
				n = quotedLen(rest)
			} else {
				n = tokenLen(rest)
			}
			if n == 0 {
				return 0, 0, false
			}
			rest = rest[n:]
		}
	}
	return size, ext, true
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// hexRun is the number of hex digits line starts with.
func hexRun(line []byte) int {
	n := 0
	for n < len(line) && byteClass[line[n]]&isHex != 0 {
		n++
	}
	return n
}

func skipBWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func tokenLen(b []byte) int {
	n := 0
	for n < len(b) && byteClass[b[n]]&isToken != 0 {
		n++
	}
	return n
}

// quotedLen is the length of the quoted-string b starts with, or 0.
func quotedLen(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			i++
			if i == len(b) || byteClass[b[i]]&isFieldValue == 0 {
				return 0
			}
		case byteClass[c]&isQDText == 0:
			return 0
		}
	}
	return 0
}

// readTrailers reads the trailer section after the last chunk and hands
// its allowed fields to *b.trailer. It returns io.EOF when all is well.
func (b *bodyReader) readTrailers() error {
	if err := b.trailers.read(false); err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		if pe, ok := err.(*ProtocolError); ok {
			return b.protoErr("trailer section: " + pe.Reason)
		}
		return err
	}
	if len(b.trailers.fields) == 0 || b.trailer == nil {
		return io.EOF
	}
	h := b.trailers.header(b.trailers.text())
	for k := range h {
		if forbiddenTrailers[k] {
			delete(h, k)
		}
	}
	switch {
	case len(h) == 0:
	case *b.trailer == nil:
		*b.trailer = h
	default:
		for k, v := range h {
			(*b.trailer)[k] = v
		}
	}
	return io.EOF
}

// appendChunkHeader appends the size line of an n-byte chunk.
func appendChunkHeader(dst []byte, n int) []byte {
	const digits = "0123456789abcdef"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[n&0xf]
		n >>= 4
		if n == 0 {
			break
		}
	}
	dst = append(dst, tmp[i:]...)
	return append(dst, '\r', '\n')
}
