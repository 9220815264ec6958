package mesh

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	ns := func(labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: labels}}
	}
	pod := func(namespace string, labels, annotations map[string]string, hostNet bool) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: namespace, Labels: labels, Annotations: annotations},
			Spec:       corev1.PodSpec{HostNetwork: hostNet},
		}
	}
	ambient := map[string]string{DataplaneModeLabel: ModeAmbient}
	none := map[string]string{DataplaneModeLabel: ModeNone}
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want bool
	}{
		{"namespace labelled", pod("app", nil, nil, false), ns(ambient), true},
		{"pod labelled", pod("app", ambient, nil, false), ns(nil), true},
		{"pod labelled, namespace unknown", pod("app", ambient, nil, false), nil, true},
		{"nothing labelled", pod("app", nil, nil, false), ns(nil), false},
		{"other mode on namespace", pod("app", nil, nil, false), ns(map[string]string{DataplaneModeLabel: "sidecar"}), false},
		{"pod opts out", pod("app", none, nil, false), ns(ambient), false},
		{"pod annotated disabled", pod("app", nil, map[string]string{RedirectionAnnotation: RedirectionDisabled}, false), ns(ambient), false},
		{"pod annotated enabled", pod("app", nil, map[string]string{RedirectionAnnotation: RedirectionEnabled}, false), ns(ambient), true},
		{"host network", pod("app", ambient, nil, true), ns(ambient), false},
		{"excluded namespace", pod("kube-system", ambient, nil, false), ns(ambient), false},
		{"sidecar", pod("app", nil, map[string]string{sidecarStatusAnnotation: "{}"}, false), ns(ambient), false},
		{"nil pod", nil, ns(ambient), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.pod, tc.ns, DefaultExcludedNamespaces)
			if d.Enrol != tc.want || d.Reason == "" {
				t.Fatalf("Decide = %+v, want enrol %v with a reason", d, tc.want)
			}
		})
	}
}
