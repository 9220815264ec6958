package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
)

// errHeadTooLarge is a head over Limits.MaxHeaderBytes; callers turn it
// into 414 or 431 depending on where it happened.
var errHeadTooLarge = errors.New("head too large")

// span is a range of a head's bytes.
type span struct{ lo, hi int }

// field is one field line, as spans of a head.
type field struct{ name, value span }

// headReader reads message heads (a start line and field lines) or
// trailer sections from a buffered connection. Each line is checked as it
// arrives; the head's bytes, without line endings, are kept in one buffer
// reused from head to head, and become one string when the head is
// complete, from which every name and value is sliced.
type headReader struct {
	br     *bufio.Reader
	lim    Limits
	buf    []byte
	fields []field
	start  span
	// n counts the bytes the current read consumed.
	n int
}

// read reads one head. With startLine it first skips a few empty lines
// and takes the start line (unchecked: the caller parses it). It returns
// io.EOF if the reader ended before the head's first byte,
// io.ErrUnexpectedEOF if it ended within the head, errHeadTooLarge while
// on the start line, and a *ProtocolError (400 or 431) for a malformed or
// oversized field section. Other errors are the reader's.
func (h *headReader) read(startLine bool) error {
	h.buf, h.fields, h.start, h.n = h.buf[:0], h.fields[:0], span{}, 0
	budget := h.lim.MaxHeaderBytes
	consumed := false
	if startLine {
		for empty := 0; ; empty++ {
			lo := len(h.buf)
			err := h.readLine(&budget, consumed)
			if err != nil {
				return err
			}
			consumed = true
			if len(h.buf) > lo {
				h.start = span{lo, len(h.buf)}
				break
			}
			if empty == maxLeadingEmptyLines {
				return badRequest("too many empty lines before the request line")
			}
		}
	}
	for {
		lo := len(h.buf)
		if err := h.readLine(&budget, consumed); err != nil {
			if err == errHeadTooLarge {
				return &ProtocolError{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "header section too large"}
			}
			return err
		}
		consumed = true
		line := h.buf[lo:]
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badRequest("folded or indented header line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return badRequest("header line without a colon")
		}
		if !validToken(line[:colon]) {
			return badRequest("invalid header name")
		}
		vlo, vhi := lo+colon+1, len(h.buf)
		for vlo < vhi && (h.buf[vlo] == ' ' || h.buf[vlo] == '\t') {
			vlo++
		}
		for vhi > vlo && (h.buf[vhi-1] == ' ' || h.buf[vhi-1] == '\t') {
			vhi--
		}
		if !validFieldValue(h.buf[vlo:vhi]) {
			return badRequest("invalid header value")
		}
		if len(h.fields) == h.lim.MaxHeaderCount {
			return &ProtocolError{Status: http.StatusRequestHeaderFieldsTooLarge, Reason: "too many header fields"}
		}
		h.fields = append(h.fields, field{name: span{lo, lo + colon}, value: span{vlo, vhi}})
	}
}

// readLine appends one line's content to h.buf, without its LF and the
// CR before it, and charges its bytes to budget. An earlier line having
// been read (consumed) turns an EOF into io.ErrUnexpectedEOF.
func (h *headReader) readLine(budget *int, consumed bool) error {
	lo := len(h.buf)
	for {
		frag, err := h.br.ReadSlice('\n')
		if len(frag) > *budget {
			h.n += len(frag)
			return errHeadTooLarge
		}
		*budget -= len(frag)
		h.n += len(frag)
		h.buf = append(h.buf, frag...)
		switch err {
		case nil:
			n := len(h.buf) - 1
			if n > lo && h.buf[n-1] == '\r' {
				n--
			}
			h.buf = h.buf[:n]
			return nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			if !consumed && len(h.buf) == lo {
				return io.EOF
			}
			return io.ErrUnexpectedEOF
		}
		return err
	}
}

// text returns the head's bytes as one string. It copies them: h.buf is
// reused for the next head.
func (h *headReader) text() string { return string(h.buf) }

// header builds the field section of the head whose text() is s. Keys
// are canonical; a key already in canonical form, or a common one, costs
// no allocation; values are slices of s in the order received.
func (h *headReader) header(s string) http.Header {
	hdr := make(http.Header, len(h.fields))
	vals := make([]string, len(h.fields))
	for i, f := range h.fields {
		key := canonicalKey(h.buf[f.name.lo:f.name.hi], s[f.name.lo:f.name.hi])
		v := s[f.value.lo:f.value.hi]
		if old, ok := hdr[key]; ok {
			hdr[key] = append(old, v)
			continue
		}
		vals[i] = v
		hdr[key] = vals[i : i+1 : i+1]
	}
	return hdr
}

// canonicalKey returns the canonical form of the token name (whose
// string form, sharing a head's text, is s): the first letter and every
// letter after a hyphen upper case, the rest lower case.
func canonicalKey(name []byte, s string) string {
	canonical := true
	up := true
	for _, c := range name {
		want := c
		if up {
			want = upper(c)
		} else {
			want = lower(c)
		}
		if want != c {
			canonical = false
			break
		}
		up = c == '-'
	}
	if canonical {
		return s
	}
	var small [64]byte
	b := small[:0]
	if len(name) > len(small) {
		b = make([]byte, 0, len(name))
	}
	up = true
	for _, c := range name {
		if up {
			b = append(b, upper(c))
		} else {
			b = append(b, lower(c))
		}
		up = c == '-'
	}
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return string(b)
}

// commonKeys interns the canonical names of common fields, so that a
// client sending them in lower case costs no allocation.
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Origin", "Age", "Authorization", "Baggage", "Cache-Control",
		"Connection", "Content-Disposition", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect",
		"Expires", "Forwarded", "Grpc-Encoding", "Grpc-Accept-Encoding", "Grpc-Message",
		"Grpc-Status", "Grpc-Timeout", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified", "Link", "Location",
		"Origin", "Pragma", "Range", "Referer", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Te", "Traceparent", "Tracestate", "Trailer",
		"Transfer-Encoding", "Upgrade", "User-Agent", "Vary", "Via", "Www-Authenticate",
		"X-Content-Type-Options", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Request-Id", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled",
		"Sec-Websocket-Key", "Sec-Websocket-Accept", "Sec-Websocket-Version",
		"Sec-Websocket-Protocol", "Sec-Websocket-Extensions",
	} {
		m[k] = k
	}
	return m
}()

// forbiddenTrailers are fields that must not come from a trailer section
// (RFC 9110 6.5.1): framing, routing, connection control, authentication,
// and what decides how to handle the content. They are dropped when
// received and never written.
var forbiddenTrailers = map[string]bool{
	"Authorization": true, "Cache-Control": true, "Connection": true, "Content-Encoding": true,
	"Content-Length": true, "Content-Range": true, "Content-Type": true, "Expect": true,
	"Host": true, "Keep-Alive": true, "Max-Forwards": true, "Pragma": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Proxy-Connection": true,
	"Range": true, "Set-Cookie": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Www-Authenticate": true, "Age": true, "Expires": true, "Date": true,
	"Location": true, "Retry-After": true, "Vary": true,
}
