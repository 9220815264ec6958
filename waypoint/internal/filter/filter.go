// Package filter applies HTTPRoute filters to requests and responses:
// header modifiers, redirects and URL rewrites. Each function is pure
// apart from the request or header it is given to change.
package filter

import (
	"net/http"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Headers applies m to h.
func Headers(h http.Header, m *config.HeaderModifier) {}

// RedirectLocation returns the Location of the redirect rd answers r with.
// scheme is the request's ("http"), port the service port it was sent to,
// prefix what a PathPrefix match matched ("" otherwise).
func RedirectLocation(r *http.Request, scheme string, port uint16, rd *config.Redirect, prefix string) string {
	return ""
}

// Rewrite changes r's host and path as rw says; prefix is what a
// PathPrefix match matched.
func Rewrite(r *http.Request, rw *config.Rewrite, prefix string) {}
