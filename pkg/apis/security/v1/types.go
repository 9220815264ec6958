package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is security.istio.io/v1.
var GroupVersion = schema.GroupVersion{Group: "security.istio.io", Version: "v1"}

// AddToScheme registers the types of this group version.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &AuthorizationPolicy{}, &AuthorizationPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Action is what a policy does with the requests it matches.
// +kubebuilder:validation:Enum=ALLOW;DENY;AUDIT;CUSTOM
type Action string

const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
	// ActionAudit flags the requests a policy matches without allowing or
	// denying them. A waypoint enforces it (targetRefs) and records the
	// policy in its access log; ztunnel does not, as in Istio, and a
	// selector or namespace policy with it is ignored, which its status
	// says.
	ActionAudit Action = "AUDIT"
	// ActionCustom delegates the decision to an external authorizer
	// (Provider), which Skiff does not have. A waypoint enforces a CUSTOM
	// policy as DENY over the same rules, failing closed; ztunnel ignores
	// it, as in Istio, so a selector or namespace CUSTOM policy restricts
	// nothing. Either way the status says so and a Warning event is
	// raised on the policy.
	ActionCustom Action = "CUSTOM"
)

// AuthorizationPolicy is access control for workloads in the mesh.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=istio-io;security-istio-io,shortName=ap
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationPolicySpec `json:"spec,omitempty"`
	Status PolicyStatus            `json:"status,omitempty"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

// AuthorizationPolicySpec selects workloads and says which requests to them
// the policy matches and what to do with them.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads in the policy's namespace (every
	// namespace, for the root namespace) that the policy applies to.
	// Without selector and targetRefs it applies to the whole namespace.
	// +optional
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// TargetRefs attach the policy to a waypoint (Gateway) or to a Service
	// behind one; such a policy is enforced by the waypoint, at L7.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`
	// TargetRef is the single-target form of TargetRefs.
	// +optional
	TargetRef *PolicyTargetReference `json:"targetRef,omitempty"`
	// Rules match requests; a request matches the policy if any rule does.
	// +optional
	Rules []Rule `json:"rules,omitempty"`
	// Action is ALLOW (the default), DENY, AUDIT or CUSTOM; see the
	// constants for where AUDIT and CUSTOM are enforced and how.
	// +optional
	Action Action `json:"action,omitempty"`
	// Provider names the external authorizer of a CUSTOM policy. Skiff has
	// none: it is only reported (status, events), and the policy is
	// enforced as DENY by a waypoint.
	// +optional
	Provider *Provider `json:"provider,omitempty"`
}

// Provider names an external authorizer (CUSTOM action); Skiff does not
// call it.
type Provider struct {
	Name string `json:"name,omitempty"`
}

// WorkloadSelector selects workloads by labels.
type WorkloadSelector struct {
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PolicyTargetReference names the resource a policy attaches to.
type PolicyTargetReference struct {
	// Group is the target's API group ("" for core, or
	// gateway.networking.k8s.io).
	// +optional
	Group string `json:"group,omitempty"`
	// Kind is Gateway or Service.
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Namespace must be the policy's own when set.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Rule matches requests from sources, to operations, when conditions hold;
// the three parts are ANDed, entries within each ORed. An empty rule matches
// every request.
type Rule struct {
	// +optional
	From []RuleFrom `json:"from,omitempty"`
	// +optional
	To []RuleTo `json:"to,omitempty"`
	// +optional
	When []Condition `json:"when,omitempty"`
}

// RuleFrom holds one source.
type RuleFrom struct {
	Source *Source `json:"source,omitempty"`
}

// RuleTo holds one operation.
type RuleTo struct {
	Operation *Operation `json:"operation,omitempty"`
}

// Source matches the peer. Fields are ANDed; values within one ORed.
type Source struct {
	// Principals are peer identities ("<trust domain>/ns/<ns>/sa/<sa>"),
	// with "*" prefix, suffix or presence matching.
	Principals    []string `json:"principals,omitempty"`
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// RequestPrincipals (JWT) are not supported by Skiff; a rule using them
	// never matches in an ALLOW policy and matches on its other conditions
	// in a DENY policy.
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	Namespaces           []string `json:"namespaces,omitempty"`
	NotNamespaces        []string `json:"notNamespaces,omitempty"`
	// IPBlocks are source IPs or CIDRs of the connection.
	IPBlocks    []string `json:"ipBlocks,omitempty"`
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
	// RemoteIPBlocks are original client IPs (X-Forwarded-For), checked by
	// waypoints only.
	RemoteIPBlocks    []string `json:"remoteIpBlocks,omitempty"`
	NotRemoteIPBlocks []string `json:"notRemoteIpBlocks,omitempty"`
}

// Operation matches the request. Ports are L4; hosts, methods and paths L7.
type Operation struct {
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	Ports      []string `json:"ports,omitempty"`
	NotPorts   []string `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
}

// Condition is an extra attribute match, such as request.headers[x-user]
// or source.ip.
type Condition struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

// PolicyStatus reports how the control plane took the policy.
type PolicyStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}
