// Package meshstate is a proxy's view of the mesh (ztunnel's, and the
// waypoint's endpoints): workloads, services and authorization policies, as
// delivered by a configuration source (the local file or xDS). A Store holds
// an immutable Snapshot that the proxy reads without locks; every update
// builds and validates a new Snapshot, so a bad update is rejected as a
// whole and the last good state stays in force. An address claimed by two
// workloads is not "bad" in an incremental update (the control plane is
// eventually consistent): it is resolved the same way whatever the order of
// arrival and reported (Snapshot.Conflicts). Host-network workloads are
// never indexed by address, as in Istio.
//
// The model follows Istio's workload API (istio.workload.Workload, Service)
// and converts authorization to pkg/policy for evaluation.
package meshstate
