package filter

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

func request(target, host string, headers ...string) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	r := &http.Request{Method: "GET", URL: u, Host: host, Header: http.Header{}, RequestURI: target}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Header.Add(name, strings.TrimSpace(value))
	}
	return r
}

func hs(kv ...string) []config.Header {
	var out []config.Header
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, config.Header{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// TestHeaders replays httproute-request-header-modifier.go's cases
// (headers as the backend sees them) and the header part of
// httproute-rewrite-path.go's.
func TestHeaders(t *testing.T) {
	multiple := &config.HeaderModifier{
		Set:    hs("X-Header-Set-1", "header-set-1", "X-Header-Set-2", "header-set-2"),
		Add:    hs("X-Header-Add-1", "header-add-1", "X-Header-Add-2", "header-add-2", "X-Header-Add-3", "header-add-3"),
		Remove: []string{"X-Header-Remove-1", "X-Header-Remove-2"},
	}
	rewriteAndModify := &config.HeaderModifier{
		Set:    hs("X-Header-Set", "set-overwrites-values"),
		Add:    hs("X-Header-Add", "header-val-1", "X-Header-Add-Append", "header-val-2"),
		Remove: []string{"X-Header-Remove"},
	}
	tests := []struct {
		name string
		m    *config.HeaderModifier
		in   []string
		want http.Header
	}{
		{"set adds", &config.HeaderModifier{Set: hs("X-Header-Set", "set-overwrites-values")},
			[]string{"Some-Other-Header: val"},
			http.Header{"Some-Other-Header": {"val"}, "X-Header-Set": {"set-overwrites-values"}}},
		{"set overwrites", &config.HeaderModifier{Set: hs("X-Header-Set", "set-overwrites-values")},
			[]string{"Some-Other-Header: val", "X-Header-Set: some-other-value", "X-Header-Set: another"},
			http.Header{"Some-Other-Header": {"val"}, "X-Header-Set": {"set-overwrites-values"}}},
		{"add adds", &config.HeaderModifier{Add: hs("X-Header-Add", "add-appends-values")},
			[]string{"Some-Other-Header: val"},
			http.Header{"Some-Other-Header": {"val"}, "X-Header-Add": {"add-appends-values"}}},
		{"add appends", &config.HeaderModifier{Add: hs("X-Header-Add", "add-appends-values")},
			[]string{"Some-Other-Header: val", "X-Header-Add: some-other-value"},
			http.Header{"Some-Other-Header": {"val"}, "X-Header-Add": {"some-other-value", "add-appends-values"}}},
		{"remove", &config.HeaderModifier{Remove: []string{"X-Header-Remove"}},
			[]string{"X-Header-Remove: val", "X-Header-Remove: val2"},
			http.Header{}},
		{"remove absent", &config.HeaderModifier{Remove: []string{"X-Header-Remove"}},
			[]string{"A: 1"},
			http.Header{"A": {"1"}}},
		{"multiple", multiple,
			[]string{"X-Header-Set-2: set-val-2", "X-Header-Add-2: add-val-2", "X-Header-Remove-2: remove-val-2", "Another-Header: another-header-val"},
			http.Header{
				"X-Header-Set-1": {"header-set-1"}, "X-Header-Set-2": {"header-set-2"},
				"X-Header-Add-1": {"header-add-1"}, "X-Header-Add-2": {"add-val-2", "header-add-2"}, "X-Header-Add-3": {"header-add-3"},
				"Another-Header": {"another-header-val"},
			}},
		// The request sends lower-case names; they are the same fields.
		{"case-insensitivity", &config.HeaderModifier{Set: hs("X-Header-Set", "header-set"), Add: hs("X-Header-Add", "header-add"), Remove: []string{"X-Header-Remove"}},
			[]string{"x-header-set: original-val-set", "x-header-add: original-val-add", "x-header-remove: original-val-remove", "Another-Header: another-header-val"},
			http.Header{"X-Header-Set": {"header-set"}, "X-Header-Add": {"original-val-add", "header-add"}, "Another-Header": {"another-header-val"}}},
		// A hand-built modifier's names are canonicalized too.
		{"lower-case modifier names", &config.HeaderModifier{Set: hs("x-a", "1"), Add: hs("x-b", "2"), Remove: []string{"x-c"}},
			[]string{"X-A: 0", "X-B: 1", "X-C: 1"},
			http.Header{"X-A": {"1"}, "X-B": {"1", "2"}}},
		{"rewrite and modify headers", rewriteAndModify,
			[]string{"X-Header-Remove: remove-val", "X-Header-Add-Append: append-val-1", "X-Header-Set: set-val"},
			http.Header{"X-Header-Add": {"header-val-1"}, "X-Header-Add-Append": {"append-val-1", "header-val-2"}, "X-Header-Set": {"set-overwrites-values"}}},
		// Set, then Add, then Remove, for a hand-built modifier that
		// names a header twice (Compile rejects it).
		{"order", &config.HeaderModifier{Set: hs("X", "set"), Add: hs("X", "add", "Y", "add"), Remove: []string{"Y"}},
			[]string{"X: old", "Y: old"},
			http.Header{"X": {"set", "add"}}},
		{"nil modifier", nil, []string{"A: 1"}, http.Header{"A": {"1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := request("/", "echo", tt.in...).Header
			Headers(h, tt.m)
			if !equalHeader(h, tt.want) {
				t.Errorf("headers = %v, want %v", h, tt.want)
			}
		})
	}
	Headers(nil, multiple) // must not panic
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func full(p string) *config.PathModifier   { return &config.PathModifier{Value: p} }
func prefix(p string) *config.PathModifier { return &config.PathModifier{Prefix: true, Value: p} }

// TestRedirectLocation replays the redirect conformance tests: the mesh
// ones (a request to Service echo, port 80) and the Gateway ones that
// pin the port rules (listeners on 80, 8080 and 443).
func TestRedirectLocation(t *testing.T) {
	tests := []struct {
		name   string
		target string // request path and query
		host   string // Host header
		scheme string // the request's
		port   uint16 // the port it was sent to
		rd     config.Redirect
		prefix string // what the PathPrefix match matched
		want   string
	}{
		// mesh/httproute-redirect-path.go
		{"prefix", "/original-prefix/lemon", "echo", "http", 80, config.Redirect{Path: prefix("/replacement-prefix")}, "/original-prefix", "http://echo/replacement-prefix/lemon"},
		{"full path", "/full/path/original", "echo", "http", 80, config.Redirect{Path: full("/full-path-replacement")}, "/full", "http://echo/full-path-replacement"},
		{"path and host", "/path-and-host", "echo", "http", 80, config.Redirect{Hostname: "example.org", Path: prefix("/replacement-prefix")}, "/path-and-host", "http://example.org/replacement-prefix"},
		{"path and status", "/path-and-status", "echo", "http", 80, config.Redirect{Path: prefix("/replacement-prefix"), StatusCode: 301}, "/path-and-status", "http://echo/replacement-prefix"},
		{"full path and host", "/full-path-and-host", "echo", "http", 80, config.Redirect{Hostname: "example.org", Path: full("/replacement-full")}, "/full-path-and-host", "http://example.org/replacement-full"},
		{"full path and status", "/full-path-and-status", "echo", "http", 80, config.Redirect{Path: full("/replacement-full"), StatusCode: 301}, "/full-path-and-status", "http://echo/replacement-full"},
		// mesh/httproute-redirect-port.go
		{"port", "/port", "echo", "http", 80, config.Redirect{Port: 8083}, "/port", "http://echo:8083/port"},
		{"port and host", "/port-and-host", "echo", "http", 80, config.Redirect{Hostname: "example.org", Port: 8083}, "/port-and-host", "http://example.org:8083/port-and-host"},
		{"port and status", "/port-and-status", "echo", "http", 80, config.Redirect{Port: 8083, StatusCode: 301}, "/port-and-status", "http://echo:8083/port-and-status"},
		{"port and host and status", "/port-and-host-and-status", "echo", "http", 80, config.Redirect{Port: 8083, Hostname: "example.org", StatusCode: 302}, "/port-and-host-and-status", "http://example.org:8083/port-and-host-and-status"},
		// mesh/httproute-redirect-scheme.go
		{"scheme", "/scheme", "echo", "http", 80, config.Redirect{Scheme: "https"}, "/scheme", "https://echo/scheme"},
		{"scheme and host", "/scheme-and-host", "echo", "http", 80, config.Redirect{Scheme: "https", Hostname: "example.org"}, "/scheme-and-host", "https://example.org/scheme-and-host"},
		{"scheme and status", "/scheme-and-status", "echo", "http", 80, config.Redirect{Scheme: "https", StatusCode: 301}, "/scheme-and-status", "https://echo/scheme-and-status"},
		// mesh/httproute-redirect-host-and-status.go
		{"hostname", "/hostname-redirect", "echo", "http", 80, config.Redirect{Hostname: "example.org"}, "/hostname-redirect", "http://example.org/hostname-redirect"},
		// httproute-redirect-port-and-scheme.go, listener on port 80.
		{"80: scheme nil, port nil", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org"}, "", "http://example.org/p"},
		{"80: scheme nil, port 80", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org", Port: 80}, "", "http://example.org/p"},
		{"80: scheme nil, port 8080", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org", Port: 8080}, "", "http://example.org:8080/p"},
		{"80: scheme https, port nil", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org", Scheme: "https"}, "", "https://example.org/p"},
		{"80: scheme https, port 443", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org", Scheme: "https", Port: 443}, "", "https://example.org/p"},
		{"80: scheme https, port 8443", "/p", "gw", "http", 80, config.Redirect{Hostname: "example.org", Scheme: "https", Port: 8443}, "", "https://example.org:8443/p"},
		// Listener on port 8080.
		{"8080: scheme nil, port nil", "/p", "gw:8080", "http", 8080, config.Redirect{Hostname: "example.org"}, "", "http://example.org:8080/p"},
		{"8080: scheme nil, port 80", "/p", "gw:8080", "http", 8080, config.Redirect{Hostname: "example.org", Port: 80}, "", "http://example.org/p"},
		{"8080: scheme https, port nil", "/p", "gw:8080", "http", 8080, config.Redirect{Hostname: "example.org", Scheme: "https"}, "", "https://example.org/p"},
		// Listener on port 443 (HTTPS).
		{"443: scheme nil, port nil", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org"}, "", "https://example.org/p"},
		{"443: scheme nil, port 443", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org", Port: 443}, "", "https://example.org/p"},
		{"443: scheme nil, port 8443", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org", Port: 8443}, "", "https://example.org:8443/p"},
		{"443: scheme http, port nil", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org", Scheme: "http"}, "", "http://example.org/p"},
		{"443: scheme http, port 80", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org", Scheme: "http", Port: 80}, "", "http://example.org/p"},
		{"443: scheme http, port 8080", "/p", "example.org", "https", 443, config.Redirect{Hostname: "example.org", Scheme: "http", Port: 8080}, "", "http://example.org:8080/p"},
		// The request's host without its port, the query kept.
		{"host port dropped", "/x?a=1&b=%20", "echo:8080", "http", 8080, config.Redirect{Path: full("/y")}, "", "http://echo:8080/y?a=1&b=%20"},
		{"host port is not the service port", "/x", "echo:9999", "http", 80, config.Redirect{}, "", "http://echo/x"},
		{"unknown service port: the host's", "/x", "echo:9999", "http", 0, config.Redirect{}, "", "http://echo:9999/x"},
		{"IPv6 host", "/x", "[fd00::1]:8080", "http", 8080, config.Redirect{Scheme: "https"}, "", "https://[fd00::1]/x"},
		{"escaped path kept", "/a%20b/c", "echo", "http", 80, config.Redirect{Path: prefix("/z")}, "/a%20b", "http://echo/z/c"},
		{"default scheme", "/x", "echo", "", 80, config.Redirect{}, "", "http://echo/x"},
		// Without any host the Location is a relative reference.
		{"no host", "/x?q=1", "", "http", 80, config.Redirect{Port: 8083}, "", "/x?q=1"},
		{"hostile host", "/x", "evil\r\nSet-Cookie: a=b", "http", 80, config.Redirect{}, "", "/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(tt.target, tt.host)
			if got := RedirectLocation(r, tt.scheme, tt.port, &tt.rd, tt.prefix); got != tt.want {
				t.Errorf("Location = %q, want %q", got, tt.want)
			}
		})
	}
	// A nil redirect keeps the request's URL.
	if got := RedirectLocation(request("/x", "echo"), "http", 80, nil, ""); got != "http://echo/x" {
		t.Errorf("nil redirect: %q", got)
	}
	// A relative reference never starts with "//".
	r := request("/x", "")
	r.URL.Path = "//evil.example/x"
	if got := RedirectLocation(r, "http", 80, &config.Redirect{}, ""); got != "/evil.example/x" {
		t.Errorf("network-path reference: %q", got)
	}
}

// TestReplacePrefixMatch is the ReplacePrefixMatch table of
// HTTPPathModifier, row by row.
func TestReplacePrefixMatch(t *testing.T) {
	tests := []struct{ path, prefix, repl, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// The catch-all prefix.
		{"/foo", "/", "/xyz", "/xyz/foo"},
		{"/", "/", "/xyz", "/xyz/"},
		{"/foo", "/", "", "/foo"},
		// A prefix that does not match keeps the path.
		{"/foobar", "/foo", "/xyz", "/foobar"},
		{"/bar", "/foo", "/xyz", "/bar"},
	}
	for _, tt := range tests {
		if got := replacePrefix(tt.path, tt.prefix, tt.repl); got != tt.want {
			t.Errorf("replacePrefix(%q, %q, %q) = %q, want %q", tt.path, tt.prefix, tt.repl, got, tt.want)
		}
	}
}

// TestRewrite replays httproute-rewrite-path.go (mesh and Gateway) and
// httproute-rewrite-host.go.
func TestRewrite(t *testing.T) {
	tests := []struct {
		name, target, host string
		rw                 config.Rewrite
		prefix             string
		wantHost, wantURI  string
	}{
		{"prefix", "/prefix/one/two", "echo", config.Rewrite{Path: prefix("/one")}, "/prefix/one", "echo", "/one/two"},
		{"strip prefix", "/strip-prefix/three", "echo", config.Rewrite{Path: prefix("/")}, "/strip-prefix", "echo", "/three"},
		{"strip prefix, whole path", "/strip-prefix", "echo", config.Rewrite{Path: prefix("/")}, "/strip-prefix", "echo", "/"},
		{"full path", "/full/one/two", "echo", config.Rewrite{Path: full("/one")}, "/full/one", "echo", "/one"},
		{"full path and headers", "/full/rewrite-path-and-modify-headers/test", "echo", config.Rewrite{Path: full("/test")}, "/full/rewrite-path-and-modify-headers", "echo", "/test"},
		{"prefix and headers", "/prefix/rewrite-path-and-modify-headers/one", "echo", config.Rewrite{Path: prefix("/prefix")}, "/prefix/rewrite-path-and-modify-headers", "echo", "/prefix/one"},
		{"host", "/one", "rewrite.example", config.Rewrite{Hostname: "one.example.org"}, "/one", "one.example.org", "/one"},
		{"host only", "/two", "rewrite.example", config.Rewrite{Hostname: "example.org"}, "/", "example.org", "/two"},
		{"host and path", "/a/b?x=1", "rewrite.example:8080", config.Rewrite{Hostname: "test.example.org", Path: prefix("/c")}, "/a", "test.example.org", "/c/b?x=1"},
		{"query kept", "/prefix/one?a=1&b=2", "echo", config.Rewrite{Path: prefix("/x")}, "/prefix", "echo", "/x/one?a=1&b=2"},
		{"escapes in the rest kept", "/p/a%2Bb%3Fc", "echo", config.Rewrite{Path: prefix("/q")}, "/p", "echo", "/q/a%2Bb%3Fc"},
		{"escapes in the matched prefix dropped", "/a%20b/c", "echo", config.Rewrite{Path: prefix("/d")}, "/a%20b", "echo", "/d/c"},
		{"escapes in the replacement", "/x", "echo", config.Rewrite{Path: full("/y%3Fz")}, "", "echo", "/y%3Fz"},
		{"nothing", "/x", "echo", config.Rewrite{}, "", "echo", "/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := request(tt.target, tt.host)
			Rewrite(r, &tt.rw, tt.prefix)
			if r.Host != tt.wantHost {
				t.Errorf("Host = %q, want %q", r.Host, tt.wantHost)
			}
			if got := r.URL.RequestURI(); got != tt.wantURI {
				t.Errorf("request target = %q, want %q", got, tt.wantURI)
			}
			// Path and RawPath agree: Path is the decoded path, and
			// RawPath is set only when it differs from Path's default
			// encoding.
			want, _ := url.PathUnescape(r.URL.EscapedPath())
			if r.URL.Path != want {
				t.Errorf("Path = %q, want %q (decoded %q)", r.URL.Path, want, r.URL.EscapedPath())
			}
			if r.URL.RawPath != "" && (&url.URL{Path: r.URL.Path}).EscapedPath() == r.URL.RawPath {
				t.Errorf("RawPath %q set though it is Path's default encoding", r.URL.RawPath)
			}
			if r.RequestURI != tt.target {
				t.Errorf("RequestURI = %q, want it left as received", r.RequestURI)
			}
		})
	}
	r := request("/x", "echo")
	Rewrite(r, nil, "")
	if r.URL.Path != "/x" || r.Host != "echo" {
		t.Errorf("nil rewrite changed the request: %v %q", r.URL, r.Host)
	}
}
