package route

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzQueryParam checks the query reader against url.ParseQuery: the
// first value it finds for a name is ParseQuery's first value, and it
// finds one exactly when ParseQuery does.
func FuzzQueryParam(f *testing.F) {
	for _, seed := range [][2]string{
		{"animal=whale", "animal"},
		{"a=1&animal=whale&animal=dolphin", "animal"},
		{"q=a+b%26c", "q"},
		{"a%20b=1", "a b"},
		{"q=%zz&q=2", "q"},
		{"q=1;x=y&q=2", "q"},
		{"q", "q"},
		{"&&q=&", "q"},
		{"=x", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, raw, name string) {
		if strings.Count(raw, "&") >= 1000 {
			return // url.ParseQuery refuses queries with too many parameters
		}
		got, found := queryParam(raw, name)
		values, _ := url.ParseQuery(raw) // keeps the pairs it can read
		want, ok := values[name]
		if found != ok {
			t.Fatalf("queryParam(%q, %q) found = %v, url.ParseQuery has %v", raw, name, found, want)
		}
		if found && got != want[0] {
			t.Fatalf("queryParam(%q, %q) = %q, url.ParseQuery's first value is %q", raw, name, got, want[0])
		}
	})
}

// FuzzGRPCMethod checks that a split gRPC path puts its parts back
// together and that neither part is empty or holds a "/".
func FuzzGRPCMethod(f *testing.F) {
	for _, seed := range []string{"/pkg.Echo/Echo", "/pkg.Echo", "/a/b/c", "//b", "/a/", "", "a/b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		svc, method, ok := grpcMethod(path)
		if !ok {
			if svc != "" || method != "" {
				t.Fatalf("grpcMethod(%q) = %q, %q, false", path, svc, method)
			}
			return
		}
		if svc == "" || method == "" || strings.Contains(svc, "/") || strings.Contains(method, "/") {
			t.Fatalf("grpcMethod(%q) = %q, %q", path, svc, method)
		}
		if "/"+svc+"/"+method != path {
			t.Fatalf("grpcMethod(%q) = %q, %q: does not rebuild the path", path, svc, method)
		}
	})
}

// FuzzSegmentPrefix checks the PathPrefix rule: a match is a prefix of
// the path ending at a segment boundary, ignoring a trailing slash of the
// prefix.
func FuzzSegmentPrefix(f *testing.F) {
	for _, seed := range [][2]string{{"/foo/bar", "/foo"}, {"/foobar", "/foo"}, {"/foo", "/foo/"}, {"/", "/"}, {"/a", "/"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, path, prefix string) {
		got := hasSegmentPrefix(path, prefix)
		p := strings.TrimSuffix(prefix, "/")
		want := path == p || strings.HasPrefix(path, p+"/")
		if got != want {
			t.Fatalf("hasSegmentPrefix(%q, %q) = %v, want %v", path, prefix, got, want)
		}
	})
}
