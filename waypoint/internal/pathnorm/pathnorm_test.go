package pathnorm

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		// Already normal: returned as is.
		{"/", "/"},
		{"/admin", "/admin"},
		{"/admin/", "/admin/"},
		{"/ADMIN", "/ADMIN"},
		{"/a/b.c/d..e/.f/..g", "/a/b.c/d..e/.f/..g"},
		{"/a%20b/%3F%23%25", "/a%20b/%3F%23%25"},
		{"/a;b=c/@:!$&'()*+,=", "/a;b=c/@:!$&'()*+,="},
		{"/%C3%A9", "/%C3%A9"},

		// Every way of writing /admin.
		{"//admin", "/admin"},
		{"///admin", "/admin"},
		{"/./admin", "/admin"},
		{"/x/../admin", "/admin"},
		{"/x/y/../../admin", "/admin"},
		{"/../admin", "/admin"},
		{"/../../../admin", "/admin"},
		{"/%61dmin", "/admin"},
		{"/%61%64%6D%69%6e", "/admin"},
		{"/%2e/admin", "/admin"},
		{"/%2e%2e/admin", "/admin"},
		{"/%2E%2E/admin", "/admin"},
		{"/.%2e/admin", "/admin"},
		{"/%2fadmin", "/admin"},
		{"/%2F%2Fadmin", "/admin"},
		{"\\admin", "/admin"},
		{"/%5cadmin", "/admin"},
		{"/%5Cadmin", "/admin"},
		{"\\\\admin", "/admin"},
		{"/x/..\\admin", "/admin"},
		{"/x%2F..%2Fadmin", "/admin"},
		{"/admin%2F..%2Fadmin", "/admin"},
		{"/admin/.", "/admin/"},
		{"/admin/x/..", "/admin/"},
		{"/admin%2f", "/admin/"},
		{"/admin//", "/admin/"},
		{"/admin/./", "/admin/"},

		// Under /admin/.
		{"/admin//users", "/admin/users"},
		{"/admin%2fusers", "/admin/users"},
		{"/admin%2Fusers", "/admin/users"},
		{"/admin\\users", "/admin/users"},
		{"/admin%5Cusers", "/admin/users"},
		{"/admin/./users", "/admin/users"},
		{"/public/../admin/users", "/admin/users"},
		{"/public/%2E%2E/admin/users", "/admin/users"},
		{"/public%2F%2E%2E%2Fadmin%2Fusers", "/admin/users"},
		{"/admin/%75sers", "/admin/users"},

		// Other normalizations.
		{"/%7e/%5f%2D%2e", "/~/_-."},
		{"/%3f", "/%3F"},
		{"/%3a%ff%c3%a9", "/%3A%FF%C3%A9"},
		{"/%252F", "/%252F"},
		{"/a/b/..", "/a/"},
		{"/a/b/../", "/a/"},
		{"/..", "/"},
		{"/.", "/"},
		{"//", "/"},
		{"/./", "/"},
		{"/a/../..", "/"},
		{"/...", "/..."},
		{"/.../x", "/.../x"},
		{"/..a/b", "/..a/b"},
		// Rewriting in place must not change what a segment was read as.
		{"/%2F0.", "/0."},
		{"/%2F%2F..", "/"},
		{"/a%2F%2Fb%2F.", "/a/b/"},
		{"/a/.b", "/a/.b"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeRefuses(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", ErrNotAbsolute},
		{"admin", ErrNotAbsolute},
		{"*", ErrNotAbsolute},
		{"example.com:443", ErrNotAbsolute},
		{"http://example.com/admin", ErrNotAbsolute},
		{"%2Fadmin", ErrNotAbsolute},
		{"/%zz", ErrBadEscape},
		{"/%4", ErrBadEscape},
		{"/%", ErrBadEscape},
		{"/a%2", ErrBadEscape},
		{"/%g0", ErrBadEscape},
		{"/%%41", ErrBadEscape},
		{"/%00", ErrEncodedNUL},
		{"/a/%00/b", ErrEncodedNUL},
		{"/a b", ErrBadByte},
		{"/a\tb", ErrBadByte},
		{"/a\x00", ErrBadByte},
		{"/a\nb", ErrBadByte},
		{"/a\x7f", ErrBadByte},
		{"/\xc3\xa9", ErrBadByte},
		{"/\x80", ErrBadByte},
		{"/a?b", ErrBadByte},
		{"/a#b", ErrBadByte},
		{"/../%zz", ErrBadEscape},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if !errors.Is(err, tt.want) {
			t.Errorf("Normalize(%q) = %q, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// An already-normal path costs no allocation: most requests.
func TestNormalizeNormalDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/", "/api/v1/users/123", "/a%20b/c.d", "/static/app.min.js"} {
		n := testing.AllocsPerRun(100, func() {
			if got, err := Normalize(p); err != nil || got != p {
				t.Fatalf("Normalize(%q) = %q, %v", p, got, err)
			}
		})
		if n != 0 {
			t.Errorf("Normalize(%q): %v allocations, want 0", p, n)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"normal", "/api/v1/namespaces/default/pods/sleep-7c9b4f-x2k/log"},
		{"encoded", "/api/v1/namespaces/default/pods/sleep%2D7c9b4f%2dx2k/log"},
		{"dotted", "/api/v1/./namespaces//default/../default/pods/sleep/log"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(bc.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzNormalize checks what a normalized path guarantees: it starts with
// "/", has no empty, "." or ".." segment, no backslash, no escape of an
// unreserved character, slash or backslash, and only upper-case escapes;
// decoding it once yields the same segments; normalizing it again changes
// nothing and takes the fast path; and its dot segments resolve as
// path.Clean resolves the decoded input.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/admin", "//admin", "/./admin", "/x/../admin", "/%61dmin", "/ADMIN",
		"/admin/", "/admin%2f", "/admin%2F..%2Fadmin", "/%2e%2e/admin", "\\admin", "/%zz", "/%00",
		"/a/b/..", "/%C3%A9", "/a?b", "/%252e%252e/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if out != "" {
				t.Fatalf("Normalize(%q) = %q with error %v", in, out, err)
			}
			return
		}
		if !strings.HasPrefix(out, "/") {
			t.Fatalf("Normalize(%q) = %q: does not start with /", in, out)
		}
		for _, bad := range []string{"//", "\\"} {
			if strings.Contains(out, bad) {
				t.Fatalf("Normalize(%q) = %q: holds %q", in, out, bad)
			}
		}
		for _, seg := range strings.Split(out[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("Normalize(%q) = %q: dot segment", in, out)
			}
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if c <= ' ' || c >= 0x7f || c == '?' || c == '#' {
				t.Fatalf("Normalize(%q) = %q: byte %q", in, out, c)
			}
			if c != '%' {
				continue
			}
			if i+2 >= len(out) || !isUpperHex(out[i+1]) || !isUpperHex(out[i+2]) {
				t.Fatalf("Normalize(%q) = %q: escape at %d is not two upper-case hex digits", in, out, i)
			}
			if b := unhex(out[i+1])<<4 | unhex(out[i+2]); decodes(b) {
				t.Fatalf("Normalize(%q) = %q: escape of %q left encoded", in, out, b)
			}
			i += 2
		}
		if again, err := Normalize(out); err != nil || again != out {
			t.Fatalf("Normalize(Normalize(%q)) = %q, %v; want %q", in, again, err, out)
		}
		if !isNormal(out) {
			t.Fatalf("Normalize(%q) = %q, which the fast path does not recognize", in, out)
		}

		// What a backend reads: decoding once makes no new separator.
		dec, err := url.PathUnescape(out)
		if err != nil {
			t.Fatalf("Normalize(%q) = %q: does not decode: %v", in, out, err)
		}
		if strings.Count(dec, "/") != strings.Count(out, "/") || strings.Contains(dec, "\\") {
			t.Fatalf("Normalize(%q) = %q decodes to %q: new separators", in, out, dec)
		}

		// Dot segments and slashes resolve as path.Clean resolves them on
		// the input with separators decoded.
		ref := separatorsDecoded(in)
		last := ref[strings.LastIndexByte(ref, '/')+1:]
		want := path.Clean(ref)
		if (last == "" || last == "." || last == "..") && want != "/" {
			want += "/"
		}
		if got := separatorsDecoded(out); got != want {
			t.Fatalf("Normalize(%q) = %q; path.Clean of the decoded input gives %q", in, out, want)
		}
	})
}

// separatorsDecoded decodes in the way Normalize reads structure: encoded
// and literal backslashes and encoded slashes are "/", "%2E" is ".", other
// escapes are left (upper-cased) as opaque text.
func separatorsDecoded(in string) string {
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\\':
			b.WriteByte('/')
		case c == '%' && i+2 < len(in):
			switch e := strings.ToUpper(in[i+1 : i+3]); e {
			case "2F", "5C":
				b.WriteByte('/')
			default:
				if v := unhex(e[0])<<4 | unhex(e[1]); isUnreserved(v) {
					b.WriteByte(v)
				} else {
					b.WriteString("%" + e)
				}
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
