// Package pathnorm normalizes request paths before they are authorized
// and routed, so that a path a backend would read as /admin cannot slip
// past a rule on /admin. The waypoint forwards the normalized path, so the
// backend sees exactly the path that was authorized.
//
// Istio leaves this to a mesh-config option (pathNormalization); Skiff
// always does the equivalent of its strictest common setting,
// DECODE_AND_MERGE_SLASHES, plus the decoding RFC 3986 allows:
//
//   - Percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are
//     decoded (RFC 3986 6.2.2.2: they are the same characters); other
//     escapes are kept, with upper-case hex (6.2.2.1).
//   - "%2F" and "%5C" (encoded slash and backslash) and a literal
//     backslash all become "/". RFC 3986 keeps "%2F" distinct from "/", but
//     many backends and frameworks decode it before routing, and some
//     (Windows, IIS, some Java servers) treat a backslash as a separator:
//     left alone, "/admin%2Fusers" or "/admin\users" would pass a rule on
//     "/admin/*" unseen and reach /admin/users. The cost is that an
//     application giving "%2F" its own meaning inside a segment cannot be
//     reached through the waypoint with it.
//   - Dot segments are removed (RFC 3986 5.2.4), including those formed by
//     decoding ("%2e%2e"), never going above the root: "/../admin" is
//     "/admin".
//   - Consecutive slashes are merged.
//
// A path is refused (the proxy answers 400) if it does not start with "/"
// (or a backslash), holds an invalid escape ("%zz", "%4"), an encoded NUL,
// a literal '?' or '#', a control character, a space or a byte of 0x80 or
// more. HTTP/1's request-target cannot carry the last four unencoded;
// HTTP/2's :path can, and a backend could read them in ways a rule does not
// foresee. Case is kept: "/ADMIN" is not "/admin".
package pathnorm

import (
	"errors"
	"fmt"
)

// Errors Normalize wraps, with the offset of the offending byte.
var (
	ErrNotAbsolute = errors.New("pathnorm: path does not start with /")
	ErrBadEscape   = errors.New("pathnorm: invalid percent-escape")
	ErrEncodedNUL  = errors.New("pathnorm: encoded NUL")
	ErrBadByte     = errors.New("pathnorm: control character, space, non-ASCII byte, '?' or '#'")
)

// Normalize returns the normalized form of an escaped request path (no
// query), or an error for a path that must be refused with 400. A path
// already in normal form is returned as is, without allocating.
func Normalize(p string) (string, error) {
	if isNormal(p) {
		return p, nil
	}
	return normalize(p)
}

// isNormal reports whether Normalize would return p unchanged.
func isNormal(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '/':
			// The segment starting here must not be empty (but for a
			// trailing slash), "." or "..".
			if dotOrEmpty(p[i+1:]) {
				return false
			}
		case '%':
			if i+2 >= len(p) || !isUpperHex(p[i+1]) || !isUpperHex(p[i+2]) {
				return false
			}
			if decodes(unhex(p[i+1])<<4 | unhex(p[i+2])) {
				return false
			}
			i += 2
		default:
			if !plain(c) {
				return false
			}
		}
	}
	return true
}

// dotOrEmpty reports whether rest, what follows a '/', starts with an empty
// segment that is not the end of the path, or with a "." or ".." segment.
func dotOrEmpty(rest string) bool {
	switch {
	case rest == "":
		return false
	case rest[0] == '/':
		return true
	case rest[0] != '.':
		return false
	case len(rest) == 1 || rest[1] == '/':
		return true
	}
	return rest[1] == '.' && (len(rest) == 2 || rest[2] == '/')
}

func normalize(p string) (string, error) {
	if p == "" || (p[0] != '/' && p[0] != '\\') {
		return "", ErrNotAbsolute
	}
	// Decode first, so that dot segments and slashes formed by decoding
	// are seen below.
	buf := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", fmt.Errorf("%w at byte %d", ErrBadEscape, i)
			}
			switch b := unhex(p[i+1])<<4 | unhex(p[i+2]); {
			case b == 0:
				return "", fmt.Errorf("%w at byte %d", ErrEncodedNUL, i)
			case b == '/' || b == '\\':
				buf = append(buf, '/')
			case isUnreserved(b):
				buf = append(buf, b)
			default:
				buf = append(buf, '%', upperHex[b>>4], upperHex[b&0xf])
			}
			i += 2
		case c == '\\':
			buf = append(buf, '/')
		case !plain(c):
			return "", fmt.Errorf("%w at byte %d", ErrBadByte, i)
		default:
			buf = append(buf, c)
		}
	}

	// Then rebuild segment by segment: drop empty and "." segments, let
	// ".." drop the last kept one (none at the root). buf starts with '/'.
	// out reuses buf: it never grows past what has been read.
	out := buf[:0]
	dir := false // whether the path ends as a directory: "/a/", "/a/.", "/a/.."
	for rest := buf[1:]; ; {
		seg, next, more := cut(rest)
		// Classify seg before out is written: out may overwrite it.
		dots := len(seg) == 0 || isDot(seg)
		up := isDotDot(seg)
		switch {
		case dots:
		case up:
			out = out[:lastSlash(out)]
		default:
			out = append(out, '/')
			out = append(out, seg...)
		}
		if !more {
			dir = dots || up
			break
		}
		rest = next
	}
	if len(out) == 0 || dir {
		out = append(out, '/')
	}
	return string(out), nil
}

// cut splits b at its first '/'.
func cut(b []byte) (seg, rest []byte, found bool) {
	for i, c := range b {
		if c == '/' {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

func isDot(b []byte) bool    { return len(b) == 1 && b[0] == '.' }
func isDotDot(b []byte) bool { return len(b) == 2 && b[0] == '.' && b[1] == '.' }

// lastSlash returns the index of the last '/' in b, or 0.
func lastSlash(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '/' {
			return i
		}
	}
	return 0
}

// plain reports whether c may stand unencoded in a normalized path, other
// than '/' and '%'.
func plain(c byte) bool {
	return c > ' ' && c < 0x7f && c != '\\' && c != '?' && c != '#'
}

// decodes reports whether Normalize decodes the escape of b rather than
// keep it (or, for NUL, refuse it).
func decodes(b byte) bool {
	return b == 0 || b == '/' || b == '\\' || isUnreserved(b)
}

func isUnreserved(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return b == '-' || b == '.' || b == '_' || b == '~'
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
