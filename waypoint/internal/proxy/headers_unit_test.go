package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

func TestAddForwarded(t *testing.T) {
	for _, tc := range []struct {
		client string
		in     http.Header
		xff    string
		fwd    string
		proto  string
	}{
		{"10.0.0.1:1234", http.Header{}, "10.0.0.1", "for=10.0.0.1;proto=http", "http"},
		{"[2001:db8::5]:80", http.Header{}, "2001:db8::5", `for="[2001:db8::5]";proto=http`, "http"},
		{"10.0.0.1:1234", http.Header{"X-Forwarded-For": {"1.1.1.1", "2.2.2.2"}, "X-Forwarded-Proto": {"https"}},
			"1.1.1.1, 2.2.2.2, 10.0.0.1", "for=10.0.0.1;proto=http", "https"},
		{"10.0.0.1:1234", http.Header{"Forwarded": {"for=1.1.1.1"}}, "10.0.0.1", "for=1.1.1.1, for=10.0.0.1;proto=http", "http"},
	} {
		tun := &tunnel{src: netip.MustParseAddrPort(tc.client)}
		tun.tunnelValues()
		h := tc.in.Clone()
		addForwarded(h, tun)
		if got := strings.Join(h["X-Forwarded-For"], ", "); got != tc.xff {
			t.Errorf("%s: X-Forwarded-For %q, want %q", tc.client, got, tc.xff)
		}
		if got := strings.Join(h["Forwarded"], ", "); got != tc.fwd {
			t.Errorf("%s: Forwarded %q, want %q", tc.client, got, tc.fwd)
		}
		if got := h.Get("X-Forwarded-Proto"); got != tc.proto {
			t.Errorf("%s: X-Forwarded-Proto %q, want %q", tc.client, got, tc.proto)
		}
		// A request's edits leave the values its tunnel shares alone.
		h.Add("X-Forwarded-For", "edited")
		h.Add("Forwarded", "edited")
		if len(tun.xff) != 1 || tun.xff[0] != netip.MustParseAddrPort(tc.client).Addr().String() || len(tun.forwarded) != 1 {
			t.Errorf("a request's edit changed its tunnel's values: %q, %q", tun.xff, tun.forwarded)
		}
	}
	// A tunnel without a client address adds nothing.
	h := http.Header{}
	tun := &tunnel{}
	tun.tunnelValues()
	addForwarded(h, tun)
	if len(h) != 0 {
		t.Errorf("no client, yet %v", h)
	}
}

// FuzzRemoveHopHeaders checks that no hop-by-hop field, nor any field the
// Connection header names, survives, that every other field does, and
// that TE: trailers is noticed.
func FuzzRemoveHopHeaders(f *testing.F) {
	f.Add("keep-alive, X-Foo", "trailers", "X-Foo", "X-Bar")
	f.Add("close", "gzip, trailers;q=1", "Te", "Connection")
	f.Add(",,, upgrade ,", "TRAILERS", "Upgrade", "X-Keep")
	f.Fuzz(func(t *testing.T, connection, te, name1, name2 string) {
		h := http.Header{"Connection": {connection}, "Te": {te}, "Keep-Alive": {"1"}, "Transfer-Encoding": {"chunked"}, "Http2-Settings": {"x"}}
		for _, n := range []string{name1, name2} {
			if httpguts.ValidHeaderFieldName(n) {
				h[http.CanonicalHeaderKey(n)] = []string{"v"}
			}
		}
		named := map[string]bool{}
		for _, v := range h["Connection"] {
			for _, n := range strings.Split(v, ",") {
				if n = strings.TrimSpace(n); n != "" {
					named[http.CanonicalHeaderKey(n)] = true
				}
			}
		}
		before := h.Clone()
		wantTE := false
		for _, v := range strings.Split(te, ",") {
			if strings.EqualFold(strings.TrimSpace(v), "trailers") {
				wantTE = true
			}
		}
		if got := removeHopHeaders(h); got != wantTE {
			t.Errorf("TE %q: trailers %v, want %v", te, got, wantTE)
		}
		hop := map[string]bool{}
		for _, k := range hopHeaders {
			hop[k] = true
		}
		for k := range before {
			_, kept := h[k]
			if drop := hop[k] || named[k]; kept == drop {
				t.Errorf("field %q kept %v (hop-by-hop %v, named by Connection %v)", k, kept, hop[k], named[k])
			}
		}
	})
}
