package policy

import (
	"errors"
	"fmt"
	"strings"
)

// MatchKind is how a StringMatch compares.
type MatchKind uint8

const (
	// The zero MatchKind is invalid, so a forgotten Kind fails Validate.
	_ MatchKind = iota
	Exact
	Prefix
	Suffix
	// Presence matches any non-empty value.
	Presence
	// Template is an Istio path template (paths only): Value holds "{*}"
	// or "{**}" operators; see ParsePathMatch.
	Template
)

// StringMatch is istio.security.StringMatch.
type StringMatch struct {
	Kind  MatchKind
	Value string // unused for Presence
}

// ParseStringMatch converts a value as written in an AuthorizationPolicy:
// "*" is Presence, "*x" is Suffix "x", "x*" is Prefix "x", anything else is
// Exact. This is how Istio's control plane translates principals and
// namespaces.
func ParseStringMatch(s string) StringMatch {
	switch {
	case s == "*":
		return StringMatch{Kind: Presence}
	case strings.HasPrefix(s, "*"):
		return StringMatch{Kind: Suffix, Value: s[1:]}
	case strings.HasSuffix(s, "*"):
		return StringMatch{Kind: Prefix, Value: s[:len(s)-1]}
	}
	return StringMatch{Kind: Exact, Value: s}
}

// String returns m in the form ParseStringMatch reads.
func (m StringMatch) String() string {
	switch m.Kind {
	case Exact:
		return m.Value
	case Prefix:
		return m.Value + "*"
	case Suffix:
		return "*" + m.Value
	case Presence:
		return "*"
	case Template:
		return m.Value
	}
	return fmt.Sprintf("StringMatch(%d, %q)", m.Kind, m.Value)
}

// Matches reports whether s matches. An invalid Kind matches nothing.
func (m StringMatch) Matches(s string) bool {
	switch m.Kind {
	case Exact:
		return s == m.Value
	case Prefix:
		return strings.HasPrefix(s, m.Value)
	case Suffix:
		return strings.HasSuffix(s, m.Value)
	case Presence:
		return s != ""
	case Template:
		return matchTemplate(m.Value, s)
	}
	return false
}

// matchesFold is Matches with ASCII letters compared case-insensitively,
// for hosts. Templates never apply to hosts.
func (m StringMatch) matchesFold(s string) bool {
	switch m.Kind {
	case Exact:
		return asciiEqualFold(s, m.Value)
	case Prefix:
		return len(s) >= len(m.Value) && asciiEqualFold(s[:len(m.Value)], m.Value)
	case Suffix:
		return len(s) >= len(m.Value) && asciiEqualFold(s[len(s)-len(m.Value):], m.Value)
	case Presence:
		return s != ""
	}
	return false
}

// asciiEqualFold is strings.EqualFold restricted to ASCII: hostnames are
// ASCII, and Unicode folding would let "\u212a" (Kelvin sign) equal "k".
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func (m StringMatch) validate() error {
	switch m.Kind {
	case Exact, Prefix, Suffix:
		return nil
	case Presence:
		if m.Value != "" {
			return errors.New("presence match with a value")
		}
		return nil
	case Template:
		return validTemplate(m.Value)
	}
	return fmt.Errorf("unknown string match kind %d", m.Kind)
}
