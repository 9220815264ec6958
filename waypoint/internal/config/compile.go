package config

import (
	"errors"

	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Compile validates and compiles a waypoint resource. The error names the
// offending field; nothing is kept from a resource that fails.
func Compile(wp *waypointapi.Waypoint) (*Waypoint, error) {
	return nil, errors.New("config: not implemented yet")
}
