package state

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
}

// Workload returns the workload with uid, or nil.
func (s *Snapshot) Workload(uid string) *Workload { return s.workloads[uid] }

// WorkloadByIP returns the workload with address ip, or nil.
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
func build(rootNS string, workloads map[string]*Workload, services map[string]*Service, policies map[string]*policy.Policy) (*Snapshot, error) {
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
		for _, a := range w.Addresses {
			if other := s.byIP[a]; other != nil {
				return nil, fmt.Errorf("workloads %s and %s share address %v", other.UID, w.UID, a)
			}
			s.byIP[a] = w
		}
		s.byName[w.Namespace+"/"+w.Name] = w
		for key := range w.Services {
			s.endpoints[key] = append(s.endpoints[key], w)
		}
	}
	for _, svc := range s.Services() {
		for _, a := range svc.Addresses {
			if other := s.byVIP[a]; other != nil {
				return nil, fmt.Errorf("services %s and %s share address %v", other.Key(), svc.Key(), a)
			}
			if w := s.byIP[a]; w != nil {
				return nil, fmt.Errorf("service %s address %v is also workload %s's", svc.Key(), a, w.UID)
			}
			s.byVIP[a] = svc
		}
	}
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
