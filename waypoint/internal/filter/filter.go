// Package filter applies HTTPRoute filters to requests and responses:
// header modifiers, redirects and URL rewrites. Each function is pure
// apart from the request or header it is given to change.
//
// Paths are handled in escaped form, the form route matched and the
// backend receives; a prefix replacement follows Gateway API's
// ReplacePrefixMatch table (HTTPPathModifier in gateway-api v1.6
// apis/v1/httproute_types.go), where a trailing "/" of the matched prefix
// or of the replacement is ignored.
package filter

import (
	"net/http"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
)

// Headers applies m to h: Set replaces a field's values, Add appends a
// value after the existing ones, Remove deletes the field. Names are
// case-insensitive; h's keys are canonical, as m's names are. The three
// are applied in the order HTTPHeaderFilter lists them, Set, Add, Remove;
// a compiled modifier never has two actions on one name (Gateway API
// calls that invalid), so the order is not observable with one.
func Headers(h http.Header, m *config.HeaderModifier) {
	if m == nil || h == nil {
		return
	}
	for _, s := range m.Set {
		h[http.CanonicalHeaderKey(s.Name)] = []string{s.Value}
	}
	for _, a := range m.Add {
		k := http.CanonicalHeaderKey(a.Name)
		h[k] = append(h[k], a.Value)
	}
	for _, name := range m.Remove {
		delete(h, http.CanonicalHeaderKey(name))
	}
}
