// Package config compiles a waypoint's configuration resource
// (skiff.waypoint.v1.Waypoint, pkg/xds/waypointapi) into the immutable form
// the proxy reads: services by cluster IP, route tables flattened and
// sorted by Gateway API precedence with their regular expressions
// compiled, filters, timeouts and retry policies, and authorization
// policies in pkg/policy's form. Everything is validated here, once per
// update: a resource that does not compile is rejected whole with an error
// naming the offending field, and the proxy keeps its previous
// configuration.
package config
