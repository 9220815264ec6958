// Package certs holds the certificates of the workloads ztunnel serves. It
// wraps an identity.Manager (which fetches from a CA and renews at
// half-life) with reference counts per identity, so a certificate is
// prefetched when the first local workload with that identity appears and
// forgotten when the last one goes, and with a listing for /config_dump.
package certs

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/identity"
)

// Store is safe for concurrent use.
type Store struct {
	mgr *identity.Manager
	log *slog.Logger

	mu    sync.Mutex
	refs  map[spiffeid.ID]int
	ready map[spiffeid.ID]bool // a certificate was obtained at least once
}

// New returns a Store over mgr. mgr.Run must be running for renewals.
func New(mgr *identity.Manager, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{mgr: mgr, log: logger, refs: map[spiffeid.ID]int{}, ready: map[spiffeid.ID]bool{}}
}

// Get returns a valid certificate for id, from cache when possible.
func (s *Store) Get(ctx context.Context, id spiffeid.ID) (*identity.Certificate, error) {
	c, err := s.mgr.Get(ctx, id)
	if err == nil {
		s.mu.Lock()
		if _, ok := s.refs[id]; ok {
			s.ready[id] = true
		}
		s.mu.Unlock()
	}
	return c, err
}

// Acquire registers a local workload with identity id and starts fetching
// its certificate in the background (ctx bounds the prefetch).
func (s *Store) Acquire(ctx context.Context, id spiffeid.ID) {
	s.mu.Lock()
	s.refs[id]++
	first := s.refs[id] == 1
	s.mu.Unlock()
	if !first {
		return
	}
	go func() {
		if _, err := s.Get(ctx, id); err != nil && ctx.Err() == nil {
			s.log.Warn("prefetching workload certificate failed; will retry on first use", "identity", id, "err", err)
		}
	}()
}

// Release undoes Acquire; the certificate is forgotten with the last user.
func (s *Store) Release(id spiffeid.ID) {
	s.mu.Lock()
	s.refs[id]--
	last := s.refs[id] <= 0
	if last {
		delete(s.refs, id)
		delete(s.ready, id)
	}
	s.mu.Unlock()
	if last {
		s.mgr.Forget(id)
	}
}

// Ready reports whether every acquired identity has had a certificate.
func (s *Store) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.refs {
		if !s.ready[id] {
			return false
		}
	}
	return true
}

// Info describes one certificate for /config_dump.
type Info struct {
	Identity  string    `json:"identity"`
	State     string    `json:"state"` // "available", "pending" or the error
	Serial    string    `json:"serialNumber,omitempty"`
	NotBefore time.Time `json:"validFrom,omitzero"`
	NotAfter  time.Time `json:"expirationTime,omitzero"`
	RenewAt   time.Time `json:"renewAt,omitzero"`
	Chain     int       `json:"chainLength,omitempty"`
}

// Dump lists the acquired identities' current certificates, ordered by
// identity. It does not wait for pending fetches.
func (s *Store) Dump(ctx context.Context) []Info {
	s.mu.Lock()
	ids := make([]spiffeid.ID, 0, len(s.refs))
	for id := range s.refs {
		ids = append(ids, id)
	}
	ready := make(map[spiffeid.ID]bool, len(s.ready))
	for id, ok := range s.ready {
		ready[id] = ok
	}
	s.mu.Unlock()
	slices.SortFunc(ids, func(a, b spiffeid.ID) int { return strings.Compare(a.String(), b.String()) })
	out := make([]Info, 0, len(ids))
	for _, id := range ids {
		info := Info{Identity: id.String(), State: "pending"}
		if ready[id] {
			// Cached: returns at once unless it expired.
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := s.mgr.Get(cctx, id)
			cancel()
			if err != nil {
				info.State = err.Error()
			} else {
				info.State = "available"
				info.Serial = c.Leaf.SerialNumber.Text(16)
				info.NotBefore, info.NotAfter, info.RenewAt = c.NotBefore, c.NotAfter, c.RenewAt()
				info.Chain = len(c.Chain)
			}
		}
		out = append(out, info)
	}
	return out
}
