package http1

import (
	"errors"
	"net/http"
)

// ProtocolError is a message that breaks HTTP/1.1's syntax or this
// package's stricter rules. Request-side errors carry the status the
// server answers with (400, 414, 431 or 505); a malformed chunked request
// body surfaces from Request.Body's Read as a *ProtocolError, so that a
// proxy can tell it from a client that simply went away
// (io.ErrUnexpectedEOF, or a net.Error). Response-side errors carry 502.
type ProtocolError struct {
	// Status is the HTTP status that answers the error.
	Status int
	// Reason says what was wrong, in a few words fit for a response body.
	Reason string
}

func (e *ProtocolError) Error() string { return "http1: " + e.Reason }

func badRequest(reason string) *ProtocolError {
	return &ProtocolError{Status: http.StatusBadRequest, Reason: reason}
}

// ErrNoResponse marks a RoundTrip error that happened before any byte of a
// response was read: the backend sent nothing, so a request that is safe
// to repeat may be tried on another endpoint. Test with errors.Is.
var ErrNoResponse = errors.New("http1: no response from backend")

// ErrConnUnusable is returned by RoundTrip on a connection that is busy,
// closed, or left in an unknown state by an earlier exchange.
var ErrConnUnusable = errors.New("http1: connection not usable")

// noResponseError wraps an error that happened before any response byte.
type noResponseError struct{ err error }

func (e *noResponseError) Error() string { return ErrNoResponse.Error() + ": " + e.err.Error() }
func (e *noResponseError) Unwrap() []error {
	return []error{ErrNoResponse, e.err}
}

// bodySourceError is a failure to read the request body being sent: the
// request's source broke, not the backend.
type bodySourceError struct{ err error }

func (e *bodySourceError) Error() string { return "http1: reading request body: " + e.err.Error() }
func (e *bodySourceError) Unwrap() error { return e.err }
