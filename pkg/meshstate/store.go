package meshstate

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/skiffmesh/skiff/pkg/policy"
)

// Store holds the current Snapshot. Readers call Snapshot; configuration
// sources call Replace or Update. A Store is safe for concurrent use.
type Store struct {
	rootNamespace string
	trustDomain   string

	cur atomic.Pointer[Snapshot]

	mu      sync.Mutex // serialises writers
	changed chan struct{}
	loaded  chan struct{}
	version uint64
}

// NewStore returns a Store holding an empty state. rootNamespace is where
// mesh-wide policies live (istio-system); trustDomain is given to workloads
// that name none.
func NewStore(rootNamespace, trustDomain string) *Store {
	s := &Store{
		rootNamespace: rootNamespace,
		trustDomain:   trustDomain,
		changed:       make(chan struct{}),
		loaded:        make(chan struct{}),
	}
	empty, _ := build(rootNamespace, map[string]*Workload{}, map[string]*Service{}, map[string]*policy.Policy{}, true)
	s.cur.Store(empty)
	return s
}

// Snapshot returns the current state.
func (s *Store) Snapshot() *Snapshot { return s.cur.Load() }

// Changed returns a channel closed at the next change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Loaded is closed once the source has delivered a complete first state
// (SetLoaded). Until then the proxy refuses traffic: with partial state it
// could pass through what should be tunnelled or allow what a policy not
// yet received denies.
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

// SetLoaded marks the state complete; later calls do nothing.
func (s *Store) SetLoaded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.loaded:
	default:
		close(s.loaded)
	}
}

// IsLoaded reports whether SetLoaded was called.
func (s *Store) IsLoaded() bool {
	select {
	case <-s.loaded:
		return true
	default:
		return false
	}
}

// Version counts accepted updates.
func (s *Store) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Config is a whole state, as a source delivers it.
type Config struct {
	Workloads []*Workload
	Services  []*Service
	Policies  []*policy.Policy
}

// Replace swaps in a whole new state. If it is invalid (duplicate keys or
// addresses, a bad policy, ...) the error says why and the old state stays.
// A whole state is written by hand (the local configuration file), so an
// address claimed twice is a mistake to report, unlike in Update.
func (s *Store) Replace(c Config) error {
	return s.update(true, func(tx *Tx) error {
		tx.workloads = map[string]*Workload{}
		tx.services = map[string]*Service{}
		tx.policies = map[string]*policy.Policy{}
		for _, w := range c.Workloads {
			if w != nil && tx.workloads[w.UID] != nil {
				return fmt.Errorf("workload %s listed twice", w.UID)
			}
			if err := tx.AddWorkload(w); err != nil {
				return err
			}
		}
		for _, svc := range c.Services {
			if svc != nil && tx.services[svc.Key()] != nil {
				return fmt.Errorf("service %s listed twice", svc.Key())
			}
			if err := tx.AddService(svc); err != nil {
				return err
			}
		}
		for _, p := range c.Policies {
			if p != nil && tx.policies[p.Key()] != nil {
				return fmt.Errorf("policy %s listed twice", p.Key())
			}
			if err := tx.AddPolicy(p); err != nil {
				return err
			}
		}
		return nil
	})
}

// Update applies fn's changes to a copy of the current state and swaps it
// in if fn succeeds and the result is valid; otherwise nothing changes.
// fn must not keep tx. Invalid resources are errors; addresses claimed by
// two workloads or two services are not (an incremental source is
// eventually consistent): they are resolved deterministically and listed by
// the new Snapshot's Conflicts.
func (s *Store) Update(fn func(tx *Tx) error) error { return s.update(false, fn) }

func (s *Store) update(strict bool, fn func(tx *Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	tx := &Tx{
		trustDomain: s.trustDomain,
		workloads:   maps.Clone(cur.workloads),
		services:    maps.Clone(cur.services),
		policies:    maps.Clone(cur.policies),
	}
	if err := fn(tx); err != nil {
		return err
	}
	next, err := build(s.rootNamespace, tx.workloads, tx.services, tx.policies, strict)
	if err != nil {
		return err
	}
	s.cur.Store(next)
	s.version++
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// Tx is a pending update. Values added become owned by the store: do not
// modify them afterwards.
type Tx struct {
	trustDomain string
	workloads   map[string]*Workload
	services    map[string]*Service
	policies    map[string]*policy.Policy
}

// AddWorkload validates w and adds or replaces the workload with w.UID.
// The store keeps a copy.
func (tx *Tx) AddWorkload(w *Workload) error {
	if w == nil {
		return errNil("workload")
	}
	cp := *w
	cp.Addresses = slices.Clone(w.Addresses)
	if err := cp.normalize(tx.trustDomain); err != nil {
		return err
	}
	cp.intern()
	tx.workloads[w.UID] = &cp
	return nil
}

// RemoveWorkload removes a workload; unknown uids are ignored.
func (tx *Tx) RemoveWorkload(uid string) { delete(tx.workloads, uid) }

// AddService adds or replaces the service with svc.Key().
func (tx *Tx) AddService(svc *Service) error {
	if svc == nil {
		return errNil("service")
	}
	cp := *svc
	cp.Addresses = slices.Clone(svc.Addresses)
	if err := cp.normalize(); err != nil {
		return err
	}
	tx.services[svc.Key()] = &cp
	return nil
}

// RemoveService removes a service by key; unknown keys are ignored.
func (tx *Tx) RemoveService(key string) { delete(tx.services, key) }

// AddPolicy adds or replaces the policy with p.Key().
func (tx *Tx) AddPolicy(p *policy.Policy) error {
	if p == nil {
		return errNil("policy")
	}
	if err := p.Validate(); err != nil {
		return err
	}
	tx.policies[p.Key()] = p
	return nil
}

// RemovePolicy removes a policy by key; unknown keys are ignored.
func (tx *Tx) RemovePolicy(key string) { delete(tx.policies, key) }

type nilError string

func (e nilError) Error() string { return "nil " + string(e) }

func errNil(what string) error { return nilError(what) }
