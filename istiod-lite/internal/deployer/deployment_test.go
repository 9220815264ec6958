package deployer

import (
	"strconv"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The waypoint's Deployment carries the deployer's contract: its
// --waypoint argument, XDS_ADDRESS, and the trace endpoint only when one
// is configured.
func TestDeploymentEnvironment(t *testing.T) {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	for _, tc := range []struct {
		name string
		otlp string
	}{
		{"no tracing", ""},
		{"tracing", "otel-collector.observability:4317"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &deployer{o: Options{XDSAddress: "istiod.istio-system.svc:15012", Replicas: 1, OTLPEndpoint: tc.otlp}}
			var dep appsv1.Deployment
			d.deploymentSpec(gw, &dep, map[string]string{labelGateway: "wp"}, nil)
			c := dep.Spec.Template.Spec.Containers[0]
			if len(c.Args) != 1 || c.Args[0] != "--waypoint=shop/wp" {
				t.Errorf("args %q", c.Args)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if env["XDS_ADDRESS"] != "istiod.istio-system.svc:15012" {
				t.Errorf("XDS_ADDRESS %q", env["XDS_ADDRESS"])
			}
			got, set := env["OTLP_ENDPOINT"]
			if set != (tc.otlp != "") || got != tc.otlp {
				t.Errorf("OTLP_ENDPOINT %q (set %v), want %q", got, set, tc.otlp)
			}
			// Prometheus finds waypoints by annotation, as Istio's.
			a := dep.Spec.Template.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "15020" || a["prometheus.io/path"] != "/metrics" {
				t.Errorf("pod annotations %v, want Prometheus' scrape annotations for :15020/metrics", a)
			}
		})
	}
}

// HBONE over QUIC: unless the waypoints' transport is tcp, the Deployment
// and the Service declare UDP 15008 beside TCP 15008, and a transport set
// for waypoints reaches them as HBONE_TRANSPORT.
func TestDeploymentHBONETransport(t *testing.T) {
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "wp"}}
	for _, tc := range []struct {
		transport string
		udp       bool
	}{
		{"", true},
		{"auto", true},
		{"quic", true},
		{"tcp", false},
	} {
		t.Run("transport "+tc.transport, func(t *testing.T) {
			d := &deployer{o: Options{Replicas: 1, HBONETransport: tc.transport}}
			var dep appsv1.Deployment
			d.deploymentSpec(gw, &dep, map[string]string{labelGateway: "wp"}, nil)
			c := dep.Spec.Template.Spec.Containers[0]
			type port struct {
				port     int32
				protocol corev1.Protocol
			}
			container := map[port]bool{}
			for _, p := range c.Ports {
				container[port{p.ContainerPort, p.Protocol}] = true
			}
			service := map[port]bool{}
			for _, p := range servicePorts(d.servesQUIC()) {
				if p.TargetPort.IntVal != p.Port {
					t.Errorf("service port %d targets %v", p.Port, p.TargetPort)
				}
				service[port{p.Port, p.Protocol}] = true
			}
			for what, ports := range map[string]map[port]bool{"container": container, "service": service} {
				if !ports[port{HBONEPort, corev1.ProtocolTCP}] {
					t.Errorf("%s ports lack TCP %d", what, HBONEPort)
				}
				if got := ports[port{HBONEPort, corev1.ProtocolUDP}]; got != tc.udp {
					t.Errorf("%s declares UDP %d: %v, want %v", what, HBONEPort, got, tc.udp)
				}
			}
			env := ""
			for _, e := range c.Env {
				if e.Name == "HBONE_TRANSPORT" {
					env = e.Value
				}
			}
			if env != tc.transport {
				t.Errorf("HBONE_TRANSPORT %q, want %q", env, tc.transport)
			}
		})
	}
}

// Replicas are the configured count when the Deployment is made and when
// the configuration changes; a count set meanwhile by kubectl scale or an
// HPA is left alone.
func TestDeploymentReplicas(t *testing.T) {
	dep := func(replicas int32, annotation string) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		if replicas > 0 {
			d.Spec.Replicas = ptr.To(replicas)
		}
		if annotation != "" {
			d.Annotations = map[string]string{annotationReplicas: annotation}
		}
		return d
	}
	for _, tc := range []struct {
		name       string
		configured int32
		dep        *appsv1.Deployment
		want       int32
	}{
		{"new Deployment", 2, dep(0, ""), 2},
		{"scaled by hand or an HPA", 2, dep(5, "2"), 5},
		{"configured count changed", 3, dep(5, "2"), 3},
		{"made by a deployer that did not record it", 2, dep(5, ""), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &deployer{o: Options{Replicas: tc.configured}}
			d.setReplicas(tc.dep)
			if got := *tc.dep.Spec.Replicas; got != tc.want {
				t.Errorf("replicas %d, want %d", got, tc.want)
			}
			if got, want := tc.dep.Annotations[annotationReplicas], strconv.Itoa(int(tc.configured)); got != want {
				t.Errorf("annotation %q, want %q", got, want)
			}
		})
	}
}
