// Package socks5 reads SOCKS5 CONNECT requests (RFC 1928, no
// authentication) for ztunnel's SOCKS5 listener and writes the replies.
package socks5

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

const (
	version       = 5
	methodNoAuth  = 0x00
	methodNone    = 0xff
	cmdConnect    = 1
	atypIPv4      = 1
	atypDomain    = 3
	atypIPv6      = 4
	maxDomainSize = 255
)

// Reply is a SOCKS5 reply code.
type Reply byte

const (
	Succeeded           Reply = 0
	GeneralFailure      Reply = 1
	NotAllowed          Reply = 2
	NetworkUnreachable  Reply = 3
	HostUnreachable     Reply = 4
	ConnectionRefused   Reply = 5
	CommandNotSupported Reply = 7
	AddrTypeUnsupported Reply = 8
)

// ErrProtocol reports a malformed or unsupported request. When the client
// got far enough to be answered, ReadRequest has already written a failure
// reply.
var ErrProtocol = errors.New("socks5: protocol error")

// Request is a CONNECT request: either an address or a domain name.
type Request struct {
	// Addr is set for IPv4 and IPv6 requests.
	Addr netip.AddrPort
	// Host and Port are set for domain-name requests.
	Host string
	Port uint16
}

// ReadRequest negotiates "no authentication" and reads one CONNECT request
// from rw. Callers bound it with a deadline.
func ReadRequest(rw io.ReadWriter) (Request, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(rw, hdr[:]); err != nil {
		return Request{}, fmt.Errorf("socks5: reading greeting: %w", err)
	}
	if hdr[0] != version {
		return Request{}, fmt.Errorf("%w: version %d", ErrProtocol, hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(rw, methods); err != nil {
		return Request{}, fmt.Errorf("socks5: reading methods: %w", err)
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == methodNoAuth
	}
	if !noAuth {
		rw.Write([]byte{version, methodNone})
		return Request{}, fmt.Errorf("%w: client does not offer no-authentication", ErrProtocol)
	}
	if _, err := rw.Write([]byte{version, methodNoAuth}); err != nil {
		return Request{}, fmt.Errorf("socks5: writing method: %w", err)
	}

	var req [4]byte
	if _, err := io.ReadFull(rw, req[:]); err != nil {
		return Request{}, fmt.Errorf("socks5: reading request: %w", err)
	}
	if req[0] != version {
		return Request{}, fmt.Errorf("%w: request version %d", ErrProtocol, req[0])
	}
	if req[1] != cmdConnect {
		WriteReply(rw, CommandNotSupported, netip.AddrPort{})
		return Request{}, fmt.Errorf("%w: command %d is not CONNECT", ErrProtocol, req[1])
	}
	var r Request
	switch req[3] {
	case atypIPv4, atypIPv6:
		n := 4
		if req[3] == atypIPv6 {
			n = 16
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rw, buf); err != nil {
			return Request{}, fmt.Errorf("socks5: reading address: %w", err)
		}
		a, _ := netip.AddrFromSlice(buf[:n])
		r.Addr = netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(buf[n:]))
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(rw, l[:]); err != nil {
			return Request{}, fmt.Errorf("socks5: reading domain length: %w", err)
		}
		buf := make([]byte, int(l[0])+2)
		if _, err := io.ReadFull(rw, buf); err != nil {
			return Request{}, fmt.Errorf("socks5: reading domain: %w", err)
		}
		host := string(buf[:l[0]])
		if host == "" || !validHost(host) {
			WriteReply(rw, AddrTypeUnsupported, netip.AddrPort{})
			return Request{}, fmt.Errorf("%w: invalid domain name %q", ErrProtocol, host)
		}
		r.Host, r.Port = host, binary.BigEndian.Uint16(buf[l[0]:])
		if a, err := netip.ParseAddr(host); err == nil {
			r.Addr, r.Host, r.Port = netip.AddrPortFrom(a.Unmap(), r.Port), "", 0
		}
	default:
		WriteReply(rw, AddrTypeUnsupported, netip.AddrPort{})
		return Request{}, fmt.Errorf("%w: address type %d", ErrProtocol, req[3])
	}
	if r.Host == "" && (r.Addr.Port() == 0 || !r.Addr.Addr().IsValid() || r.Addr.Addr().IsUnspecified()) {
		WriteReply(rw, HostUnreachable, netip.AddrPort{})
		return Request{}, fmt.Errorf("%w: unusable destination %v", ErrProtocol, r.Addr)
	}
	if r.Host != "" && r.Port == 0 {
		WriteReply(rw, HostUnreachable, netip.AddrPort{})
		return Request{}, fmt.Errorf("%w: port 0", ErrProtocol)
	}
	return r, nil
}

// validHost accepts DNS names (letters, digits, '-', '.', '_') and IP
// literals, nothing that could confuse a resolver.
func validHost(h string) bool {
	if len(h) > maxDomainSize {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == ':':
		default:
			return false
		}
	}
	return true
}

// WriteReply answers a request; bind is the local address of the upstream
// connection (zero when there is none).
func WriteReply(w io.Writer, code Reply, bind netip.AddrPort) error {
	b := []byte{version, byte(code), 0}
	a := bind.Addr()
	switch {
	case a.Is6() && !a.Is4In6():
		b = append(b, atypIPv6)
		b = append(b, a.AsSlice()...)
	default:
		b = append(b, atypIPv4)
		if a.IsValid() {
			b = append(b, a.Unmap().AsSlice()...)
		} else {
			b = append(b, 0, 0, 0, 0)
		}
	}
	b = binary.BigEndian.AppendUint16(b, bind.Port())
	_, err := w.Write(b)
	return err
}
