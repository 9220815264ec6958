package index

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Labels and values of Istio's user contract.
const (
	LabelDataplaneMode = "istio.io/dataplane-mode"
	DataplaneAmbient   = "ambient"
	DataplaneNone      = "none"
	LabelUseWaypoint   = "istio.io/use-waypoint"
	LabelUseWaypointNS = "istio.io/use-waypoint-namespace"
	LabelWaypointFor   = "istio.io/waypoint-for"
	LabelGatewayName   = "gateway.networking.k8s.io/gateway-name"
	// LabelTunnel "http" marks a pod that terminates HBONE itself (a
	// waypoint): it is reached over HBONE without ztunnel on its side.
	LabelTunnel = "networking.istio.io/tunnel"
	// AnnotationRedirection is set to RedirectionEnabled by the node agent
	// once a pod's traffic is redirected to its node's ztunnel (and removed
	// when it no longer is): only then is the pod reached over HBONE.
	AnnotationRedirection  = "ambient.istio.io/redirection"
	RedirectionEnabled     = "enabled"
	WaypointClass          = "istio-waypoint"
	WaypointForService     = "service"
	WaypointForWorkload    = "workload"
	WaypointForAll         = "all"
	WaypointForNone        = "none"
	waypointNone           = "none"
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
	labelAppName           = "app.kubernetes.io/name"
	labelAppVersion        = "app.kubernetes.io/version"
	labelPodTemplateHash   = "pod-template-hash"
	HBONEPort              = 15008
	defaultRevision        = "latest"
	defaultServiceAccount  = "default"
)

// key is "<namespace>/<name>".
type key = string

func keyOf(ns, name string) key { return ns + "/" + name }

type namespaceInfo struct {
	labels map[string]string
}

type podInfo struct {
	ns, name, uid string
	labels        map[string]string
	ips           []netip.Addr
	node          string
	sa            string
	hostNetwork   bool
	ready         bool
	redirected    bool // AnnotationRedirection is RedirectionEnabled
	namedPorts    map[string]uint32
	ownerKind     string
	ownerName     string
}

func podFrom(p *corev1.Pod) *podInfo {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	pi := &podInfo{
		ns: p.Namespace, name: p.Name, uid: string(p.UID), labels: p.Labels,
		node: p.Spec.NodeName, sa: p.Spec.ServiceAccountName, hostNetwork: p.Spec.HostNetwork,
		redirected: p.Annotations[AnnotationRedirection] == RedirectionEnabled,
	}
	if pi.sa == "" {
		pi.sa = defaultServiceAccount
	}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			pi.ips = append(pi.ips, a)
		}
	}
	if len(pi.ips) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			pi.ips = append(pi.ips, a)
		}
	}
	if len(pi.ips) == 0 {
		return nil
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			pi.ready = c.Status == corev1.ConditionTrue
		}
	}
	if p.DeletionTimestamp != nil {
		pi.ready = false
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name != "" && port.ContainerPort > 0 {
				if pi.namedPorts == nil {
					pi.namedPorts = map[string]uint32{}
				}
				pi.namedPorts[port.Name] = uint32(port.ContainerPort)
			}
		}
	}
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			pi.ownerKind, pi.ownerName = o.Kind, o.Name
		}
	}
	return pi
}

// TrimAnnotations returns the pod annotations the index reads (nil when
// there are none), for a cache transform that drops the rest.
func TrimAnnotations(a map[string]string) map[string]string {
	v, ok := a[AnnotationRedirection]
	if !ok {
		return nil
	}
	return map[string]string{AnnotationRedirection: v}
}

type servicePort struct {
	name        string
	port        uint32
	targetPort  intstr.IntOrString
	appProtocol string
}

type serviceInfo struct {
	ns, name string
	labels   map[string]string
	selector map[string]string
	vips     []netip.Addr
	ports    []servicePort
	external bool // ExternalName: not part of the mesh's service set
}

