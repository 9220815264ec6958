package agent

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiffmesh/skiff/cni/internal/mesh"
)

// The informers' trimming keeps everything the agent decides on: a trimmed
// pod gets the same decision, addresses, identity and state as the whole
// one, and a trimmed namespace the same labels.
func TestTrimKeepsWhatTheAgentReads(t *testing.T) {
	now := metav1.Now()
	full := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: "web", Namespace: "shop", UID: "uid-1", ResourceVersion: "7",
				Labels:            map[string]string{"app": "web"},
				Annotations:       map[string]string{"a": "b", lastApplied: `{"big":"json"}`},
				ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
				OwnerReferences:   []metav1.OwnerReference{{Name: "rs"}},
				DeletionTimestamp: &now,
			},
			Spec: corev1.PodSpec{
				NodeName: "node-1", ServiceAccountName: "web-sa",
				Containers: []corev1.Container{{Name: "app", Image: "app", Env: []corev1.EnvVar{{Name: "X", Value: "y"}}}},
			},
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning, PodIP: "10.0.0.1",
				PodIPs:            []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true}},
			},
		}
	}
	ns := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "ns-uid", Labels: map[string]string{mesh.DataplaneModeLabel: mesh.ModeAmbient},
			Annotations: map[string]string{"x": "y"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
	tns, err := trimNamespace(ns.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	trimmedNS := tns.(*corev1.Namespace)
	if trimmedNS.Name != ns.Name || trimmedNS.Labels[mesh.DataplaneModeLabel] != mesh.ModeAmbient ||
		trimmedNS.Annotations != nil || trimmedNS.ManagedFields != nil {
		t.Errorf("trimmed namespace: %+v", trimmedNS)
	}

	for _, tc := range []struct {
		name   string
		change func(*corev1.Pod)
	}{
		{"plain", func(*corev1.Pod) {}},
		{"labelled ambient", func(p *corev1.Pod) { p.Labels[mesh.DataplaneModeLabel] = mesh.ModeAmbient }},
		{"opted out", func(p *corev1.Pod) { p.Labels[mesh.DataplaneModeLabel] = mesh.ModeNone }},
		{"redirection disabled", func(p *corev1.Pod) { p.Annotations[mesh.RedirectionAnnotation] = mesh.RedirectionDisabled }},
		{"sidecar", func(p *corev1.Pod) { p.Annotations["sidecar.istio.io/status"] = "{}" }},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{"default service account", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }},
		{"only podIP", func(p *corev1.Pod) { p.Status.PodIPs = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := full()
			tc.change(p)
			obj, err := trimPod(p.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			tp := obj.(*corev1.Pod)
			if got, want := mesh.Decide(tp, trimmedNS, nil), mesh.Decide(p, ns, nil); got != want {
				t.Errorf("decision %+v, want %+v", got, want)
			}
			if !slices.Equal(podIPs(tp), podIPs(p)) || terminal(tp) != terminal(p) || serviceAccount(tp) != serviceAccount(p) ||
				tp.UID != p.UID || tp.Name != p.Name || tp.Namespace != p.Namespace || !tp.DeletionTimestamp.Equal(p.DeletionTimestamp) ||
				tp.Annotations[mesh.RedirectionAnnotation] != p.Annotations[mesh.RedirectionAnnotation] {
				t.Errorf("trimmed pod differs in what the agent reads: %+v %+v %+v", tp.ObjectMeta, tp.Spec, tp.Status)
			}
			if tp.ManagedFields != nil || tp.Spec.Containers != nil || tp.Status.ContainerStatuses != nil || tp.Annotations[lastApplied] != "" {
				t.Errorf("trimmed pod kept what the agent does not read: %+v %+v %+v", tp.ObjectMeta, tp.Spec, tp.Status)
			}
		})
	}
	if obj, _ := trimPod("tombstone"); obj != "tombstone" {
		t.Error("trimPod changed a non-pod")
	}
}
