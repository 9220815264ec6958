package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ParseForwarded returns the address in the first for= parameter of the
// first element of a Forwarded header (RFC 7239), as sent by ztunnel:
// for="<ip:port>". A bare IP (quoted or not) yields port 0. Obfuscated
// identifiers ("unknown", "_hidden") and host names are errors.
func ParseForwarded(v string) (netip.AddrPort, error) {
	elem, _, _ := cutUnquoted(v, ',')
	for elem != "" {
		var pair string
		pair, elem, _ = cutUnquoted(elem, ';')
		name, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("hbone: bad forwarded pair %q", pair)
		}
		if !strings.EqualFold(name, "for") {
			continue
		}
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
			if strings.ContainsAny(val, "\"\\") {
				return netip.AddrPort{}, fmt.Errorf("hbone: bad forwarded for %q", val)
			}
		}
		if ap, err := parseAddrPort(val); err == nil {
			return ap, nil
		}
		// An address without a port; IPv6 must then be bracketed too.
		host := val
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return netip.AddrPort{}, fmt.Errorf("hbone: bad forwarded for %q", val)
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("hbone: bad forwarded for %q", val)
		}
		return netip.AddrPortFrom(a, 0), nil
	}
	return netip.AddrPort{}, errors.New("hbone: forwarded has no for=")
}

// FormatForwarded is the forwarded header value naming src.
func FormatForwarded(src netip.AddrPort) string { return `for="` + src.String() + `"` }

// cutUnquoted cuts s around the first sep outside a quoted string.
func cutUnquoted(s string, sep byte) (before, after string, found bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
