// Package scale holds istiod-lite's configuration-scale test (issue 14):
// istiod-lite, built and run as its own process against a real apiserver
// and etcd, with 1,000 namespaces, 5,000 Services, 20,000 pods, 2,000
// AuthorizationPolicies and 1,000 HTTPRoutes, serving ztunnel clients made
// of the real xDS client and mesh-state store. It reports the time from a
// change to its arrival at a subscribed ztunnel, the size of a full push and
// istiod-lite's memory, and checks that each push after a change carries
// exactly what changed.
//
// SKIFF_SCALE_NAMESPACES scales the cluster down (or up) while keeping its
// shape per namespace (go test -short runs it with 100 namespaces);
// SKIFF_SCALE_PROFILE names a directory for istiod-lite's CPU profiles of
// the load and its heap profile after it.
package scale
