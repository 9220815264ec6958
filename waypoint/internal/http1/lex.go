package http1

import (
	"net/netip"
	"strings"
)

// Byte classes, as bit flags in one table.
const (
	isToken      = 1 << iota // RFC 9110 5.6.2 tchar
	isFieldValue             // VCHAR, SP, HTAB, obs-text (RFC 9110 5.5)
	isTarget                 // VCHAR but "#": request-target bytes
	isRegName                // unreserved, sub-delims, "%" (RFC 3986 reg-name)
	isHex
	isQDText    // quoted-string text, RFC 9110 5.6.4
	isPlainPath // path bytes that url.URL keeps as they are
)

var byteClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		alnum := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		if alnum || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0 {
			t[c] |= isToken
		}
		vchar := 0x21 <= b && b <= 0x7e
		if vchar || b == ' ' || b == '\t' || b >= 0x80 {
			t[c] |= isFieldValue
		}
		if vchar && b != '#' {
			t[c] |= isTarget
		}
		if alnum || strings.IndexByte("-._~!$&'()*+,;=%", b) >= 0 {
			t[c] |= isRegName
		}
		if '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			t[c] |= isHex
		}
		if alnum || strings.IndexByte("-._~$&+,/:;=@", b) >= 0 {
			t[c] |= isPlainPath
		}
		if b == '\t' || b == ' ' || b == 0x21 || 0x23 <= b && b <= 0x5b || 0x5d <= b && b <= 0x7e || b >= 0x80 {
			t[c] |= isQDText
		}
	}
	return t
}()

// validToken reports whether s is a non-empty token.
func validToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if byteClass[s[i]]&isToken == 0 {
			return false
		}
	}
	return true
}

// validFieldValue reports whether s holds only field-value bytes. It does
// not check for leading or trailing whitespace.
func validFieldValue[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if byteClass[s[i]]&isFieldValue == 0 {
			return false
		}
	}
	return true
}

func validTarget(s string) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if byteClass[s[i]]&isTarget == 0 {
			return false
		}
	}
	return true
}

// trimOWS trims optional whitespace (SP, HTAB) at both ends.
func trimOWS[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// validAuthority reports whether s is a Host value or an authority-form
// target: host [":" port] with host a reg-name, an IPv4 address or a
// bracketed IPv6 address. It refuses userinfo, an empty host, an empty or
// out-of-range port, and IPvFuture and zones, none of which a mesh
// routes.
func validAuthority(s string) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		host, port = "", s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return false
			}
			return validPort(port[1:])
		}
		return true
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if !validPort(port) {
			return false
		}
	}
	if host == "" {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if byteClass[c]&isRegName == 0 {
			return false
		}
		if c == '%' && (i+2 >= len(host) || byteClass[host[i+1]]&isHex == 0 || byteClass[host[i+2]]&isHex == 0) {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if len(p) == 0 || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// parseContentLength parses 1*DIGIT into a non-negative int64.
func parseContentLength(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 19 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// asciiEqualFold reports whether a and b are equal ignoring ASCII case.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// hasToken reports whether any of the comma-separated lists in values
// holds token (compared ignoring ASCII case).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if asciiEqualFold(trimOWS(item), token) {
				return true
			}
		}
	}
	return false
}
