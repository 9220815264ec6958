package policy

import (
	"fmt"
	"strings"
)

// Path templates are Istio's (1.19+) "{*}" and "{**}" path operators,
// which Istio hands to Envoy's URI template matcher:
//
//   - "{*}" fills one path segment and matches one non-empty segment;
//   - "{**}" fills one segment and matches zero or more characters,
//     slashes included; it must be the last operator.
//
// So "/foo/{*}" matches "/foo/bar" but not "/foo/bar/baz" or "/foo/", and
// "/foo/{**}" matches "/foo/" and "/foo/a/b" but not "/foo". Envoy's globs
// match only RFC 3986 pchar less '*' and '='; here they match any byte but
// '/', so that "/admin/a=b" cannot slip past a DENY on "/admin/{*}". The
// paths compared are normalized, which leaves few other differences.

// ParsePathMatch converts a path as written in an AuthorizationPolicy's
// paths or notPaths: a value holding "{*}" or "{**}" is a path template,
// anything else is read as ParseStringMatch reads it. A template that Istio
// would refuse ("*" or braces outside an operator, text beside an operator
// in its segment, an operator after "{**}") is an error.
func ParsePathMatch(s string) (StringMatch, error) {
	if !IsPathTemplate(s) {
		return ParseStringMatch(s), nil
	}
	if err := validTemplate(s); err != nil {
		return StringMatch{}, err
	}
	return StringMatch{Kind: Template, Value: s}, nil
}

// IsPathTemplate reports whether Istio reads the path value s as a
// template: whether it holds a "{*}" or "{**}" operator.
func IsPathTemplate(s string) bool {
	return strings.Contains(s, "{*}") || strings.Contains(s, "{**}")
}

func validTemplate(t string) error {
	rest, ok := strings.CutPrefix(t, "/")
	if !ok {
		return fmt.Errorf("path template %q does not start with '/'", t)
	}
	operators, textGlob := 0, false
	for more := true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case seg == "{*}" || seg == "{**}":
			if textGlob {
				return fmt.Errorf("path template %q: operator after {**}", t)
			}
			textGlob = seg == "{**}"
			operators++
		case seg == "":
			// Only the last segment may be empty: a trailing slash.
			if more {
				return fmt.Errorf("path template %q: empty segment", t)
			}
		default:
			for i := 0; i < len(seg); i++ {
				if !isTemplateLiteral(seg[i]) {
					return fmt.Errorf("path template %q: %q in segment %q", t, seg[i], seg)
				}
			}
		}
	}
	if operators == 0 {
		return fmt.Errorf("path template %q has no {*} or {**} operator", t)
	}
	return nil
}

// isTemplateLiteral reports whether c may appear in a literal segment of a
// template: RFC 3986 pchar less '*', which Envoy reserves for its globs.
func isTemplateLiteral(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~%!$&'()+,;=:@", c) >= 0
}

// matchTemplate reports whether path p matches template t. An invalid
// template may match or not but never panics; Validate rejects them.
func matchTemplate(t, p string) bool {
	t, ok1 := strings.CutPrefix(t, "/")
	p, ok2 := strings.CutPrefix(p, "/")
	if !ok1 || !ok2 {
		return false
	}
	for {
		seg, trest, tmore := strings.Cut(t, "/")
		if seg == "{**}" {
			if !tmore {
				return true
			}
			// The template's rest is literal: p must end with "/"+trest,
			// after zero or more characters.
			n := len(p) - len(trest) - 1
			return n >= 0 && p[n] == '/' && p[n+1:] == trest
		}
		pseg, prest, pmore := strings.Cut(p, "/")
		switch seg {
		case "{*}":
			if pseg == "" {
				return false
			}
		default:
			if pseg != seg {
				return false
			}
		}
		if !tmore || !pmore {
			return tmore == pmore
		}
		t, p = trest, prest
	}
}
