// Package v1alpha1 holds Skiff's policy.skiff.dev/v1alpha1 RateLimitPolicy:
// rate limits enforced by waypoints, attached to an HTTPRoute, one rule of
// it, or a Service the way Gateway API policies attach (targetRefs), with
// Envoy local rate limit semantics (a token bucket of Burst tokens refilled
// with Requests tokens per Unit), optionally one bucket per client, limits
// of their own for listed clients (overrides, as Linkerd's
// HTTPLocalRateLimitPolicy has), and buckets kept in each waypoint replica
// or shared through Envoy's rate-limit service.
//
// Admission (the CRD's schema and CEL rules) refuses what it can: a target
// of another kind, a sectionName on a Service, an override listing no
// client, a failureMode on a Local limit. What it cannot know, such as
// whether a target exists or has a rule of that name, the control plane
// reports in the policy's status.
//
// +kubebuilder:object:generate=true
// +groupName=policy.skiff.dev
package v1alpha1
