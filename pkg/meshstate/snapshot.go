package meshstate

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/skiffmesh/skiff/pkg/policy"
)

// Snapshot is one consistent, validated state. It is immutable: never
// modify what its methods return.
type Snapshot struct {
	rootNamespace string
	workloads     map[string]*Workload // by uid
	services      map[string]*Service  // by key
	policies      map[string]*policy.Policy
	policyList    []*policy.Policy // sorted by key

	byIP      map[netip.Addr]*Workload
	byName    map[string]*Workload // "<namespace>/<name>"
	byVIP     map[netip.Addr]*Service
	endpoints map[string][]*Workload // service key → workloads, by uid
	conflicts []string
}

// Workload returns the workload with uid, or nil.
func (s *Snapshot) Workload(uid string) *Workload { return s.workloads[uid] }

// WorkloadByIP returns the workload with address ip, or nil. Host-network
// workloads are not found by address: theirs is their node's.
func (s *Snapshot) WorkloadByIP(ip netip.Addr) *Workload { return s.byIP[ip.Unmap()] }

// WorkloadByName returns the workload named name in namespace, or nil.
func (s *Snapshot) WorkloadByName(namespace, name string) *Workload {
	return s.byName[namespace+"/"+name]
}

// Service returns the service with key "<namespace>/<hostname>", or nil.
func (s *Snapshot) Service(key string) *Service { return s.services[key] }

// ServiceByVIP returns the service with virtual IP ip, or nil.
func (s *Snapshot) ServiceByVIP(ip netip.Addr) *Service { return s.byVIP[ip.Unmap()] }

// Endpoints returns the workloads backing the service with key, healthy or
// not, ordered by uid.
func (s *Snapshot) Endpoints(key string) []*Workload { return s.endpoints[key] }

// Workloads returns every workload, ordered by uid.
func (s *Snapshot) Workloads() []*Workload {
	return sortedValues(s.workloads, func(w *Workload) string { return w.UID })
}

// Services returns every service, ordered by key.
func (s *Snapshot) Services() []*Service {
	return sortedValues(s.services, (*Service).Key)
}

// Conflicts describes the address conflicts build resolved (workloads or
// services claiming one address), sorted; none in a consistent state.
func (s *Snapshot) Conflicts() []string { return s.conflicts }

// Policies returns every policy, ordered by key.
func (s *Snapshot) Policies() []*policy.Policy { return s.policyList }

// PoliciesFor returns the policies that apply to w (see policy.Applicable).
func (s *Snapshot) PoliciesFor(w *Workload) []*policy.Policy {
	return policy.Applicable(s.policyList, w.Namespace, w.AuthorizationPolicies, s.rootNamespace)
}

func sortedValues[T any](m map[string]T, key func(T) string) []T {
	out := slices.Collect(maps.Values(m))
	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return out
}

// build validates the raw maps and indexes them into a Snapshot. It takes
// ownership of the maps and their values.
//
// Two workloads, or two services, claiming one address are a conflict. With
// strict set (a whole configuration written by hand) a conflict is an error;
// otherwise (xDS, which is eventually consistent: a pod's address is reused
// while its predecessor is still listed) each conflict is resolved the same
// way whatever the order of updates (see preferred), and reported by
// Conflicts. Host-network workloads share their node's address and are never
// indexed by it, as in Istio's ztunnel.
func build(rootNS string, workloads map[string]*Workload, services map[string]*Service, policies map[string]*policy.Policy, strict bool) (*Snapshot, error) {
	s := &Snapshot{
		rootNamespace: rootNS,
		workloads:     workloads,
		services:      services,
		policies:      policies,
		byIP:          make(map[netip.Addr]*Workload, len(workloads)),
		byName:        make(map[string]*Workload, len(workloads)),
		byVIP:         map[netip.Addr]*Service{},
		endpoints:     map[string][]*Workload{},
	}
	for _, w := range s.Workloads() {
		s.byName[w.Namespace+"/"+w.Name] = w
		for key := range w.Services {
			s.endpoints[key] = append(s.endpoints[key], w)
		}
		if w.HostNetwork {
			continue
		}
		for _, a := range w.Addresses {
			other := s.byIP[a]
			if other == nil {
				s.byIP[a] = w
				continue
			}
			if other == w {
				continue // listed twice by the workload itself
			}
			if strict {
				return nil, fmt.Errorf("workloads %s and %s share address %v", other.UID, w.UID, a)
			}
			win, lose := other, w
			if preferred(w, other) {
				win, lose = w, other
			}
			s.byIP[a] = win
			s.conflicts = append(s.conflicts, fmt.Sprintf("workloads %s and %s share address %v; using %s", win.UID, lose.UID, a, win.UID))
		}
	}
	for _, svc := range s.Services() {
		for _, a := range svc.Addresses {
			if other := s.byVIP[a]; other != nil {
				if other == svc {
					continue
				}
				if strict {
					return nil, fmt.Errorf("services %s and %s share address %v", other.Key(), svc.Key(), a)
				}
				// Services come in key order: the first keeps it.
				s.conflicts = append(s.conflicts, fmt.Sprintf("services %s and %s share address %v; using %s", other.Key(), svc.Key(), a, other.Key()))
				continue
			}
			if w := s.byIP[a]; w != nil {
				if strict {
					return nil, fmt.Errorf("service %s address %v is also workload %s's", svc.Key(), a, w.UID)
				}
				// Both stay: traffic to the address goes to the service
				// (routing looks up services first), traffic from it is the
				// workload's.
				s.conflicts = append(s.conflicts, fmt.Sprintf("service %s address %v is also workload %s's", svc.Key(), a, w.UID))
			}
			s.byVIP[a] = svc
		}
	}
	slices.Sort(s.conflicts)
	s.policyList = sortedValues(policies, (*policy.Policy).Key)
	for key, p := range policies {
		if p == nil {
			return nil, fmt.Errorf("policy %s is empty", key)
		}
		if key != p.Key() {
			return nil, fmt.Errorf("policy %s is stored as %s", p.Key(), key)
		}
	}
	return s, nil
}

// preferred reports whether a rather than b should own an address both
// claim. The choice depends only on the two workloads, never on the order in
// which they arrived: a healthy workload first (a running pod over the
// terminating one whose address it took over), then one reached over HBONE
// (a wrong choice then fails the identity check instead of sending
// plaintext), then the smaller uid.
func preferred(a, b *Workload) bool {
	if a.Healthy != b.Healthy {
		return a.Healthy
	}
	if (a.Protocol == TunnelHBONE) != (b.Protocol == TunnelHBONE) {
		return a.Protocol == TunnelHBONE
	}
	return a.UID < b.UID
}
