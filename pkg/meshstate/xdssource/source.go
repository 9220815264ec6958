// Package xdssource is the xDS source of mesh state, for ztunnel and the
// waypoint: workloads,
// services (type istio.workload.Address) and authorization policies (type
// istio.security.Authorization) received from the control plane over
// delta ADS (pkg/xds), applied to the state store as all-or-nothing
// updates. A delta that does not convert or validate is NACKed and the
// store keeps its state (addresses claimed twice are not invalid: the store
// resolves them, and the Source logs each conflict once); while the control
// plane is unreachable the last accepted state stays in force, and pkg/xds
// reconnects with backoff, resuming from the versions it holds.
package xdssource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/pkg/xds/securityapi"
	"github.com/skiffmesh/skiff/pkg/xds/workloadapi"
)

// Source applies xDS deltas to a Store. Its methods are called by the xds
// client, one at a time.
type Source struct {
	store *meshstate.Store
	log   *slog.Logger

	mu sync.Mutex
	// kinds records whether an Address resource name is a workload or a
	// service, since a removal carries only the name.
	kinds map[string]addressKind
	// conflicts are the address conflicts last logged.
	conflicts []string
}

// Option configures New.
type Option func(*Source)

// WithLogger sets where address conflicts in the received state are
// reported (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

type addressKind int

const (
	kindWorkload addressKind = iota + 1
	kindService
)

// New returns a Source feeding store.
func New(store *meshstate.Store, opts ...Option) *Source {
	s := &Source{store: store, log: slog.New(slog.DiscardHandler), kinds: map[string]addressKind{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Subscriptions are what ztunnel asks the control plane for: every
// address and every policy.
func (s *Source) Subscriptions() []xds.Subscription {
	return []xds.Subscription{
		{TypeURL: xds.AddressType, Apply: s.applyAddresses},
		{TypeURL: xds.AuthorizationType, Apply: s.applyAuthorizations},
	}
}

// Run marks the store loaded once every subscription holds a complete
// state (ready closes then: see xds.Client.Ready), so that no traffic flows
// on a state that has addresses but not yet the policies, or only part of
// the addresses.
func (s *Source) Run(ctx context.Context, ready <-chan struct{}) error {
	select {
	case <-ready:
		s.store.SetLoaded()
	case <-ctx.Done():
	}
	return nil
}

func (s *Source) applyAddresses(d xds.Delta) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kinds := maps.Clone(s.kinds)
	err := s.store.Update(func(tx *meshstate.Tx) error {
		for _, name := range d.Removed {
			switch kinds[name] {
			case kindWorkload:
				tx.RemoveWorkload(name)
			case kindService:
				tx.RemoveService(name)
			}
			delete(kinds, name)
		}
		for _, r := range d.Updated {
			var a workloadapi.Address
			if err := r.Body.UnmarshalTo(&a); err != nil {
				return fmt.Errorf("address %s: %w", r.Name, err)
			}
			// A name may change kind: drop what it was.
			switch kinds[r.Name] {
			case kindWorkload:
				tx.RemoveWorkload(r.Name)
			case kindService:
				tx.RemoveService(r.Name)
			}
			switch t := a.GetType().(type) {
			case *workloadapi.Address_Workload:
				w, err := workload(r.Name, t.Workload)
				if err != nil {
					return err
				}
				if err := tx.AddWorkload(w); err != nil {
					return err
				}
				kinds[r.Name] = kindWorkload
			case *workloadapi.Address_Service:
				svc, err := service(r.Name, t.Service)
				if err != nil {
					return err
				}
				if err := tx.AddService(svc); err != nil {
					return err
				}
				kinds[r.Name] = kindService
			default:
				return fmt.Errorf("address %s: neither a workload nor a service", r.Name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.kinds = kinds
	// Conflicts do not reject the update (the control plane's view is
	// eventually consistent); say which way each was resolved, once.
	now := s.store.Snapshot().Conflicts()
	for _, c := range now {
		if !slices.Contains(s.conflicts, c) {
			s.log.Warn("address conflict in the control plane's state", "conflict", c)
		}
	}
	s.conflicts = now
	return nil
}

func (s *Source) applyAuthorizations(d xds.Delta) error {
	return s.store.Update(func(tx *meshstate.Tx) error {
		for _, name := range d.Removed {
			tx.RemovePolicy(name)
		}
		var errs []error
		for _, r := range d.Updated {
			var a securityapi.Authorization
			if err := r.Body.UnmarshalTo(&a); err != nil {
				errs = append(errs, fmt.Errorf("authorization %s: %w", r.Name, err))
				continue
			}
			p, err := authorization(r.Name, &a)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := tx.AddPolicy(p); err != nil {
				errs = append(errs, err)
			}
		}
		// One bad policy rejects the whole delta: dropping it could widen
		// access.
		return errors.Join(errs...)
	})
}
