package waypointapi

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Limits on what a Waypoint resource may carry. The waypoint replaces a
// rule that breaks them with one that fails closed, and istiod-lite checks
// routes against the same limits first, so that it does not send what the
// waypoint would replace and can say why in the route's status. The
// length limits are Gateway API's own (HTTPPathMatch.Value,
// HTTPHeaderMatch.Value, HTTPQueryParamMatch.Value); the regular
// expression limits bound the work one match costs per request, as
// Envoy's max_program_size does.
const (
	MaxPathLen        = 1024
	MaxHeaderValueLen = 4096
	MaxQueryValueLen  = 1024
	MaxRegexLen       = 1024
	MaxRegexProgram   = 1000 // instructions of the compiled, anchored program
	MaxWeight         = 1_000_000
	MaxRetryAttempts  = 100
)

// CompileRegex compiles a Gateway API RegularExpression value as RE2
// (Go's regexp syntax) anchored at both ends, as Gateway API matches a
// regular expression against the whole path, header value or name, within
// MaxRegexLen and MaxRegexProgram.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, errors.New("empty regular expression")
	}
	if len(expr) > MaxRegexLen {
		return nil, fmt.Errorf("regular expression longer than %d bytes", MaxRegexLen)
	}
	anchored := `^(?:` + expr + `)$`
	re, err := syntax.Parse(anchored, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	if n := len(prog.Inst); n > MaxRegexProgram {
		return nil, fmt.Errorf("regular expression too complex (%d instructions, at most %d)", n, MaxRegexProgram)
	}
	rx, err := regexp.Compile(anchored)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	return rx, nil
}

// CheckHeaderName accepts an RFC 9110 field name (a token).
func CheckHeaderName(name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("invalid header name %q: not a token", name)
	}
	return nil
}

// CheckHeaderValue accepts an RFC 9110 field value: no CR, LF, NUL or
// other control characters but horizontal tab, which would split or
// corrupt the header section it is written into.
func CheckHeaderValue(v string) error {
	if !httpguts.ValidHeaderFieldValue(v) {
		return fmt.Errorf("invalid header value %q: control character", v)
	}
	return nil
}

// unmodifiable are the fields a header modifier may not touch: they frame
// the message or belong to one connection (RFC 9110 7.6.1), so changing
// them would desynchronize a proxy and its peer.
var unmodifiable = map[string]string{
	"Connection":        "is connection-specific",
	"Content-Length":    "frames the message",
	"Keep-Alive":        "is connection-specific",
	"Proxy-Connection":  "is connection-specific",
	"Te":                "is connection-specific",
	"Trailer":           "frames the message",
	"Transfer-Encoding": "frames the message",
	"Upgrade":           "is connection-specific",
}

// CheckModifiable rejects a header (canonical name) a modifier may not
// change; request says whether the modifier edits requests, whose Host
// is the authority (a URLRewrite hostname changes it).
func CheckModifiable(canonical string, request bool) error {
	if why, ok := unmodifiable[canonical]; ok {
		return fmt.Errorf("header %s may not be modified: it %s", canonical, why)
	}
	if request && canonical == "Host" {
		return errors.New("header Host may not be modified: use a URLRewrite hostname")
	}
	return nil
}

// CheckHostname accepts a Gateway API PreciseHostname: an RFC 1123 DNS
// name in lower case, without a wildcard, a port or a trailing dot.
func CheckHostname(h string) error {
	if h == "" || len(h) > 253 {
		return fmt.Errorf("invalid hostname %q: must be 1 to 253 characters", h)
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("invalid hostname %q: labels must be 1 to 63 characters", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("invalid hostname %q: character %q at label position %d", h, c, i)
			}
		}
	}
	return nil
}

// CheckPathChars accepts the characters Gateway API allows in Exact and
// PathPrefix values and in path modifiers: RFC 3986 pchar and "/", with
// well-formed percent escapes. Nothing else can reach a request line or a
// Location header from the configuration.
func CheckPathChars(p string) error {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-/._~!$&'()*+,;=:@", c) >= 0:
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return fmt.Errorf("invalid path %q: malformed percent escape at %d", p, i)
			}
			i += 2
		default:
			return fmt.Errorf("invalid path %q: character %q not allowed", p, c)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
