package filter

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// RedirectLocation returns the Location of the redirect rd answers r with.
// scheme is the request's ("http"), port the service port it was sent to,
// prefix what a PathPrefix match matched ("" otherwise).
//
// Following HTTPRequestRedirectFilter and the redirect conformance tests:
// the hostname is rd's, else the request's host without its port; the
// port is rd's, else the well-known port of rd's scheme when rd sets one
// (80 for http, 443 for https), else the port the request was sent to
// (the "listener port"; in the mesh, the service port); a port equal to
// the scheme's default is left out. The path is rd's modification of the
// request's, and the query is kept. The status code is rd.StatusCode.
//
// A request without any host and a redirect without a hostname yield a
// relative reference (the path and query), which RFC 9110 10.2.2 allows.
func RedirectLocation(r *http.Request, scheme string, port uint16, rd *config.Redirect, prefix string) string {
	if rd == nil {
		rd = &config.Redirect{}
	}
	path := r.URL.EscapedPath()
	if !strings.HasPrefix(path, "/") {
		path = "/" + path // only a normalized path reaches here, but never let it join the port
	}
	if rd.Path != nil {
		path = modifyPath(path, rd.Path, prefix)
	}
	query := ""
	if r.URL.RawQuery != "" {
		query = "?" + escapeCTL(r.URL.RawQuery)
	}

	host, reqPort := splitHost(r.Host)
	if host == "" {
		host, reqPort = splitHost(r.URL.Host)
	}
	if !validHost(host) || !digits(reqPort) {
		// Not an authority a parser let through; never copy it into a
		// header.
		host, reqPort = "", ""
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if host == "" {
		// "//x" would be read as a network-path reference to host x.
		return "/" + strings.TrimLeft(path, "/") + query
	}

	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	if scheme == "" {
		scheme = "http"
	}
	var p string // "" for the scheme's well-known port, left out
	switch {
	case rd.Port != 0:
		p = strconv.Itoa(int(rd.Port))
	case rd.Scheme != "":
		// The well-known port of the new scheme.
	case port != 0:
		p = strconv.Itoa(int(port))
	default:
		p = reqPort
	}
	if p == defaultPort(scheme) {
		p = ""
	}
	if p != "" {
		host += ":" + p
	}
	return scheme + "://" + host + path + query
}

func defaultPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}

// splitHost splits an authority into its host (an IPv6 literal keeps its
// brackets) and port; either may be "".
func splitHost(authority string) (host, port string) {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 || strings.IndexByte(authority[i:], ']') >= 0 {
		return authority, ""
	}
	return authority[:i], authority[i+1:]
}

// validHost reports whether h is a reg-name or IPv4 address (RFC 3986
// unreserved and sub-delims; no percent escapes, which no DNS name has)
// or a bracketed IPv6 address: nothing that could end the Location
// header or change the URL's host.
func validHost(h string) bool {
	if literal, ok := strings.CutPrefix(h, "["); ok {
		ip, err := netip.ParseAddr(strings.TrimSuffix(literal, "]"))
		return err == nil && strings.HasSuffix(literal, "]") && ip.Is6() && ip.Zone() == ""
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// escapeCTL percent-encodes the bytes of a raw query that may not appear
// in a URL's query or a header field (controls, space, non-ASCII, "#");
// a query a parser accepted has none, and is returned as is.
func escapeCTL(q string) string {
	bad := func(c byte) bool { return c <= ' ' || c >= 0x7f || c == '#' }
	i := 0
	for i < len(q) && !bad(q[i]) {
		i++
	}
	if i == len(q) {
		return q
	}
	const hex = "0123456789ABCDEF"
	b := []byte(q[:i])
	for ; i < len(q); i++ {
		if c := q[i]; bad(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
