// Package config compiles a waypoint's configuration resource
// (skiff.waypoint.v1.Waypoint, pkg/xds/waypointapi) into the immutable form
// the proxy reads: services by cluster IP, route tables flattened and
// sorted by Gateway API precedence with their regular expressions
// compiled, filters, timeouts and retry policies, and authorization
// policies in pkg/policy's form. Everything is validated here, once per
// update.
//
// # One bad object does not freeze the others
//
// One resource carries every route and policy of every service bound to
// the waypoint, written by many users. Rejecting it whole on the first
// problem would keep the waypoint on its previous configuration for all of
// them until the one object was fixed. So a problem is confined to the
// smallest part that holds it, that part fails closed, and the rest
// applies; each problem is reported by Waypoint.Warnings with the path of
// the offending field and what was done (Effect):
//
//   - A route rule (the unit Gateway API drops: a route with some invalid
//     rules is "PartiallyInvalid", and implementations drop those rules)
//     is replaced by one without filters or backends that keeps its valid
//     matches: their requests are answered with HTTP 500, as the control
//     plane already encodes rules the waypoint cannot carry out, rather
//     than left to fall through to a rule written for other requests. A
//     match that does not compile selects nothing and is left out. When no
//     match of the rule compiles, nothing says which requests it was for:
//     the replacement then answers 500 to whatever request to its port no
//     other rule matches, ranked after every other rule, so that those
//     requests are not sent to the service unrouted.
//   - A route that is itself malformed (no name, a bad port) is replaced
//     the same way, by one such last-ranked rule. So is a route that does
//     not say reliably whose clients it is for: a consumer route
//     (GEP-1294, Service.Consumers) whose consumer_namespace is not its
//     own namespace, or is the service's, or a route of another
//     namespace without one. It fails closed among the routes of the
//     consumer namespace it names, or else the producer's, and never
//     applies to another namespace's clients.
//   - A policy that does not compile becomes a DENY policy of the same
//     name matching every request and connection it applies to: dropping
//     it could widen access.
//   - A service whose names, VIPs or ports are malformed, or that repeats
//     another's key or VIP, is left out; the proxy then refuses tunnels to
//     its addresses.
//
// Only a resource that does not say which waypoint it is for (no name or
// namespace) is rejected whole; the proxy then keeps its previous
// configuration.
package config
