package index

import (
	"net/netip"
	"slices"

	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// enrolled reports whether a pod is in the ambient mesh.
func (ix *Index) enrolled(p *podInfo) bool {
	if p.hostNetwork {
		return false
	}
	switch p.labels[LabelDataplaneMode] {
	case DataplaneAmbient:
		return true
	case DataplaneNone:
		return false
	}
	return ix.nsLabel(p.ns, LabelDataplaneMode) == DataplaneAmbient
}

// waypointFor returns the waypoint an object in ns with labels is bound to,
// if it serves objects of that kind ("service" or "workload").
func (ix *Index) waypointFor(ns string, labels map[string]string, kind string) *workloadapi.GatewayAddress {
	if labels[LabelGatewayName] != "" {
		return nil // a waypoint never routes through a waypoint
	}
	gk := ix.boundGateway(ns, labels)
	if gk == "" {
		return nil
	}
	g := ix.gateways[gk]
	if g == nil || !g.serves(kind) {
		return nil
	}
	return ix.gatewayAddress(g)
}

func (ix *Index) gatewayAddress(g *gatewayInfo) *workloadapi.GatewayAddress {
	switch {
	case len(g.addrs) > 0:
		return &workloadapi.GatewayAddress{
			Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Network: ix.opts.Network, Address: g.addrs[0].AsSlice()}},
			HboneMtlsPort: HBONEPort,
		}
	case g.hostname != "":
		return &workloadapi.GatewayAddress{
			Destination:   &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: g.ns, Hostname: g.hostname}},
			HboneMtlsPort: HBONEPort,
		}
	}
	return nil // not programmed yet: no address to send traffic to
}

// addressable reports whether p's workload w is published. A host-network
// pod's address is its node's, shared by every host-network pod there
// (kube-proxy, the CNI agent, ...): it is not a workload of its own to
// reach or authenticate, so it is published only as a service endpoint,
// marked HOST_NETWORK, which ztunnel never indexes by address (as in Istio).
func addressable(p *podInfo, w *workloadapi.Workload) bool {
	return !p.hostNetwork || len(w.Services) > 0
}

func (ix *Index) buildWorkload(p *podInfo) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid:            ix.workloadUID(keyOf(p.ns, p.name)),
		Name:           p.name,
		Namespace:      p.ns,
		Network:        ix.opts.Network,
		TrustDomain:    ix.opts.TrustDomain,
		ServiceAccount: p.sa,
		Node:           p.node,
		ClusterId:      ix.opts.ClusterID,
		Status:         workloadapi.WorkloadStatus_UNHEALTHY,
	}
	for _, ip := range p.ips {
		w.Addresses = append(w.Addresses, ip.AsSlice())
	}
	if p.ready {
		w.Status = workloadapi.WorkloadStatus_HEALTHY
	}
	if p.hostNetwork {
		w.NetworkMode = workloadapi.NetworkMode_HOST_NETWORK
	}
	// HBONE only where something answers it: a pod that terminates it
	// itself, or one whose node agent confirmed (by annotation) that its
	// traffic goes to ztunnel. Any other pod, also one in an ambient
	// namespace not yet (or no longer) redirected, is reached directly.
	switch {
	case p.hostNetwork:
	case p.labels[LabelTunnel] == "http":
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
		w.NativeTunnel = true
	case p.redirected:
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	if ix.enrolled(p) && !w.NativeTunnel {
		w.Waypoint = ix.waypointFor(p.ns, p.labels, WaypointForWorkload)
	}
	name, deployment, job := workloadOwner(p)
	w.WorkloadName = name
	switch {
	case deployment:
		w.WorkloadType = workloadapi.WorkloadType_DEPLOYMENT
	case job:
		w.WorkloadType = workloadapi.WorkloadType_JOB
	default:
		w.WorkloadType = workloadapi.WorkloadType_POD
	}
	w.CanonicalName = firstNonEmpty(p.labels[labelCanonicalName], p.labels[labelAppName], p.labels["app"], name)
	w.CanonicalRevision = firstNonEmpty(p.labels[labelCanonicalRevision], p.labels[labelAppVersion], p.labels["version"], defaultRevision)

	// Services: by selector, and by EndpointSlice for selector-less ones.
	for sk := range ix.svcByNS[p.ns] {
		s := ix.services[sk]
		if s.external || !selects(s.selector, p.labels) {
			continue
		}
		ix.addService(w, s, p, nil)
	}
	for sk, sliceKeys := range ix.sliceSvcByPod[keyOf(p.ns, p.name)] {
		s := ix.services[sk]
		if s == nil || s.external || len(s.selector) > 0 {
			continue
		}
		ports := map[string]uint32{}
		for slk := range sliceKeys {
			for n, v := range ix.slices[slk].ports {
				ports[n] = v
			}
		}
		ix.addService(w, s, p, ports)
	}

	for _, ns := range []string{p.ns, ix.opts.RootNamespace} {
		for ak, a := range ix.authzByNS[ns] {
			if sel := selectorOf(a); sel != nil && selects(sel, p.labels) && translatable(a) {
				w.AuthorizationPolicies = append(w.AuthorizationPolicies, ak)
			}
		}
		if p.ns == ix.opts.RootNamespace {
			break
		}
	}
	slices.Sort(w.AuthorizationPolicies)
	return w
}

// addService adds s to w.Services with target ports resolved for p.
// slicePorts, for selector-less services, maps port names to numbers.
func (ix *Index) addService(w *workloadapi.Workload, s *serviceInfo, p *podInfo, slicePorts map[string]uint32) {
	pl := &workloadapi.PortList{}
	for _, sp := range s.ports {
		var target uint32
		switch {
		case slicePorts != nil:
			target = slicePorts[sp.name]
		case sp.targetPort.Type == 1: // named
			target = p.namedPorts[sp.targetPort.StrVal]
		case sp.targetPort.IntVal > 0:
			target = uint32(sp.targetPort.IntVal)
		default:
			target = sp.port
		}
		if target == 0 {
			continue // the pod does not expose this named port
		}
		pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: sp.port, TargetPort: target})
	}
	if w.Services == nil {
		w.Services = map[string]*workloadapi.PortList{}
	}
	w.Services[s.ns+"/"+ix.hostname(s.ns, s.name)] = pl
}

func (ix *Index) buildService(s *serviceInfo) *workloadapi.Service {
	out := &workloadapi.Service{
		Name:      s.name,
		Namespace: s.ns,
		Hostname:  ix.hostname(s.ns, s.name),
		Waypoint:  ix.waypointFor(s.ns, s.labels, WaypointForService),
	}
	for _, ip := range s.vips {
		out.Addresses = append(out.Addresses, &workloadapi.NetworkAddress{Network: ix.opts.Network, Address: ip.AsSlice()})
	}
	for _, sp := range s.ports {
		var target uint32
		if sp.targetPort.Type == 0 {
			target = uint32(sp.targetPort.IntVal)
			if target == 0 {
				target = sp.port
			}
		}
		out.Ports = append(out.Ports, &workloadapi.Port{ServicePort: sp.port, TargetPort: target})
	}
	return out
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// addrBytes is netip.Addr's slice form, 4 bytes for IPv4.
func addrBytes(a netip.Addr) []byte { return a.Unmap().AsSlice() }
