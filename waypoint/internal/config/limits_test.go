package config

import (
	"strings"
	"testing"
)

// TestLimits pins the limits the control plane checks too: istiod-lite
// (istiod-lite/internal/index, routecheck.go) has its own copy of them,
// and its TestWaypointLimits the same values and vectors, so that it
// does not send what the waypoint drops. Change both or neither.
func TestLimits(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"maxPathLen", maxPathLen, 1024},
		{"maxHeaderValueLen", maxHeaderValueLen, 4096},
		{"maxQueryValueLen", maxQueryValueLen, 1024},
		{"maxRegexLen", maxRegexLen, 1024},
		{"maxRegexProgram", maxRegexProgram, 1000},
		{"maxWeight", maxWeight, 1_000_000},
		{"maxRetryAttempts", maxRetryAttempts, 100},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d (and the same in istiod-lite)", c.name, c.got, c.want)
		}
	}
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
		if _, err := compileRegex(c.expr); (err == nil) != c.ok {
			t.Errorf("compileRegex(%.20q): %v, want ok %v", c.expr, err, c.ok)
		}
	}
}
