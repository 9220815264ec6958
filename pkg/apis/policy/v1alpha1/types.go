package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// GroupVersion is policy.skiff.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "policy.skiff.dev", Version: "v1alpha1"}

// AddToScheme registers the types of this group version.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &RateLimitPolicy{}, &RateLimitPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// RateLimitPolicy limits the request rate to an HTTPRoute, one rule of an
// HTTPRoute, or a Service, at the waypoint that serves it. Over the limit
// a request is answered with 429 Too Many Requests (gRPC: RESOURCE_EXHAUSTED).
// When several policies apply to a request, all of them do: it is refused
// if any one is over its limit.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=skiff,shortName=rlp
// +kubebuilder:printcolumn:name="Requests",type=integer,JSONPath=`.spec.limit.requests`
// +kubebuilder:printcolumn:name="Unit",type=string,JSONPath=`.spec.limit.unit`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RateLimitPolicySpec `json:"spec"`
	// Status has one entry per target (the Gateway API policy status):
	// whether the target's waypoint enforces the policy, and why not.
	// +optional
	Status gatewayv1.PolicyStatus `json:"status,omitempty"`
}

// RateLimitPolicyList is a list of RateLimitPolicy.
// +kubebuilder:object:root=true
type RateLimitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RateLimitPolicy `json:"items"`
}

// RateLimitPolicySpec is what to limit, how much, and for whom.
// +kubebuilder:validation:XValidation:rule="!has(self.failureMode) || (has(self.mode) && self.mode == 'Global')",message="failureMode applies only to mode Global: a Local limit never waits for a rate-limit service"
type RateLimitPolicySpec struct {
	// TargetRefs are what the limit applies to, in the policy's namespace:
	// an HTTPRoute (group gateway.networking.k8s.io) limits the requests
	// the route matches, or, with sectionName, only those matched by the
	// route's rule of that name (spec.rules[].name); a Service (group "")
	// limits every request to it. sectionName is not supported on a
	// Service. Each target has its own entry in the policy's status.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(t, (t.group == 'gateway.networking.k8s.io' && t.kind == 'HTTPRoute') || (size(t.group) == 0 && t.kind == 'Service'))",message="targetRefs must be HTTPRoutes or Services"
	// +kubebuilder:validation:XValidation:rule="self.all(t, t.kind != 'Service' || !has(t.sectionName))",message="sectionName is not supported on a Service target (no limit per Service port); to limit one rule of an HTTPRoute, target the HTTPRoute with the rule's name"
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.group == b.group && a.kind == b.kind && a.name == b.name && (has(a.sectionName) ? a.sectionName : '') == (has(b.sectionName) ? b.sectionName : '')))",message="targetRefs must be unique"
	TargetRefs []gatewayv1.LocalPolicyTargetReferenceWithSectionName `json:"targetRefs"`
	// Limit is the token bucket: one that every client shares, or one per
	// client when key is set.
	Limit Limit `json:"limit"`
	// Key, when set, gives each client its own bucket: per SPIFFE
	// identity, per source IP address or per value of a request header.
	// Without it all clients share one bucket.
	// +optional
	Key *RateLimitKey `json:"key,omitempty"`
	// Overrides give some clients a limit of their own instead of limit,
	// for example a higher one for a batch job. Each client an override
	// lists gets its own bucket of that size, whatever key says. When a
	// client is listed by more than one override, the first applies.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Overrides []RateLimitOverride `json:"overrides,omitempty"`
	// Mode is where the buckets are kept. Local (the default): in each
	// waypoint replica, so with N replicas a client may get up to N times
	// the limit. Global: in a rate-limit service shared by every replica
	// (Envoy's rate-limit service protocol, for example
	// github.com/envoyproxy/ratelimit), so the limit holds across replicas.
	// +optional
	// +kubebuilder:default=Local
	Mode Mode `json:"mode,omitempty"`
	// FailureMode says what a Global limit does with a request when the
	// rate-limit service cannot be reached or does not answer in time:
	// Allow lets it through (the default, as Envoy does), Deny refuses it
	// with 429. Only allowed with mode Global.
	// +optional
	FailureMode FailureMode `json:"failureMode,omitempty"`
}

