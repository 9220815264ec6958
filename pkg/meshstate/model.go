package meshstate

import (
	"fmt"
	"net/netip"
	"slices"
	"unique"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/inpod"
)

// TunnelProtocol is how a workload accepts mesh traffic.
type TunnelProtocol int

const (
	// TunnelNone: the workload is not in the mesh; traffic to it is passed
	// through as plain TCP.
	TunnelNone TunnelProtocol = 0
	// TunnelHBONE: the workload's ztunnel accepts HBONE on port 15008.
	TunnelHBONE TunnelProtocol = 1
)

// MarshalText writes the protocol's name.
func (p TunnelProtocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p TunnelProtocol) String() string {
	switch p {
	case TunnelNone:
		return "NONE"
	case TunnelHBONE:
		return "HBONE"
	}
	return fmt.Sprintf("TunnelProtocol(%d)", int(p))
}

// NamespacedHostname names a service.
type NamespacedHostname struct {
	Namespace string `json:"namespace"`
	Hostname  string `json:"hostname"`
}

// Key is the service key "<namespace>/<hostname>".
func (n NamespacedHostname) Key() string { return n.Namespace + "/" + n.Hostname }

// GatewayAddress is how to reach a waypoint: a workload or service address,
// or a service by name.
type GatewayAddress struct {
	// Address is the waypoint's IP (a workload or a service VIP).
	Address netip.Addr `json:"address,omitzero"`
	// Hostname names the waypoint's service when Address is not set.
	Hostname NamespacedHostname `json:"hostname,omitzero"`
	// HBONEPort is the waypoint's HBONE port (15008 when zero).
	HBONEPort uint16 `json:"hbonePort,omitempty"`
}

// Port returns the HBONE port, defaulting to 15008.
func (g *GatewayAddress) Port() uint16 {
	if g.HBONEPort == 0 {
		return inpod.InboundHBONEPort
	}
	return g.HBONEPort
}

func (g *GatewayAddress) validate() error {
	switch {
	case g.Address.IsValid() && g.Hostname != (NamespacedHostname{}):
		return fmt.Errorf("waypoint has both an address and a hostname")
	case !g.Address.IsValid() && (g.Hostname.Namespace == "" || g.Hostname.Hostname == ""):
		return fmt.Errorf("waypoint needs an address or a namespace and hostname")
	}
	return nil
}

// Port maps a service port to the port the workload listens on.
type Port struct {
	ServicePort uint16 `json:"servicePort,omitempty"`
	// TargetPort 0 means "look it up in the workload's Services".
	TargetPort uint16 `json:"targetPort,omitempty"`
}

