package waypointapi

import (
	"strings"
	"testing"
)

func TestCompileRegexLimits(t *testing.T) {
	for _, c := range []struct {
		expr string
		ok   bool
	}{
		{"a{996}", true},  // 1000 instructions anchored
		{"a{997}", false}, // 1001
		{strings.Repeat("(?:)", 256), true},
		{strings.Repeat("(?:)", 256) + "a", false}, // 1025 bytes
		{"(?i)/api/[a-z]+", true},
		{"/(?!admin)", false}, // Perl lookahead: not RE2
		{"", false},
	} {
		if _, err := CompileRegex(c.expr); (err == nil) != c.ok {
			t.Errorf("CompileRegex(%.20q): %v, want ok %v", c.expr, err, c.ok)
		}
	}
}

func TestChecks(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"hostname", CheckHostname("api.example.com"), true},
		{"hostname with port", CheckHostname("api:80"), false},
		{"hostname upper case", CheckHostname("API.example.com"), false},
		{"wildcard hostname", CheckHostname("*.example.com"), false},
		{"label ending in -", CheckHostname("a-.b"), false},
		{"path", CheckPathChars("/a/b%2Fc;x=1"), true},
		{"path with space", CheckPathChars("/a b"), false},
		{"path with bad escape", CheckPathChars("/a%zz"), false},
		{"path with cut escape", CheckPathChars("/a%2"), false},
		{"header name", CheckHeaderName("X-Canary"), true},
		{"header name with space", CheckHeaderName("X Canary"), false},
		{"header value with tab", CheckHeaderValue("a\tb"), true},
		{"header value with CRLF", CheckHeaderValue("a\r\nb"), false},
		{"modifiable", CheckModifiable("X-Canary", true), true},
		{"framing", CheckModifiable("Content-Length", false), false},
		{"host on requests", CheckModifiable("Host", true), false},
		{"host on responses", CheckModifiable("Host", false), true},
	} {
		if (c.err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %v", c.name, c.err, c.ok)
		}
	}
}
