package hbone

import (
	"fmt"
	"net"
)

// Transport is what carries an HBONE tunnel: HTTP/2 over TCP or HTTP/3
// over QUIC.
type Transport uint8

// Transports. TCP is the zero value: every HBONE peer speaks it.
const (
	TransportTCP Transport = iota
	TransportQUIC
)

func (t Transport) String() string {
	if t == TransportQUIC {
		return "quic"
	}
	return "tcp"
}

// TransportOf reports which transport carries a tunnel returned by a
// Dialer or accepted by a Server or QUICServer.
func TransportOf(c net.Conn) Transport {
	if _, ok := c.(*quicTunnel); ok {
		return TransportQUIC
	}
	return TransportTCP
}

// Transport reports which transport carried the request: QUIC
// connections have UDP addresses.
func (r *Request) Transport() Transport {
	if _, ok := r.RemoteAddr.(*net.UDPAddr); ok {
		return TransportQUIC
	}
	return TransportTCP
}

// TransportMode is the hboneTransport setting of ztunnel and waypoints.
type TransportMode string

// Transport modes.
const (
	// TransportAuto serves QUIC beside TCP and advertises it; it dials
	// QUIC to the peers that advertise it, TCP to the others.
	TransportAuto TransportMode = "auto"
	// TransportTCPOnly neither serves nor dials QUIC.
	TransportTCPOnly TransportMode = "tcp"
	// TransportQUICFirst serves and advertises QUIC as auto does, and
	// tries QUIC first toward every peer, advertised or not.
	TransportQUICFirst TransportMode = "quic"
)

// ParseTransportMode checks a setting's value.
func ParseTransportMode(s string) (TransportMode, error) {
	switch m := TransportMode(s); m {
	case TransportAuto, TransportTCPOnly, TransportQUICFirst:
		return m, nil
	}
	return "", fmt.Errorf("hbone: transport %q: want auto, tcp or quic", s)
}

// ServesQUIC reports whether a proxy in mode m listens on UDP and
// advertises it.
func (m TransportMode) ServesQUIC() bool { return m != TransportTCPOnly }