// Workload is one endpoint: for Kubernetes, a pod.
type Workload struct {
	UID       string       `json:"uid,omitempty"`
	Name      string       `json:"name,omitempty"`
	Namespace string       `json:"namespace,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
	// Node is the node the workload runs on; ztunnel serves the workloads
	// of its own node.
	Node string `json:"node,omitempty"`
	// HostNetwork: the workload shares its node's network namespace, so
	// its addresses are the node's. It is never looked up by address (the
	// node's other host-network pods share it, and traffic from the node is
	// not the workload's); it is still a service endpoint.
	HostNetwork    bool           `json:"hostNetwork,omitempty"`
	TrustDomain    string         `json:"trustDomain,omitempty"`
	ServiceAccount string         `json:"serviceAccount,omitempty"`
	Protocol       TunnelProtocol `json:"protocol"`
	// Waypoint receives traffic addressed to the workload, when set.
	Waypoint *GatewayAddress `json:"waypoint,omitempty"`
	// Services maps service keys to this workload's ports for them.
	Services map[string][]Port `json:"services,omitempty"`
	// AuthorizationPolicies are keys of selector policies for the workload.
	AuthorizationPolicies []string `json:"authorizationPolicies,omitempty"`
	Healthy               bool     `json:"healthy"`
	CanonicalName         string   `json:"canonicalName,omitempty"`
	CanonicalRevision     string   `json:"canonicalRevision,omitempty"`
	WorkloadName          string   `json:"workloadName,omitempty"`
	ClusterID             string   `json:"clusterId,omitempty"`

	id spiffeid.ID
	// interned holds the handles of w's interned strings (intern): the
	// runtime keeps a canonical copy only while a handle to it is left.
	interned []unique.Handle[string]
}

// Identity is the workload's SPIFFE ID.
func (w *Workload) Identity() spiffeid.ID { return w.id }

// HasAddress reports whether ip is one of the workload's addresses.
func (w *Workload) HasAddress(ip netip.Addr) bool {
	return slices.Contains(w.Addresses, ip.Unmap())
}

// normalize fills defaults and checks w on its own.
func (w *Workload) normalize(defaultTD string) error {
	switch {
	case w.UID == "":
		return fmt.Errorf("workload %s/%s: uid is empty", w.Namespace, w.Name)
	case w.Name == "":
		return fmt.Errorf("workload %s: name is empty", w.UID)
	case w.Namespace == "":
		return fmt.Errorf("workload %s: namespace is empty", w.UID)
	case w.Protocol != TunnelNone && w.Protocol != TunnelHBONE:
		return fmt.Errorf("workload %s: unknown tunnel protocol %d", w.UID, w.Protocol)
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = "default"
	}
	if w.TrustDomain == "" {
		w.TrustDomain = defaultTD
	}
	td, err := spiffeid.TrustDomainFromString(w.TrustDomain)
	if err != nil {
		return fmt.Errorf("workload %s: trust domain %q: %w", w.UID, w.TrustDomain, err)
	}
	if w.id, err = identity.WorkloadID(td, w.Namespace, w.ServiceAccount); err != nil {
		return fmt.Errorf("workload %s: identity: %w", w.UID, err)
	}
	for i, a := range w.Addresses {
		if !a.IsValid() || a.IsUnspecified() {
			return fmt.Errorf("workload %s: invalid address %v", w.UID, a)
		}
		w.Addresses[i] = a.Unmap()
	}
	if w.Waypoint != nil {
		if err := w.Waypoint.validate(); err != nil {
			return fmt.Errorf("workload %s: %w", w.UID, err)
		}
	}
	for svc, ports := range w.Services {
		for _, p := range ports {
			if p.ServicePort == 0 {
				return fmt.Errorf("workload %s: service %s: service port 0", w.UID, svc)
			}
		}
	}
	return nil
}

// intern makes w's strings that repeat across workloads (namespace, node,
// service account, app names, service keys, policy names) share one copy
// each, and gives w a services map and a policy slice of its own. A
// ztunnel holds every workload of the cluster, replaced one by one as pods
// change: each decoded workload brought its own copy of every string (14
// heap objects a workload, 9 now), left scattered through the heap between
// the garbage of the traffic around each update.
func (w *Workload) intern() {
	fields := []*string{&w.Namespace, &w.Node, &w.TrustDomain, &w.ServiceAccount,
		&w.CanonicalName, &w.CanonicalRevision, &w.WorkloadName, &w.ClusterID}
	w.interned = make([]unique.Handle[string], 0, len(fields)+len(w.AuthorizationPolicies)+len(w.Services))
	intern := func(s string) string {
		if s == "" {
			return s
		}
		h := unique.Make(s)
		if !slices.Contains(w.interned, h) {
			w.interned = append(w.interned, h)
		}
		return h.Value()
	}
	for _, s := range fields {
		*s = intern(*s)
	}
	if len(w.AuthorizationPolicies) > 0 {
		ps := make([]string, len(w.AuthorizationPolicies))
		for i, p := range w.AuthorizationPolicies {
			ps[i] = intern(p)
		}
		w.AuthorizationPolicies = ps
	}
	if len(w.Services) > 0 {
		svcs := make(map[string][]Port, len(w.Services))
		for k, ports := range w.Services {
			svcs[intern(k)] = ports
		}
		w.Services = svcs
	}
}

// Service is a set of workloads behind virtual IPs.
type Service struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Hostname  string `json:"hostname,omitzero"`
	// Addresses are the VIPs; none for a headless service.
	Addresses       []netip.Addr `json:"addresses,omitempty"`
	Ports           []Port       `json:"ports,omitempty"`
	SubjectAltNames []string     `json:"subjectAltNames,omitempty"`
	// Waypoint receives all traffic addressed to the service, when set.
	Waypoint *GatewayAddress `json:"waypoint,omitempty"`
}

// Key is "<namespace>/<hostname>", how workloads refer to the service.
func (s *Service) Key() string { return s.Namespace + "/" + s.Hostname }

// TargetPort maps a service port; ok is false when the service does not
// expose it. A zero target means the port is named: see Workload.Services.
func (s *Service) TargetPort(servicePort uint16) (target uint16, ok bool) {
	for _, p := range s.Ports {
		if p.ServicePort == servicePort {
			return p.TargetPort, true
		}
	}
	return 0, false
}

// normalize checks s on its own.
func (s *Service) normalize() error {
	switch {
	case s.Namespace == "":
		return fmt.Errorf("service %s: namespace is empty", s.Hostname)
	case s.Hostname == "":
		return fmt.Errorf("service %s/%s: hostname is empty", s.Namespace, s.Name)
	}
	seen := map[uint16]bool{}
	for _, p := range s.Ports {
		if p.ServicePort == 0 {
			return fmt.Errorf("service %s: service port 0", s.Key())
		}
		if seen[p.ServicePort] {
			return fmt.Errorf("service %s: port %d listed twice", s.Key(), p.ServicePort)
		}
		seen[p.ServicePort] = true
	}
	for i, a := range s.Addresses {
		if !a.IsValid() || a.IsUnspecified() {
			return fmt.Errorf("service %s: invalid address %v", s.Key(), a)
		}
		s.Addresses[i] = a.Unmap()
	}
	if s.Waypoint != nil {
		if err := s.Waypoint.validate(); err != nil {
			return fmt.Errorf("service %s: %w", s.Key(), err)
		}
	}
	return nil
}

// EndpointPort maps servicePort for endpoint w of s: the workload's own
// mapping wins (named ports), then the service's, then the port itself. 0
// stays 0 ("any port").
func (s *Service) EndpointPort(w *Workload, servicePort uint16) uint16 {
	if servicePort == 0 {
		return 0
	}
	for _, p := range w.Services[s.Key()] {
		if p.ServicePort == servicePort && p.TargetPort != 0 {
			return p.TargetPort
		}
	}
	if t, ok := s.TargetPort(servicePort); ok && t != 0 {
		return t
	}
	return servicePort
}

// Address returns w's first address of the wanted family, or else its
// first of any; ok is false when it has none.
func (w *Workload) Address(want4 bool) (addr netip.Addr, ok bool) {
	for _, a := range w.Addresses {
		if a.Is4() == want4 {
			return a, true
		}
	}
	if len(w.Addresses) > 0 {
		return w.Addresses[0], true
	}
	return netip.Addr{}, false
}
