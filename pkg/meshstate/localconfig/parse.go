// Package localconfig is the local configuration source of mesh state
// (ztunnel's, and the waypoint's with its own section added): workloads,
// services and authorization policies read from a YAML file, re-read when
// the file changes. A file that does not parse or validate is rejected with
// an error naming the offending field, and the previous state stays.
//
// The format mirrors Istio's workload and authorization APIs:
//
//	workloads:
//	- name: echo
//	  namespace: default
//	  serviceAccount: echo
//	  addresses: [10.0.1.2]
//	  node: node-a
//	  protocol: HBONE            # or NONE (default HBONE)
//	  services:                  # services this workload backs
//	    default/echo.default.svc.cluster.local:
//	    - {servicePort: 80, targetPort: 8080}
//	  waypoint: {address: 10.0.1.9}   # or {hostname: {namespace: ns, hostname: h}}
//	  authorizationPolicies: [default/allow-sleep]
//	services:
//	- name: echo
//	  namespace: default         # hostname defaults to echo.default.svc.cluster.local
//	  addresses: [10.96.0.10]
//	  ports: [{servicePort: 80, targetPort: 8080}]
//	policies:
//	- name: allow-sleep
//	  namespace: default
//	  scope: WorkloadSelector    # Global, Namespace (default) or WorkloadSelector
//	  action: Allow              # or Deny (default Allow)
//	  groups:
//	  - rules:
//	    - matches:
//	      - principals: [cluster.local/ns/default/sa/sleep]
//	        destinationPorts: [8080]
//
// Principals and namespaces take Istio's forms: "x" exact, "x*" prefix, "*x"
// suffix, "*" any. IP lists take addresses or CIDR prefixes.
package localconfig

import (
	"fmt"
	"net/netip"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
)

// MaxFileSize bounds the configuration file.
const MaxFileSize = 32 << 20

// File is the YAML document.
type File struct {
	Workloads []Workload `json:"workloads"`
	Services  []Service  `json:"services"`
	Policies  []Policy   `json:"policies"`
}

type Workload struct {
	UID                   string            `json:"uid"`
	Name                  string            `json:"name"`
	Namespace             string            `json:"namespace"`
	Addresses             []string          `json:"addresses"`
	Node                  string            `json:"node"`
	TrustDomain           string            `json:"trustDomain"`
	ServiceAccount        string            `json:"serviceAccount"`
	Protocol              string            `json:"protocol"`
	Waypoint              *Gateway          `json:"waypoint"`
	Services              map[string][]Port `json:"services"`
	AuthorizationPolicies []string          `json:"authorizationPolicies"`
	Healthy               *bool             `json:"healthy"`
	CanonicalName         string            `json:"canonicalName"`
	CanonicalRevision     string            `json:"canonicalRevision"`
	WorkloadName          string            `json:"workloadName"`
	ClusterID             string            `json:"clusterId"`
}

type Gateway struct {
	Address   string                        `json:"address"`
	Hostname  *meshstate.NamespacedHostname `json:"hostname"`
	HBONEPort uint16                        `json:"hbonePort"`
}

type Port struct {
	ServicePort uint16 `json:"servicePort"`
	TargetPort  uint16 `json:"targetPort"`
}

type Service struct {
	Name            string   `json:"name"`
	Namespace       string   `json:"namespace"`
	Hostname        string   `json:"hostname"`
	Addresses       []string `json:"addresses"`
	Ports           []Port   `json:"ports"`
	SubjectAltNames []string `json:"subjectAltNames"`
	Waypoint        *Gateway `json:"waypoint"`
}

type Policy struct {
	Name      string  `json:"name"`
	Namespace string  `json:"namespace"`
	Scope     string  `json:"scope"`
	Action    string  `json:"action"`
	Groups    []Group `json:"groups"`
}

type Group struct {
	Rules []Rules `json:"rules"`
}

type Rules struct {
	Matches []Match `json:"matches"`
}

