// Package mesh decides which pods are in the ambient mesh, with Istio's
// labels and annotations, for the CNI plugin and the node agent alike.
package mesh

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations of the user's contract (Istio's names).
const (
	// DataplaneModeLabel on a namespace or pod enrols it ("ambient"); on a
	// pod, "none" opts it out.
	DataplaneModeLabel = "istio.io/dataplane-mode"
	ModeAmbient        = "ambient"
	ModeNone           = "none"

	// RedirectionAnnotation is set to RedirectionEnabled by the node agent on
	// each pod whose traffic it redirects. A pod may carry
	// RedirectionDisabled to opt out (as ztunnel's own pods do).
	RedirectionAnnotation = "ambient.istio.io/redirection"
	RedirectionEnabled    = "enabled"
	RedirectionDisabled   = "disabled"

	// sidecarStatusAnnotation marks a pod that has an Istio sidecar, which
	// does its own redirection.
	sidecarStatusAnnotation = "sidecar.istio.io/status"
)

// DefaultExcludedNamespaces are never enrolled unless configured otherwise.
var DefaultExcludedNamespaces = []string{"kube-system"}

// Decision says whether a pod is in the mesh, and why.
type Decision struct {
	Enrol  bool
	Reason string
}

// Decide reports whether pod, in namespace ns (which may be nil when
// unknown), belongs in the ambient mesh. excluded lists namespaces never
// enrolled.
func Decide(pod *corev1.Pod, ns *corev1.Namespace, excluded []string) Decision {
	switch {
	case pod == nil:
		return Decision{false, "no pod"}
	case pod.Spec.HostNetwork:
		return Decision{false, "pod uses the host network"}
	case slices.Contains(excluded, pod.Namespace):
		return Decision{false, "namespace " + pod.Namespace + " is excluded"}
	case pod.Labels[DataplaneModeLabel] == ModeNone:
		return Decision{false, "pod is labelled " + DataplaneModeLabel + "=" + ModeNone}
	case pod.Annotations[RedirectionAnnotation] == RedirectionDisabled:
		return Decision{false, "pod is annotated " + RedirectionAnnotation + "=" + RedirectionDisabled}
	case pod.Annotations[sidecarStatusAnnotation] != "":
		return Decision{false, "pod has a sidecar"}
	case pod.Labels[DataplaneModeLabel] == ModeAmbient:
		return Decision{true, "pod is labelled " + DataplaneModeLabel + "=" + ModeAmbient}
	case ns != nil && ns.Labels[DataplaneModeLabel] == ModeAmbient:
		return Decision{true, "namespace is labelled " + DataplaneModeLabel + "=" + ModeAmbient}
	}
	return Decision{false, "neither pod nor namespace is labelled " + DataplaneModeLabel + "=" + ModeAmbient}
}
