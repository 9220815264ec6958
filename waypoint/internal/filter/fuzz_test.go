package filter

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// FuzzRedirectLocation reads hostile hosts, paths and queries: the
// Location is always a URL that parses, with no byte that could end a
// header field, whose path is the request's and whose query is the
// request's when that query was clean.
func FuzzRedirectLocation(f *testing.F) {
	f.Add("echo", "/a/b", "x=1", "", uint16(80), uint16(0))
	f.Add("echo:8080", "/a%20b", "", "https", uint16(8080), uint16(0))
	f.Add("[fd00::1]:80", "/", "q", "http", uint16(0), uint16(8443))
	f.Add("evil\r\nX: y", "//evil", "a\nb", "", uint16(80), uint16(0))
	f.Add("", "/x", "", "", uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, host, path, query, scheme string, port, rdPort uint16) {
		if scheme != "" && scheme != "http" && scheme != "https" {
			return // Compile accepts only these
		}
		r := &http.Request{Host: host, URL: &url.URL{Path: path, RawQuery: query}}
		loc := RedirectLocation(r, "http", port, &config.Redirect{Scheme: scheme, Port: rdPort}, "")
		for i := 0; i < len(loc); i++ {
			if c := loc[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("Location %q has byte %#x", loc, c)
			}
		}
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
		if strings.HasPrefix(loc, "//") {
			t.Fatalf("Location %q is a network-path reference", loc)
		}
		wantPath := r.URL.EscapedPath()
		if !strings.HasPrefix(wantPath, "/") {
			wantPath = "/" + wantPath
		}
		if u.Host == "" {
			wantPath = "/" + strings.TrimLeft(wantPath, "/")
		}
		if u.EscapedPath() != wantPath {
			t.Fatalf("Location %q has path %q, want %q", loc, u.EscapedPath(), wantPath)
		}
		if clean := strings.IndexFunc(query, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '#' }) < 0; clean && u.RawQuery != query {
			t.Fatalf("Location %q has query %q, want %q", loc, u.RawQuery, query)
		}
	})
}

// FuzzReplacePrefix checks ReplacePrefixMatch's algebra on paths that a
// prefix matches: the result is a path, replacing a prefix by itself
// changes nothing, and replacing it back restores the path.
func FuzzReplacePrefix(f *testing.F) {
	f.Add("/foo/bar", "/foo", "/xyz")
	f.Add("/foo/", "/foo/", "/")
	f.Add("/", "/", "/a/b")
	f.Add("/a", "/", "")
	f.Fuzz(func(t *testing.T, path, prefix, repl string) {
		if !strings.HasPrefix(path, "/") || !strings.HasPrefix(prefix, "/") || strings.Contains(path, "//") {
			return // paths are normalized; prefixes start with "/"
		}
		p := strings.TrimSuffix(prefix, "/")
		if path != p && !strings.HasPrefix(path, p+"/") {
			return
		}
		if repl != "" && !strings.HasPrefix(repl, "/") {
			return
		}
		got := replacePrefix(path, prefix, repl)
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("replacePrefix(%q, %q, %q) = %q: not a path", path, prefix, repl, got)
		}
		if same := replacePrefix(path, prefix, prefix); same != path {
			t.Fatalf("replacePrefix(%q, %q, itself) = %q", path, prefix, same)
		}
		r := strings.TrimSuffix(repl, "/")
		if r == "" || strings.HasSuffix(r, "/") {
			return // stripping loses where the prefix was
		}
		if back := replacePrefix(got, r, prefix); back != path {
			t.Fatalf("replacePrefix(%q, %q, %q) = %q, and back %q, want %q", path, prefix, repl, got, back, path)
		}
	})
}
