// Package v1alpha1 holds Skiff's policy.skiff.dev/v1alpha1 RateLimitPolicy:
// local rate limits, enforced by waypoints, attached to an HTTPRoute or a
// Service the way Gateway API policies attach (targetRefs), with Envoy
// local rate limit semantics (a token bucket of Burst tokens refilled with
// Requests tokens per Unit), optionally one bucket per client.
//
// +kubebuilder:object:generate=true
// +groupName=policy.skiff.dev
package v1alpha1
