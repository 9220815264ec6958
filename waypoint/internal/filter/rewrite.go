package filter

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Rewrite changes r's host and path as rw says; prefix is what a
// PathPrefix match matched. The new path keeps r's query, and r.URL's Path
// and RawPath stay consistent, so r.URL.EscapedPath() and the request
// line sent upstream carry the rewritten path. r.RequestURI, the target
// as received, is left alone.
func Rewrite(r *http.Request, rw *config.Rewrite, prefix string) {
	if rw == nil {
		return
	}
	if rw.Hostname != "" {
		r.Host = rw.Hostname
	}
	if rw.Path != nil {
		setEscapedPath(r.URL, modifyPath(r.URL.EscapedPath(), rw.Path, prefix))
	}
}

// modifyPath applies a path modifier to the escaped path p.
func modifyPath(p string, m *config.PathModifier, prefix string) string {
	if !m.Prefix {
		return m.Value
	}
	return replacePrefix(p, prefix, m.Value)
}

// replacePrefix replaces the matched prefix of p by repl. A trailing "/"
// of either is ignored, the rest of p is kept as is, and an empty result
// is "/": prefix "/foo" and repl "/xyz" map "/foo/bar" to "/xyz/bar",
// "/foo" to "/xyz" and "/foo/" to "/xyz/"; repl "" or "/" maps "/foo/bar"
// to "/bar" and "/foo" to "/". A prefix that is not a whole-segment
// prefix of p (a caller's mistake) leaves p unchanged.
func replacePrefix(p, prefix, repl string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	rest, ok := strings.CutPrefix(p, prefix)
	if !ok || rest != "" && rest[0] != '/' {
		return p
	}
	out := strings.TrimSuffix(repl, "/") + rest
	if out == "" {
		return "/"
	}
	return out
}

// setEscapedPath sets u's path from its escaped form: Path decoded, and
// RawPath the escaped form when it is not Path's default encoding (url.URL
// keeps RawPath only then, and only when it is a valid encoding).
func setEscapedPath(u *url.URL, escaped string) {
	p, err := url.PathUnescape(escaped)
	if err != nil {
		// Not from a normalized path and a validated modifier; keep the
		// bytes rather than guess.
		u.Path, u.RawPath = escaped, ""
		return
	}
	u.Path, u.RawPath = p, ""
	if u.EscapedPath() != escaped {
		u.RawPath = escaped
	}
}
