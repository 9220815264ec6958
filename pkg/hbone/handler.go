package hbone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Request is a CONNECT received by a Server.
type Request struct {
	// Peer is the client's verified SPIFFE ID.
	Peer spiffeid.ID
	// Authority is the requested destination.
	Authority netip.AddrPort
	// Header holds the request's regular header fields (baggage,
	// traceparent, forwarded, ...).
	Header http.Header
	// RemoteAddr and LocalAddr are the transport connection's addresses.
	RemoteAddr, LocalAddr net.Addr
	// Forwarded is the address from the forwarded header's for=; zero
	// if the header is absent. Its port is 0 if none was given.
	Forwarded netip.AddrPort
}

// Handler serves HBONE tunnels. ServeHBONE must call w.Refuse or w.Accept;
// the tunnel is closed when it returns (unanswered requests get 500),
// unless it was detached (w.Detach).
type Handler interface {
	ServeHBONE(ctx context.Context, w *Responder, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, w *Responder, r *Request)

// ServeHBONE calls f.
func (f HandlerFunc) ServeHBONE(ctx context.Context, w *Responder, r *Request) { f(ctx, w, r) }

// tunnelResponder is the transport-specific side of a Responder.
type tunnelResponder interface {
	refuse(status int) error
	accept() (net.Conn, error)
}

// Responder answers one CONNECT.
type Responder struct {
	mu        sync.Mutex
	t         tunnelResponder
	responded bool
	conn      net.Conn
}

// ErrResponded is returned when a request is answered twice.
var ErrResponded = errors.New("hbone: request already answered")

// Refuse answers with status (400, 401, 503, ...) and ends the stream.
func (w *Responder) Refuse(status int) error {
	if status < 300 || status > 599 {
		return fmt.Errorf("hbone: refusal status %d is not an error status", status)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.responded {
		return ErrResponded
	}
	w.responded = true
	return w.t.refuse(status)
}

// Accept answers 200 and returns the tunnel. The conn implements
// CloseWrite; closing it ends the stream.
func (w *Responder) Accept() (net.Conn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.responded {
		return nil, ErrResponded
	}
	w.responded = true
	c, err := w.t.accept()
	if err != nil {
		return nil, err
	}
	w.conn = c
	return c, nil
}

// Detach takes over the tunnel returned by Accept: the server no longer
// closes it when ServeHBONE returns, and the caller must. A handler that
// serves the tunnel from a goroutine of its own (say one whose stack has
// not grown while it connected upstream) detaches it and returns; the
// context passed to ServeHBONE ends then.
func (w *Responder) Detach() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return errors.New("hbone: no accepted tunnel to detach")
	}
	w.conn = nil
	return nil
}

// finish closes whatever the handler left open.
func (w *Responder) finish() {
	w.mu.Lock()
	responded, conn := w.responded, w.conn
	w.responded = true
	w.mu.Unlock()
	if !responded {
		w.t.refuse(http.StatusInternalServerError)
	}
	if conn != nil {
		conn.Close()
	}
}

// requestError is a CONNECT that fails validation, with its status.
type requestError struct {
	status int
	err    error
}

func (e *requestError) Error() string { return e.err.Error() }

// buildRequest validates a CONNECT's method and pseudo-headers, shared by
// the HTTP/2 and HTTP/3 servers.
func buildRequest(method, authority, scheme, path, protocol string, hdr http.Header) (*Request, *requestError) {
	if method != http.MethodConnect {
		return nil, &requestError{http.StatusMethodNotAllowed, fmt.Errorf("hbone: method %q is not CONNECT", method)}
	}
	if scheme != "" || path != "" || protocol != "" {
		return nil, &requestError{http.StatusBadRequest, errors.New("hbone: only classic CONNECT is served")}
	}
	ap, err := ParseAuthority(authority)
	if err != nil {
		return nil, &requestError{http.StatusBadRequest, err}
	}
	r := &Request{Authority: ap, Header: hdr}
	if v := hdr.Values("Forwarded"); len(v) > 0 {
		fwd, err := ParseForwarded(strings.Join(v, ","))
		if err != nil {
			return nil, &requestError{http.StatusBadRequest, err}
		}
		r.Forwarded = fwd
	}
	return r, nil
}
