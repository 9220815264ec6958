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
package index
