package hbone

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// StatusError is a non-200 answer to a CONNECT.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: CONNECT refused: %d %s", e.Code, http.StatusText(e.Code))
}

// SANMismatchError is returned when the server's SPIFFE ID is not one the
// client expected for the destination.
type SANMismatchError struct {
	Got      spiffeid.ID
	Expected []spiffeid.ID
}

func (e *SANMismatchError) Error() string {
	exp := make([]string, len(e.Expected))
	for i, id := range e.Expected {
		exp[i] = id.String()
	}
	return fmt.Sprintf("hbone: server identity %s is not one of [%s]", e.Got, strings.Join(exp, ", "))
}

// DialError is a failure to set up the transport connection (TCP or QUIC
// dial, TLS handshake), as opposed to an answer from the server.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string { return "hbone: connecting to " + e.Addr + ": " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// ErrWriteByteTimeout fails a connection, and every tunnel on it, whose
// peer took none of what was written to it for the connection's
// WriteByteTimeout: a peer that stopped reading would otherwise hold the
// tunnels' writers for good.
var ErrWriteByteTimeout = errors.New("hbone: peer stopped reading")
