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
	}
	return false
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
	}
	return fmt.Errorf("unknown string match kind %d", m.Kind)
}
