package config

import (
	"fmt"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// checkMethod accepts an HTTP method: a token, as Gateway API's HTTPMethod
// enum values all are. Methods are case-sensitive (RFC 9110 9.1).
func checkMethod(m string) error {
	if !httpguts.ValidHeaderFieldName(m) {
		return fmt.Errorf("invalid method %q: not a token", m)
	}
	return nil
}

// canonical is the http.Header key of a header name.
func canonical(name string) string { return http.CanonicalHeaderKey(name) }