func serviceFrom(s *corev1.Service) *serviceInfo {
	si := &serviceInfo{ns: s.Namespace, name: s.Name, labels: s.Labels, selector: s.Spec.Selector,
		external: s.Spec.Type == corev1.ServiceTypeExternalName}
	for _, ip := range s.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			si.vips = append(si.vips, a)
		}
	}
	if len(si.vips) == 0 && s.Spec.ClusterIP != "" {
		if a, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
			si.vips = append(si.vips, a)
		}
	}
	for _, p := range s.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		sp := servicePort{name: p.Name, port: uint32(p.Port), targetPort: p.TargetPort}
		if p.AppProtocol != nil {
			sp.appProtocol = *p.AppProtocol
		}
		si.ports = append(si.ports, sp)
	}
	return si
}

// sliceInfo is what an EndpointSlice of a selector-less Service adds: the
// pods it names (by targetRef) with their ports by name.
type sliceInfo struct {
	ns, service string
	pods        []key
	ports       map[string]uint32
}

func sliceFrom(s *discoveryv1.EndpointSlice) *sliceInfo {
	svc := s.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil
	}
	si := &sliceInfo{ns: s.Namespace, service: svc, ports: map[string]uint32{}}
	for _, p := range s.Ports {
		if p.Port != nil {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			si.ports[name] = uint32(*p.Port)
		}
	}
	for _, e := range s.Endpoints {
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			ns := e.TargetRef.Namespace
			if ns == "" {
				ns = s.Namespace
			}
			si.pods = append(si.pods, keyOf(ns, e.TargetRef.Name))
		}
	}
	return si
}

type gatewayInfo struct {
	ns, name    string
	waypointFor string
	addrs       []netip.Addr
	hostname    string
}

func gatewayFrom(g *gatewayv1.Gateway) *gatewayInfo {
	if g.Spec.GatewayClassName != WaypointClass {
		return nil
	}
	gi := &gatewayInfo{ns: g.Namespace, name: g.Name, waypointFor: g.Labels[LabelWaypointFor]}
	if gi.waypointFor == "" {
		gi.waypointFor = WaypointForService
	}
	for _, a := range g.Status.Addresses {
		if a.Type != nil && *a.Type == gatewayv1.HostnameAddressType {
			if gi.hostname == "" {
				gi.hostname = a.Value
			}
			continue
		}
		if ip, err := netip.ParseAddr(a.Value); err == nil {
			gi.addrs = append(gi.addrs, ip)
		}
	}
	return gi
}

func (g *gatewayInfo) serves(kind string) bool {
	return g.waypointFor == WaypointForAll || g.waypointFor == kind
}

// selects reports whether a non-empty selector matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// workloadOwner derives the telemetry workload name and whether it is a
// Deployment (a ReplicaSet named <deployment>-<pod-template-hash>).
func workloadOwner(p *podInfo) (name string, deployment, job bool) {
	switch p.ownerKind {
	case "ReplicaSet":
		if h := p.labels[labelPodTemplateHash]; h != "" && strings.HasSuffix(p.ownerName, "-"+h) {
			return strings.TrimSuffix(p.ownerName, "-"+h), true, false
		}
		return p.ownerName, false, false
	case "Job":
		return p.ownerName, false, true
	case "":
		return p.name, false, false
	}
	return p.ownerName, false, false
}

// equal reports whether p and o build the same workload.
func (p *podInfo) equal(o *podInfo) bool {
	return p.ns == o.ns && p.name == o.name && p.uid == o.uid && p.node == o.node && p.sa == o.sa &&
		p.hostNetwork == o.hostNetwork && p.ready == o.ready && p.redirected == o.redirected &&
		p.ownerKind == o.ownerKind && p.ownerName == o.ownerName &&
		maps.Equal(p.labels, o.labels) && slices.Equal(p.ips, o.ips) && maps.Equal(p.namedPorts, o.namedPorts)
}

// equal reports whether s and o are the same service to the index.
func (s *serviceInfo) equal(o *serviceInfo) bool {
	return s.ns == o.ns && s.name == o.name && s.external == o.external &&
		maps.Equal(s.labels, o.labels) && maps.Equal(s.selector, o.selector) &&
		slices.Equal(s.vips, o.vips) && slices.Equal(s.ports, o.ports)
}

// equal reports whether g and o are the same waypoint to the index.
func (g *gatewayInfo) equal(o *gatewayInfo) bool {
	return g.ns == o.ns && g.name == o.name && g.waypointFor == o.waypointFor && g.hostname == o.hostname &&
		slices.Equal(g.addrs, o.addrs)
}
