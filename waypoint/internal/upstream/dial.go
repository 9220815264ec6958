package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/inpod"
)

// Endpoint is one backend address and how to reach it.
type Endpoint struct {
	// Addr is the endpoint's address and (target) port.
	Addr netip.AddrPort
	// ID is the endpoint's identity. The zero ID means the endpoint is
	// not in the mesh: it is reached by plain TCP.
	ID spiffeid.ID
}

// Mesh reports whether the endpoint is reached over HBONE.
func (e Endpoint) Mesh() bool { return !e.ID.IsZero() }

func (e Endpoint) String() string { return e.Addr.String() }

// Tunneler opens byte streams to endpoints.
type Tunneler interface {
	// Tunnel opens a stream to ep. hdr rides on the HBONE CONNECT
	// (forwarded, baggage, traceparent). A failure is a *ConnectError.
	Tunnel(ctx context.Context, ep Endpoint, hdr http.Header) (net.Conn, error)
}

// HBONE is a Tunneler: HBONE to mesh endpoints (port 15008 of the
// endpoint's address, :authority its address and port), plain TCP to
// others.
type HBONE struct {
	Client hbone.Dialer
	// Cert returns the waypoint's own certificate, presented to endpoints.
	Cert func(ctx context.Context) (*tls.Certificate, error)
	// TCP dials endpoints outside the mesh; nil means a net.Dialer.
	TCP func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Tunnel implements Tunneler.
func (h *HBONE) Tunnel(ctx context.Context, ep Endpoint, hdr http.Header) (net.Conn, error) {
	if !ep.Mesh() {
		dial := h.TCP
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		c, err := dial(ctx, "tcp", ep.Addr.String())
		if err != nil {
			return nil, &ConnectError{Endpoint: ep, Err: err}
		}
		return c, nil
	}
	cert, err := h.Cert(ctx)
	if err != nil {
		return nil, &ConnectError{Endpoint: ep, Err: fmt.Errorf("waypoint certificate: %w", err)}
	}
	dst := netip.AddrPortFrom(ep.Addr.Addr(), inpod.InboundHBONEPort)
	c, err := h.Client.Dial(ctx, cert, dst, ep.Addr, []spiffeid.ID{ep.ID}, hdr)
	if err != nil {
		return nil, &ConnectError{Endpoint: ep, Err: err}
	}
	return c, nil
}

// ConnectError is a tunnel that could not be opened: the endpoint saw
// nothing of the request.
type ConnectError struct {
	Endpoint Endpoint
	Err      error
}

func (e *ConnectError) Error() string {
	return "connecting to " + e.Endpoint.String() + ": " + e.Err.Error()
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Refused reports whether the endpoint's side refused the tunnel (an
// HBONE answer such as 401 from its ztunnel's policy), as opposed to a
// failure to reach it.
func (e *ConnectError) Refused() bool {
	var se *hbone.StatusError
	return errors.As(e.Err, &se)
}

// ErrRefused: the endpoint did not process the request (an HTTP/2
// REFUSED_STREAM or a GOAWAY that excluded it, or a reused HTTP/1.1
// connection that closed before any byte of the answer to an idempotent
// request). It is safe to retry.
var ErrRefused = errors.New("upstream: request refused before processing")