type Match struct {
	Namespaces          []string `json:"namespaces"`
	NotNamespaces       []string `json:"notNamespaces"`
	Principals          []string `json:"principals"`
	NotPrincipals       []string `json:"notPrincipals"`
	SourceIPs           []string `json:"sourceIps"`
	NotSourceIPs        []string `json:"notSourceIps"`
	DestinationIPs      []string `json:"destinationIps"`
	NotDestinationIPs   []string `json:"notDestinationIps"`
	DestinationPorts    []uint32 `json:"destinationPorts"`
	NotDestinationPorts []uint32 `json:"notDestinationPorts"`
	// Unsupported marks conditions ztunnel cannot check (L7); see
	// pkg/policy: they fail closed.
	Unsupported bool `json:"unsupported"`
}

// Parse decodes and converts a configuration file. Unknown fields are
// errors, so a typo cannot silently drop a policy. It validates each entry
// on its own; cross-entry checks (duplicate addresses...) happen when the
// result is given to meshstate.Store.Replace.
func Parse(data []byte) (meshstate.Config, error) {
	if len(data) > MaxFileSize {
		return meshstate.Config{}, fmt.Errorf("config is %d bytes, more than the limit of %d", len(data), MaxFileSize)
	}
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return meshstate.Config{}, fmt.Errorf("parsing config: %w", err)
	}
	return f.Convert()
}

// Convert turns the document into the store's types.
func (f *File) Convert() (meshstate.Config, error) {
	var c meshstate.Config
	for i, w := range f.Workloads {
		sw, err := w.convert()
		if err != nil {
			return meshstate.Config{}, fmt.Errorf("workloads[%d] (%s/%s): %w", i, w.Namespace, w.Name, err)
		}
		c.Workloads = append(c.Workloads, sw)
	}
	for i, s := range f.Services {
		ss, err := s.convert()
		if err != nil {
			return meshstate.Config{}, fmt.Errorf("services[%d] (%s/%s): %w", i, s.Namespace, s.Name, err)
		}
		c.Services = append(c.Services, ss)
	}
	for i, p := range f.Policies {
		sp, err := p.convert()
		if err != nil {
			return meshstate.Config{}, fmt.Errorf("policies[%d] (%s/%s): %w", i, p.Namespace, p.Name, err)
		}
		c.Policies = append(c.Policies, sp)
	}
	return c, nil
}

func (w Workload) convert() (*meshstate.Workload, error) {
	if w.Name == "" || w.Namespace == "" {
		return nil, fmt.Errorf("name and namespace are required")
	}
	out := &meshstate.Workload{
		UID:                   w.UID,
		Name:                  w.Name,
		Namespace:             w.Namespace,
		Node:                  w.Node,
		TrustDomain:           w.TrustDomain,
		ServiceAccount:        w.ServiceAccount,
		AuthorizationPolicies: w.AuthorizationPolicies,
		Healthy:               w.Healthy == nil || *w.Healthy,
		CanonicalName:         w.CanonicalName,
		CanonicalRevision:     w.CanonicalRevision,
		WorkloadName:          w.WorkloadName,
		ClusterID:             w.ClusterID,
	}
	if out.UID == "" {
		out.UID = w.Namespace + "/" + w.Name
	}
	var err error
	if out.Addresses, err = parseAddrs("addresses", w.Addresses); err != nil {
		return nil, err
	}
	switch strings.ToUpper(w.Protocol) {
	case "", "HBONE":
		out.Protocol = meshstate.TunnelHBONE
	case "NONE":
		out.Protocol = meshstate.TunnelNone
	default:
		return nil, fmt.Errorf("protocol %q: want HBONE or NONE", w.Protocol)
	}
	if out.Waypoint, err = w.Waypoint.convert(); err != nil {
		return nil, err
	}
	if len(w.Services) > 0 {
		out.Services = make(map[string][]meshstate.Port, len(w.Services))
		for key, ports := range w.Services {
			if ns, host, ok := strings.Cut(key, "/"); !ok || ns == "" || host == "" {
				return nil, fmt.Errorf("services: key %q is not <namespace>/<hostname>", key)
			}
			out.Services[key] = convertPorts(ports)
		}
	}
	for _, k := range w.AuthorizationPolicies {
		if ns, name, ok := strings.Cut(k, "/"); !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("authorizationPolicies: %q is not <namespace>/<name>", k)
		}
	}
	return out, nil
}