// Unit is the period Requests refill over.
// +kubebuilder:validation:Enum=Second;Minute;Hour
type Unit string

// Units a limit refills over.
const (
	Second Unit = "Second"
	Minute Unit = "Minute"
	Hour   Unit = "Hour"
)

// Limit is a token bucket: Burst tokens at most, refilled at Requests per
// Unit; a request takes one token or is refused with 429.
type Limit struct {
	// Requests are the tokens added to the bucket every unit: the
	// sustained rate.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	Requests uint32 `json:"requests"`
	// Unit is the period Requests are added over: Second, Minute or Hour.
	Unit Unit `json:"unit"`
	// Burst is the bucket size: how many requests may come at once after
	// a quiet period. It defaults to Requests.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	Burst *uint32 `json:"burst,omitempty"`
}

// KeyType selects what distinguishes one client's bucket from another's.
// +kubebuilder:validation:Enum=SourceIdentity;SourceIP;Header
type KeyType string

const (
	// KeySourceIdentity keys by the client's SPIFFE identity.
	KeySourceIdentity KeyType = "SourceIdentity"
	// KeySourceIP keys by the client's IP address.
	KeySourceIP KeyType = "SourceIP"
	// KeyHeader keys by the value of a request header.
	KeyHeader KeyType = "Header"
)

// RateLimitKey makes the limit per client.
// +kubebuilder:validation:XValidation:rule="self.type == 'Header' ? has(self.header) && size(self.header) > 0 : !has(self.header)",message="header is required for type Header and only allowed for it"
type RateLimitKey struct {
	// Type is what tells clients apart: SourceIdentity (the client's SPIFFE
	// identity), SourceIP (its IP address) or Header (the value of a
	// request header).
	Type KeyType `json:"type"`
	// Header is the request header whose value is the key (type Header).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_|~]+$`
	Header string `json:"header,omitempty"`
}

// RateLimitOverride is a limit of its own for the clients it lists, named
// by identity as Istio's AuthorizationPolicy principals or as Kubernetes
// service accounts. A client is identified by its mesh certificate, so
// only clients in the mesh (ambient or with a sidecar) can match.
// +kubebuilder:validation:XValidation:rule="(has(self.principals) && size(self.principals) > 0) || (has(self.serviceAccounts) && size(self.serviceAccounts) > 0)",message="an override must list at least one client in principals or serviceAccounts"
type RateLimitOverride struct {
	// Limit is the bucket each listed client gets instead of the policy's.
	Limit Limit `json:"limit"`
	// Principals are client identities as Istio writes them,
	// "<trust domain>/ns/<namespace>/sa/<service account>" (for example
	// "cluster.local/ns/batch/sa/reporter"), or as full SPIFFE IDs with
	// the "spiffe://" prefix. Wildcards are not supported.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Principals []Principal `json:"principals,omitempty"`
	// ServiceAccounts are clients named by their Kubernetes service
	// account, in the mesh's trust domain.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	ServiceAccounts []ServiceAccountReference `json:"serviceAccounts,omitempty"`
}

// Principal is a workload identity, "<trust domain>/ns/<namespace>/sa/<service account>",
// optionally prefixed with "spiffe://".
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=600
// +kubebuilder:validation:Pattern=`^(spiffe://)?[a-z0-9._-]+/ns/[a-z0-9]([-a-z0-9]*[a-z0-9])?/sa/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
type Principal string

// ServiceAccountReference names a Kubernetes service account.
type ServiceAccountReference struct {
	// Name of the service account.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
	// Namespace of the service account; it defaults to the policy's.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// Mode is where a limit's buckets are kept.
// +kubebuilder:validation:Enum=Local;Global
type Mode string

const (
	// ModeLocal keeps the buckets in each waypoint replica.
	ModeLocal Mode = "Local"
	// ModeGlobal keeps them in a rate-limit service every replica asks.
	ModeGlobal Mode = "Global"
)

// FailureMode is what a Global limit does when the rate-limit service
// cannot answer.
// +kubebuilder:validation:Enum=Allow;Deny
type FailureMode string

const (
	// FailureModeAllow lets requests through.
	FailureModeAllow FailureMode = "Allow"
	// FailureModeDeny refuses them with 429.
	FailureModeDeny FailureMode = "Deny"
)
