package hbone

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultAltSvcMaxAge is how long a peer's advertisement of QUIC holds
// when it gives no ma= (RFC 7838 §3.1: 24 hours).
const DefaultAltSvcMaxAge = 24 * time.Hour

// maxAltSvcLen bounds the header field parsed; a real one is a few dozen
// bytes.
const maxAltSvcLen = 1024

// altSvc is what an Alt-Svc field value says about HBONE over QUIC.
type altSvc struct {
	// clear withdraws every earlier advertisement ("Alt-Svc: clear").
	clear bool
	// port is the UDP port of the h3 alternative on the same host; 0
	// when the value offers none.
	port   uint16
	maxAge time.Duration
}

// FormatAltSvc is the Alt-Svc field value by which a server advertises
// HBONE over QUIC on UDP port of its own address, for maxAge.
func FormatAltSvc(port uint16, maxAge time.Duration) string {
	return fmt.Sprintf(`h3=":%d"; ma=%d`, port, int64(maxAge/time.Second))
}

// parseAltSvc reads an Alt-Svc field value (RFC 7838 §3):
//
//	Alt-Svc       = clear / 1#alt-value
//	alt-value     = alternative *( OWS ";" OWS parameter )
//	alternative   = protocol-id "=" alt-authority
//	alt-authority = quoted-string ; "[host]:port"
//
// Only an "h3" alternative on the same host (empty host) counts: HBONE
// goes to a peer's own address, never elsewhere. Other alternatives and
// unknown parameters are skipped; malformed syntax is an error.
func parseAltSvc(v string) (altSvc, error) {
	if len(v) > maxAltSvcLen {
		return altSvc{}, fmt.Errorf("hbone: Alt-Svc of %d bytes", len(v))
	}
	v = strings.Trim(v, " \t")
	if v == "clear" {
		return altSvc{clear: true}, nil
	}
	var out altSvc
	p := altSvcParser{s: v}
	for {
		proto, err := p.token()
		if err != nil {
			return altSvc{}, err
		}
		if !p.consume('=') {
			return altSvc{}, errors.New("hbone: Alt-Svc: '=' expected after the protocol")
		}
		auth, err := p.quoted()
		if err != nil {
			return altSvc{}, err
		}
		maxAge := DefaultAltSvcMaxAge
		for p.skipOWS(); p.consume(';'); p.skipOWS() {
			p.skipOWS()
			name, err := p.token()
			if err != nil {
				return altSvc{}, err
			}
			if !p.consume('=') {
				return altSvc{}, fmt.Errorf("hbone: Alt-Svc: '=' expected after parameter %q", name)
			}
			var val string
			if p.peek() == '"' {
				val, err = p.quoted()
			} else {
				val, err = p.token()
			}
			if err != nil {
				return altSvc{}, err
			}
			if strings.EqualFold(name, "ma") {
				secs, err := strconv.ParseUint(val, 10, 32)
				if err != nil {
					return altSvc{}, fmt.Errorf("hbone: Alt-Svc: ma=%q: not a number of seconds", val)
				}
				maxAge = time.Duration(secs) * time.Second
			}
		}
		if proto == "h3" && out.port == 0 {
			if port, ok := sameHostPort(auth); ok {
				out.port, out.maxAge = port, maxAge
			}
		}
		if p.done() {
			return out, nil
		}
		if !p.consume(',') {
			return altSvc{}, fmt.Errorf("hbone: Alt-Svc: unexpected %q", p.s[p.i:])
		}
		p.skipOWS()
	}
}

// sameHostPort returns the port of an alt-authority ":port".
func sameHostPort(auth string) (uint16, bool) {
	rest, ok := strings.CutPrefix(auth, ":")
	if !ok {
		return 0, false
	}
	port, err := strconv.ParseUint(rest, 10, 16)
	if err != nil || port == 0 {
		return 0, false
	}
	return uint16(port), true
}

type altSvcParser struct {
	s string
	i int
}

func (p *altSvcParser) done() bool { return p.i >= len(p.s) }

func (p *altSvcParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *altSvcParser) consume(c byte) bool {
	if p.peek() == c && !p.done() {
		p.i++
		return true
	}
	return false
}

func (p *altSvcParser) skipOWS() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// token reads an RFC 9110 token (protocol-ids are tokens once
// percent-decoded; HBONE needs none decoded).
func (p *altSvcParser) token() (string, error) {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", fmt.Errorf("hbone: Alt-Svc: token expected at %q", p.s[start:])
	}
	return p.s[start:p.i], nil
}

func (p *altSvcParser) quoted() (string, error) {
	if !p.consume('"') {
		return "", fmt.Errorf("hbone: Alt-Svc: quoted string expected at %q", p.s[p.i:])
	}
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", errors.New("hbone: Alt-Svc: unterminated quoted string")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", errors.New("hbone: Alt-Svc: control character in a quoted string")
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("hbone: Alt-Svc: unterminated quoted string")
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
