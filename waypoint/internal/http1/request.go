package http1

import (
	"net/http"
	"net/url"
	"strings"
)

// requestHead is a parsed request head: the request without its body,
// context and connection fields, and how its body is framed.
type requestHead struct {
	req http.Request
	// url, if set, is where an origin-form target is parsed (the usual
	// one), so that a caller can place it with other per-request state;
	// otherwise one is allocated.
	url            *url.URL
	body           bodyKind
	contentLength  int64
	expectContinue bool
}

// parseRequestHead parses the head h has just read, whose text is s.
// Every rule of the package doc is checked here; a violation is a
// *ProtocolError.
func parseRequestHead(h *headReader, s string, out *requestHead) error {
	line := s[h.start.lo:h.start.hi]
	method, rest, ok := strings.Cut(line, " ")
	if !ok {
		return badRequest("malformed request line")
	}
	target, proto, ok := strings.Cut(rest, " ")
	if !ok {
		return badRequest("malformed request line")
	}
	major, minor, ok := parseVersion(proto)
	switch {
	case !ok:
		return badRequest("malformed HTTP version")
	case major != 1 || minor > 1:
		return &ProtocolError{Status: http.StatusHTTPVersionNotSupported, Reason: "unsupported HTTP version"}
	}
	if !validToken(method) {
		return badRequest("invalid method")
	}
	if !validTarget(target) {
		return badRequest("invalid request-target")
	}

	r := &out.req
	r.Method, r.RequestURI = method, target
	r.ProtoMajor, r.ProtoMinor = 1, minor
	r.Proto = "HTTP/1.1"
	if minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	var absHost string
	switch {
	case method == http.MethodConnect:
		// authority-form, and only that (RFC 9112 3.2.3): host and port.
		if !validAuthority(target) || !hasPort(target) {
			return badRequest("CONNECT needs an authority-form target")
		}
		r.URL = &url.URL{Host: target}
		absHost = target
	case target == "*":
		if method != http.MethodOptions {
			return badRequest("asterisk-form target is only for OPTIONS")
		}
		r.URL = &url.URL{Path: "*"}
	case target[0] == '/':
		u := out.url
		if u == nil {
			u = new(url.URL)
		}
		if !parseOriginForm(target, u) {
			return badRequest("invalid request-target")
		}
		r.URL = u
	default:
		authority, ok := absoluteAuthority(target)
		if !ok || !validAuthority(authority) {
			return badRequest("invalid absolute-form target")
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != authority {
			return badRequest("invalid absolute-form target")
		}
		r.URL = u
		absHost = authority
	}

	hdr := h.header(s)
	r.Header = hdr
	hosts := hdr["Host"]
	switch {
	case len(hosts) > 1:
		return badRequest("more than one Host field")
	case len(hosts) == 0 && minor == 1:
		return badRequest("missing Host field")
	case len(hosts) == 1 && !validAuthority(hosts[0]):
		return badRequest("invalid Host field")
	}
	if len(hosts) == 1 {
		r.Host = hosts[0]
		delete(hdr, "Host")
	}
	if absHost != "" {
		r.Host = absHost // RFC 9112 3.2.2: the target's authority wins
	}

	cls, tes := hdr["Content-Length"], hdr["Transfer-Encoding"]
	switch {
	case len(tes) > 0:
		switch {
		case minor == 0:
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		case len(cls) > 0:
			return badRequest("both Transfer-Encoding and Content-Length")
		case len(tes) > 1 || !asciiEqualFold(tes[0], "chunked"):
			return badRequest("unsupported Transfer-Encoding")
		}
		delete(hdr, "Transfer-Encoding")
		r.TransferEncoding = []string{"chunked"}
		r.ContentLength, out.body = -1, bodyChunked
		if decl := hdr["Trailer"]; len(decl) > 0 {
			r.Trailer = declaredTrailers(decl)
		}
	case len(cls) > 1:
		return badRequest("more than one Content-Length field")
	case len(cls) == 1:
		n, ok := parseContentLength(cls[0])
		if !ok {
			return badRequest("invalid Content-Length")
		}
		r.ContentLength, out.body = n, bodyFixed
		if n == 0 {
			out.body = bodyNone
		}
	default:
		out.body = bodyNone
	}
	out.contentLength = r.ContentLength

	conn := hdr["Connection"]
	if minor == 1 {
		r.Close = hasToken(conn, "close")
	} else {
		r.Close = hasToken(conn, "close") || !hasToken(conn, "keep-alive")
	}
	if exp := hdr["Expect"]; len(exp) > 0 {
		if len(exp) > 1 || !asciiEqualFold(exp[0], "100-continue") {
			return &ProtocolError{Status: http.StatusExpectationFailed, Reason: "unsupported expectation"}
		}
		out.expectContinue = minor == 1 && out.body != bodyNone
	}
	return nil
}

// parseOriginForm parses an origin-form target into u as
// url.ParseRequestURI does, without its allocation when the path needs no
// unescaping and has no byte that url.URL.EscapedPath would escape.
func parseOriginForm(target string, u *url.URL) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	plain := true
	for i := 0; i < len(path) && plain; i++ {
		plain = byteClass[path[i]]&isPlainPath != 0
	}
	if plain {
		*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
		return true
	}
	parsed, err := url.ParseRequestURI(target)
	if err != nil {
		return false
	}
	*u = *parsed
	return true
}

// parseVersion parses "HTTP/" DIGIT "." DIGIT.
func parseVersion(v string) (major, minor int, ok bool) {
	if len(v) != 8 || v[:5] != "HTTP/" || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

// absoluteAuthority returns the authority of an "http" or "https"
// absolute-form target.
func absoluteAuthority(target string) (string, bool) {
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok || !asciiEqualFold(scheme, "http") && !asciiEqualFold(scheme, "https") {
		return "", false
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	return rest, true
}

func hasPort(authority string) bool {
	i := strings.LastIndexByte(authority, ':')
	return i >= 0 && i > strings.LastIndexByte(authority, ']')
}

// declaredTrailers makes the Trailer map of a request that announces
// trailers: the announced names (canonical, allowed ones only) with nil
// values, filled when the body ends.
func declaredTrailers(decl []string) http.Header {
	var t http.Header
	for _, v := range decl {
		for v != "" {
			var name string
			name, v, _ = strings.Cut(v, ",")
			name = trimOWS(name)
			if !validToken(name) {
				continue
			}
			key := http.CanonicalHeaderKey(name)
			if forbiddenTrailers[key] {
				continue
			}
			if t == nil {
				t = make(http.Header)
			}
			t[key] = nil
		}
	}
	return t
}
