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

// RateLimitPolicy limits the request rate to an HTTPRoute's rules or to a
// Service, at the waypoint that serves it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=skiff,shortName=rlp
// +kubebuilder:printcolumn:name="Requests",type=integer,JSONPath=`.spec.limit.requests`
// +kubebuilder:printcolumn:name="Unit",type=string,JSONPath=`.spec.limit.unit`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec RateLimitPolicySpec `json:"spec"`
	// Status has one entry per target (the Gateway API policy status).
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

// RateLimitPolicySpec is what to limit and how much.
type RateLimitPolicySpec struct {
	// TargetRefs are HTTPRoutes (group gateway.networking.k8s.io) or
	// Services (group "") in the policy's namespace. A route target limits
	// the requests that route matches; a Service target all requests to it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(t, (t.group == 'gateway.networking.k8s.io' && t.kind == 'HTTPRoute') || (size(t.group) == 0 && t.kind == 'Service'))",message="targetRefs must be HTTPRoutes or Services"
	TargetRefs []gatewayv1.LocalPolicyTargetReference `json:"targetRefs"`
	// Limit is the token bucket.
	Limit Limit `json:"limit"`
	// Key, when set, gives each client its own bucket.
	// +optional
	Key *RateLimitKey `json:"key,omitempty"`
}

// Unit is the period Requests refill over.
// +kubebuilder:validation:Enum=Second;Minute;Hour
type Unit string

const (
	Second Unit = "Second"
	Minute Unit = "Minute"
	Hour   Unit = "Hour"
)

// Limit is a token bucket: Burst tokens at most, refilled at Requests per
// Unit; a request takes one token or is refused with 429.
type Limit struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	Requests uint32 `json:"requests"`
	Unit     Unit   `json:"unit"`
	// Burst is the bucket size; it defaults to Requests.
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
	Type KeyType `json:"type"`
	// Header is the request header whose value is the key (type Header).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_|~]+$`
	Header string `json:"header,omitempty"`
}
