// Package v1 holds Skiff's Go types for Istio's security.istio.io/v1
// AuthorizationPolicy: the subset Skiff implements (ALLOW and DENY;
// principals, namespaces, IP blocks and ports at L4; paths, methods, hosts
// and headers at L7), with Istio's field names so that existing manifests
// apply unchanged.
//
// +kubebuilder:object:generate=true
// +groupName=security.istio.io
package v1
