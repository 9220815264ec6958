package hbone

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ParseAuthority parses a CONNECT :authority of the form "ip:port", with an
// IPv6 address in brackets. Host names, zones, port 0 and ports with leading
// zeros are rejected: HBONE always names a concrete destination address.
func ParseAuthority(s string) (netip.AddrPort, error) {
	ap, err := parseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("hbone: bad authority %q: %w", s, err)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("hbone: bad authority %q: port 0", s)
	}
	return ap, nil
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, errors.New("missing port")
	}
	port := s[i+1:]
	if port == "" || len(port) > 5 || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, errors.New("invalid port")
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return netip.AddrPort{}, errors.New("invalid port")
		}
	}
	host := s[:i]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return netip.AddrPort{}, errors.New("unbalanced brackets")
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ap.Addr().Zone() != "" {
		return netip.AddrPort{}, errors.New("zones are not allowed")
	}
	if ap.Addr().Is6() && !strings.HasPrefix(host, "[") {
		return netip.AddrPort{}, errors.New("IPv6 address must be bracketed")
	}
	return ap, nil
}

// FormatAuthority is the :authority for dst: "ip:port", IPv6 bracketed.
func FormatAuthority(dst netip.AddrPort) string { return dst.String() }
