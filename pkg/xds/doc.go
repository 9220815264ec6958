// Package xds is Skiff's configuration protocol: the resource types that
// istiod-lite serves over delta ADS (Envoy's DeltaAggregatedResources) and a
// client that ztunnel and the waypoint use to receive them.
//
// Resource types, declared in Skiff's own .proto files under proto/ (field
// numbers match Istio's published workload API, so Istio's ztunnel can read
// them too):
//
//   - AddressType (workloadapi.Address): a Workload, named by its uid, or a
//     Service, named "<namespace>/<hostname>".
//   - AuthorizationType (securityapi.Authorization): an L4 authorization
//     policy, named "<namespace>/<name>".
//   - WaypointType (waypointapi.Waypoint): Skiff's own, one per waypoint,
//     named "<namespace>/<gateway name>": routes, rate limits and L7
//     policies for the services bound to that waypoint.
//
// The Client keeps the last accepted state per type, ACKs what its handler
// accepts and NACKs what it rejects (keeping the old state), and reconnects
// with exponential backoff, sending initial_resource_versions so that the
// server resends only what changed while it was away. Ready closes only
// once every type holds a complete state: after a rejected response, not
// before what it held has arrived in accepted ones.
//
// The client's own messages are a wire-compatible subset of Envoy's delta
// xDS messages (proto/skiff/xds/discovery.proto, package
// skiff.xds.discovery), on Envoy's method path, so that ztunnel and the
// waypoint need not link go-control-plane and its envoy protos; the server
// side may use go-control-plane's, as istiod-lite does.
package xds

// Type URLs of the resources istiod-lite serves.
const (
	AddressType       = "type.googleapis.com/istio.workload.Address"
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
	WaypointType      = "type.googleapis.com/skiff.waypoint.v1.Waypoint"
)
