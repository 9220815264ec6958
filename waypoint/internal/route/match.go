package route

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// matches reports whether r satisfies every condition of m, and returns
// the prefix a PathPrefix condition matched.
func matches(m *config.Match, r *http.Request, path string, call grpcCall) (prefix string, ok bool) {
	if m.Path != nil {
		if prefix, ok = matchPath(m.Path, path); !ok {
			return "", false
		}
	}
	if m.Method != "" && r.Method != m.Method {
		return "", false
	}
	if g := m.GRPC; g != nil {
		if !call.ok || !matchName(g.Service, g.ServiceRegex, call.service) || !matchName(g.Method, g.MethodRegex, call.method) {
			return "", false
		}
	}
	for i := range m.Headers {
		if !matchHeader(&m.Headers[i], r.Header) {
			return "", false
		}
	}
	for i := range m.Query {
		v, found := queryParam(r.URL.RawQuery, m.Query[i].Name)
		if !found || !matchValue(&m.Query[i], v) {
			return "", false
		}
	}
	return prefix, true
}

func matchPath(p *config.PathMatch, path string) (prefix string, ok bool) {
	switch p.Type {
	case config.PathExact:
		return "", path == p.Value
	case config.PathPrefix:
		return p.Value, hasSegmentPrefix(path, p.Value)
	case config.PathRegex:
		return "", p.Regex != nil && p.Regex.MatchString(path)
	}
	return "", false
}

// hasSegmentPrefix reports whether prefix is a prefix of path made of
// whole segments: "/foo" and "/foo/" both match "/foo", "/foo/" and
// "/foo/bar", and neither matches "/foobar" (PathMatchPathPrefix: "When
// specified, a trailing `/` is ignored").
func hasSegmentPrefix(path, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// matchName matches a gRPC service or method; an empty exact value
// matches any.
func matchName(exact string, re *regexp.Regexp, v string) bool {
	switch {
	case re != nil:
		return re.MatchString(v)
	case exact != "":
		return v == exact
	}
	return true
}

func matchHeader(m *config.ValueMatch, h http.Header) bool {
	key := m.Key
	if key == "" {
		key = http.CanonicalHeaderKey(m.Name)
	}
	vs := h[key]
	switch len(vs) {
	case 0:
		return false
	case 1:
		return matchValue(m, vs[0])
	}
	sep := ","
	if key == "Cookie" {
		sep = "; "
	}
	return matchValue(m, strings.Join(vs, sep))
}

func matchValue(m *config.ValueMatch, v string) bool {
	if m.Regex != nil {
		return m.Regex.MatchString(v)
	}
	return v == m.Value
}

// queryParam returns the first value of the query parameter name in the
// raw query, decoded. It reads pairs as url.ParseQuery does (split on
// "&", "+" is a space, a pair with a ";" or a bad escape is skipped) but
// without building the whole map for every request.
func queryParam(raw, name string) (value string, found bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, ok := unescapeQuery(k)
		if !ok || k != name {
			continue
		}
		if v, ok = unescapeQuery(v); ok {
			return v, true
		}
	}
	return "", false
}

// unescapeQuery decodes a query component, allocating only when it holds
// an escape.
func unescapeQuery(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}
