// Package authz decides whether the waypoint lets a request or connection
// through: Istio's AuthorizationPolicy with L7 attributes, attached to the
// waypoint or to a service, evaluated by pkg/policy.
package authz

import (
	"errors"

	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/xds/waypointapi"
)

// Compile converts a policy of the waypoint resource into pkg/policy's
// form.
func Compile(p *waypointapi.L7Authorization) (*policy.Policy, error) {
	return nil, errors.New("authz: not implemented yet")
}

// Decision is the outcome for one request or connection.
type Decision struct {
	Allowed bool
	// Policy and Reason explain a denial.
	Policy, Reason string
	// Audit lists the AUDIT policies that matched.
	Audit []string
}

// Decide evaluates the waypoint's policies and the service's together,
// Istio's way: a matching DENY denies; otherwise, if there are ALLOW
// policies, one must match.
func Decide(waypoint, service []*policy.Policy, c policy.Conn) Decision {
	return Decision{}
}