func (g *Gateway) convert() (*meshstate.GatewayAddress, error) {
	if g == nil {
		return nil, nil
	}
	out := &meshstate.GatewayAddress{HBONEPort: g.HBONEPort}
	if g.Address != "" {
		a, err := netip.ParseAddr(g.Address)
		if err != nil {
			return nil, fmt.Errorf("waypoint.address: %w", err)
		}
		out.Address = a
	}
	if g.Hostname != nil {
		out.Hostname = *g.Hostname
	}
	return out, nil
}

func convertPorts(ps []Port) []meshstate.Port {
	out := make([]meshstate.Port, len(ps))
	for i, p := range ps {
		out[i] = meshstate.Port{ServicePort: p.ServicePort, TargetPort: p.TargetPort}
	}
	return out
}

func (s Service) convert() (*meshstate.Service, error) {
	if s.Name == "" || s.Namespace == "" {
		return nil, fmt.Errorf("name and namespace are required")
	}
	out := &meshstate.Service{
		Name:            s.Name,
		Namespace:       s.Namespace,
		Hostname:        s.Hostname,
		Ports:           convertPorts(s.Ports),
		SubjectAltNames: s.SubjectAltNames,
	}
	if out.Hostname == "" {
		out.Hostname = s.Name + "." + s.Namespace + ".svc.cluster.local"
	}
	var err error
	if out.Addresses, err = parseAddrs("addresses", s.Addresses); err != nil {
		return nil, err
	}
	if out.Waypoint, err = s.Waypoint.convert(); err != nil {
		return nil, err
	}
	return out, nil
}

func (p Policy) convert() (*policy.Policy, error) {
	if p.Name == "" || p.Namespace == "" {
		return nil, fmt.Errorf("name and namespace are required")
	}
	out := &policy.Policy{Name: p.Name, Namespace: p.Namespace}
	switch strings.ToLower(p.Scope) {
	case "", "namespace":
		out.Scope = policy.Namespace
	case "global":
		out.Scope = policy.Global
	case "workloadselector", "workload_selector":
		out.Scope = policy.WorkloadSelector
	default:
		return nil, fmt.Errorf("scope %q: want Global, Namespace or WorkloadSelector", p.Scope)
	}
	switch strings.ToLower(p.Action) {
	case "", "allow":
		out.Action = policy.Allow
	case "deny":
		out.Action = policy.Deny
	default:
		return nil, fmt.Errorf("action %q: want Allow or Deny", p.Action)
	}
	for gi, g := range p.Groups {
		var sg policy.Group
		for ri, r := range g.Rules {
			var sr policy.Rules
			for mi, m := range r.Matches {
				sm, err := m.convert()
				if err != nil {
					return nil, fmt.Errorf("groups[%d].rules[%d].matches[%d].%w", gi, ri, mi, err)
				}
				sr.Matches = append(sr.Matches, sm)
			}
			sg.Rules = append(sg.Rules, sr)
		}
		out.Groups = append(out.Groups, sg)
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

func (m Match) convert() (policy.Match, error) {
	out := policy.Match{
		Namespaces:          stringMatches(m.Namespaces),
		NotNamespaces:       stringMatches(m.NotNamespaces),
		Principals:          stringMatches(m.Principals),
		NotPrincipals:       stringMatches(m.NotPrincipals),
		DestinationPorts:    m.DestinationPorts,
		NotDestinationPorts: m.NotDestinationPorts,
		Unsupported:         m.Unsupported,
	}
	var err error
	for _, l := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{
		{"sourceIps", m.SourceIPs, &out.SourceIPs},
		{"notSourceIps", m.NotSourceIPs, &out.NotSourceIPs},
		{"destinationIps", m.DestinationIPs, &out.DestinationIPs},
		{"notDestinationIps", m.NotDestinationIPs, &out.NotDestinationIPs},
	} {
		if *l.out, err = parsePrefixes(l.name, l.in); err != nil {
			return policy.Match{}, err
		}
	}
	return out, nil
}

func stringMatches(in []string) []policy.StringMatch {
	if len(in) == 0 {
		return nil
	}
	out := make([]policy.StringMatch, len(in))
	for i, s := range in {
		out[i] = policy.ParseStringMatch(s)
	}
	return out
}

func parseAddrs(field string, in []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for i, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// parsePrefixes accepts CIDRs and bare addresses (a host prefix).
func parsePrefixes(field string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range in {
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}
