// Package index is istiod-lite's in-memory model of the mesh. Controllers
// feed it Kubernetes objects as informers report them; it turns them into the
// xDS resources ztunnels and waypoints receive: workloads, services,
// authorization policies and waypoint configurations.
//
// Updates are incremental: each change marks the outputs it can affect as
// dirty, and Flush rebuilds only those, compares each with what was last
// published (by content hash), and hands the real changes to a Sink. Run
// calls Flush after changes settle (debounce), so a burst of events becomes
// one push. The index never lists or polls the cluster.
//
// A waypoint's configuration holds the routes and policies of many users,
// so the index never sends it a rule or policy condition the waypoint
// would refuse: a route rule with such a value is sent as one the waypoint
// answers with HTTP 500 (or left out when none of its matches is valid),
// and a policy condition is left out, never more permissively than
// written. UnsupportedHTTPRules, UnsupportedGRPCRules and WaypointSupport
// tell the objects' status why.
package index
