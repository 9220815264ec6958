package identity

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for ManagerOptions.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultMinRetry       = time.Second
	DefaultMaxRetry       = time.Minute
)

// ManagerOptions configures a Manager.
type ManagerOptions struct {
	// TTL is the lifetime requested for certificates; 0 leaves it to the CA.
	TTL time.Duration
	// RequestTimeout bounds each call to the CA (default 30s).
	RequestTimeout time.Duration
	// MinRetry and MaxRetry bound the exponential backoff between failed
	// renewals (defaults 1s and 1m).
	MinRetry, MaxRetry time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives renewal events (default slog.Default()).
	Logger *slog.Logger
}

// Manager holds one certificate per workload identity. Get fetches on
// demand and caches; Run renews certificates at half-life. A Manager is safe
// for concurrent use.
type Manager struct {
	client         CAClient
	ttl            time.Duration
	requestTimeout time.Duration
	minRetry       time.Duration
	maxRetry       time.Duration
	now            func() time.Time
	log            *slog.Logger
	// newTimer makes Run's timers; tests replace it to drive Run without
	// real time passing.
	newTimer func(time.Duration) (<-chan time.Time, func() bool)

	mu      sync.Mutex
	entries map[spiffeid.ID]*entry
	flights map[spiffeid.ID]*flight
	// wake (capacity 1) tells Run that a new identity arrived, so its timer
	// may need to fire sooner.
	wake chan struct{}
}

// entry is a cached certificate and its renewal state.
type entry struct {
	cert     *Certificate
	failures int       // consecutive failed renewals
	retryAt  time.Time // zero unless the last renewal failed
}

// dueAt is when Run should next try to renew the entry.
func (e *entry) dueAt() time.Time {
	if !e.retryAt.IsZero() {
		return e.retryAt
	}
	return e.cert.RenewAt()
}

// flight is one in-progress fetch, shared by every caller asking for the
// same identity meanwhile.
type flight struct {
	done    chan struct{} // closed when cert and err are set
	cert    *Certificate
	err     error
	waiters int
	cancel  context.CancelFunc
}

// NewManager returns a Manager that obtains certificates from client.
func NewManager(client CAClient, opts ManagerOptions) *Manager {
	m := &Manager{
		client:         client,
		ttl:            opts.TTL,
		requestTimeout: cmpOr(opts.RequestTimeout, DefaultRequestTimeout),
		minRetry:       cmpOr(opts.MinRetry, DefaultMinRetry),
		maxRetry:       cmpOr(opts.MaxRetry, DefaultMaxRetry),
		now:            opts.Now,
		log:            opts.Logger,
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
		entries: make(map[spiffeid.ID]*entry),
		flights: make(map[spiffeid.ID]*flight),
		wake:    make(chan struct{}, 1),
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.maxRetry = max(m.maxRetry, m.minRetry)
	return m
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Get returns a valid certificate for id, fetching one if none is cached or
// the cached one has expired. It never returns an expired certificate.
// Concurrent calls for the same id share one request to the CA.
func (m *Manager) Get(ctx context.Context, id spiffeid.ID) (*Certificate, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("identity: %w: empty ID", ErrInvalidID)
	}
	m.mu.Lock()
	var stale *Certificate
	if e := m.entries[id]; e != nil {
		if !e.cert.Expired(m.now()) {
			m.mu.Unlock()
			return e.cert, nil
		}
		stale = e.cert
	}
	m.mu.Unlock()

	cert, err := m.fetch(ctx, id)
	switch {
	case err == nil:
		return cert, nil
	case stale != nil:
		return nil, fmt.Errorf("identity: %w: certificate for %s expired at %v and could not be renewed: %w", ErrExpired, id, stale.NotAfter, err)
	default:
		return nil, fmt.Errorf("identity: certificate for %s: %w", id, err)
	}
}

// Forget drops id's certificate and stops renewing it. A fetch in progress
// still answers its callers but is not cached.
func (m *Manager) Forget(id spiffeid.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
	delete(m.flights, id)
}

// fetch joins the flight for id, starting one if there is none, and waits
// for it or for ctx. The flight runs on its own context so that one caller
// giving up does not fail the others; it is cancelled when all have gone.
func (m *Manager) fetch(ctx context.Context, id spiffeid.ID) (*Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	f := m.flights[id]
	if f == nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.requestTimeout)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		m.flights[id] = f
		go m.fly(fctx, id, f)
	}
	f.waiters++
	m.mu.Unlock()

	select {
	case <-f.done:
		return f.cert, f.err
	case <-ctx.Done():
		m.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			// Later callers must not join a cancelled flight.
			if m.flights[id] == f {
				delete(m.flights, id)
			}
		}
		m.mu.Unlock()
		return nil, ctx.Err()
	}
}

// fly performs flight f and caches its result, unless the flight was
// abandoned or its identity forgotten meanwhile.
func (m *Manager) fly(ctx context.Context, id spiffeid.ID, f *flight) {
	defer f.cancel()
	cert, err := m.issue(ctx, id)

	m.mu.Lock()
	if m.flights[id] == f {
		delete(m.flights, id)
		if err == nil {
			m.store(id, cert)
		}
	}
	f.cert, f.err = cert, err
	m.mu.Unlock()
	close(f.done)
}

// store caches cert for id. m.mu must be held.
func (m *Manager) store(id spiffeid.ID, cert *Certificate) {
	_, existed := m.entries[id]
	m.entries[id] = &entry{cert: cert}
	if !existed {
		// Only a new entry can be due sooner than Run's current timer.
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// issue asks the CA for a certificate for id with a new key, and checks it.
func (m *Manager) issue(ctx context.Context, id spiffeid.ID) (*Certificate, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	chain, err := m.client.CreateCertificate(ctx, id, csr, m.ttl)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return newCertificate(id, key, chain, m.now())
}
