// Package gatewayapi runs the official Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, v1.6.3) with its mesh profiles,
// MESH-HTTP and MESH-GRPC, against Skiff installed from its charts on the
// local cluster.
//
// The suite knows nothing of waypoints: it applies its mesh namespaces,
// echo backends and routes, and sends requests from one echo pod to
// another. So that Skiff's waypoint is what serves those routes, the
// harness creates the suite's mesh namespaces first, each with a waypoint
// Gateway, and has the suite label every namespace it applies with
// istio.io/dataplane-mode=ambient and istio.io/use-waypoint (the suite
// replaces a namespace's labels when it applies it, so the labels must come
// from the suite's own namespace-labels option, not only from the harness).
//
// It is its own module because the suite brings controller-runtime and
// libraries the rest of the repository does not need.
//
//	cd conformance/gatewayapi && SKIFF_E2E=1 go test -count=1 -run TestMeshConformance -v -timeout 60m .
//
// The report is written to conformance/reports/ (see reportPath).
package gatewayapi
