// Package balance decides where each of the waypoint's requests goes:
// first which backend service of a rule, by weight (PickBackend), then
// which endpoint of that service, by least requests (Pool.Pick).
//
// Endpoint choice is power of two choices: of two endpoints drawn at
// random, the one with fewer requests in flight. It needs no global view
// and avoids the herding of a plain least-requests scan, where every
// proxy sends to the same idle endpoint at once.
//
// The state the choice reads lives as long as the endpoint, apart from
// the per-request route decision: a Registry holds one Pool per backend
// service port (an Envoy cluster), and a Pool holds one Host per endpoint
// address, with its in-flight count and its outlier.Monitor. The Pool is
// also the set outlier detection caps its ejections against, which is
// why membership is given to the Pool once per mesh update (Update) and
// not as a candidate list with every request: the cap needs to know the
// whole set, and the hot path then builds nothing. Hosts that stay in a
// Pool across updates keep their state; hosts that leave are forgotten.
//
// An endpoint that sits in two Pools (a pod behind two services, or two
// ports of one) has a Host in each, as Envoy has a host per cluster: its
// in-flight count and health are per service port.
package balance

import (
	"iter"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
)

// PickBackend draws the backend for one request: the index of a backend
// with probability proportional to its weight, or -1 when every weight
// is 0. A backend of weight 0 is never chosen. rnd is the random source
// (math/rand/v2's Uint64 in production, a seeded one in tests).
func PickBackend(backends []config.Backend, rnd func() uint64) int {
	var total uint64 // cannot overflow: a slice has fewer than 2^32 backends
	for i := range backends {
		total += uint64(backends[i].Weight)
	}
	if total == 0 {
		return -1
	}
	n := below(rnd, total)
	for i := range backends {
		w := uint64(backends[i].Weight)
		if n < w {
			return i
		}
		n -= w
	}
	panic("unreachable: n < total")
}

// below returns a number in [0, n) from rnd: the high word of rnd × n,
// whose bias (at most n/2^64) is far below anything a balancer notices.
func below(rnd func() uint64, n uint64) uint64 {
	hi, _ := bits.Mul64(rnd(), n)
	return hi
}

// PoolKey names a Pool: one port of one backend service.
type PoolKey struct {
	// Service is the service's key in the mesh state (config.Backend.Key).
	Service string
	// Port is the service port.
	Port uint16
}

// Registry holds the waypoint's Pools. There is one Registry per
// waypoint, living as long as the process.
type Registry struct {
	cfg outlier.Config

	mu sync.Mutex // serialises writers of pools
	// pools is copied on write, so that finding a Pool on the request
	// path is a load and a map lookup.
	pools atomic.Pointer[map[PoolKey]*Pool]
}

// NewRegistry returns an empty Registry whose Pools detect outliers with
// cfg.
func NewRegistry(cfg outlier.Config) (*Registry, error) {
	if _, err := outlier.NewDetector(cfg); err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg}
	r.pools.Store(&map[PoolKey]*Pool{})
	return r, nil
}

// Pool returns the Pool for k, making an empty one if there is none.
func (r *Registry) Pool(k PoolKey) *Pool {
	if p := (*r.pools.Load())[k]; p != nil {
		return p
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.pools.Load()
	if p := old[k]; p != nil {
		return p
	}
	det, err := outlier.NewDetector(r.cfg)
	if err != nil {
		panic("balance: configuration validated by NewRegistry failed: " + err.Error())
	}
	p := &Pool{health: det}
	p.hosts.Store(&[]*Host{})
	pools := make(map[PoolKey]*Pool, len(old)+1)
	for k, v := range old {
		pools[k] = v
	}
	pools[k] = p
	r.pools.Store(&pools)
	return p
}

// Prune forgets the Pools for which keep is false (service ports no
// longer configured). Requests in flight on their hosts finish normally.
func (r *Registry) Prune(keep func(PoolKey) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.pools.Load()
	pools := make(map[PoolKey]*Pool, len(old))
	for k, p := range old {
		if keep(k) {
			pools[k] = p
		}
	}
	r.pools.Store(&pools)
}

// Stats yields each Pool's outlier statistics, for metrics.
func (r *Registry) Stats() iter.Seq2[PoolKey, outlier.Stats] {
	return func(yield func(PoolKey, outlier.Stats) bool) {
		for k, p := range *r.pools.Load() {
			if !yield(k, p.Stats()) {
				return
			}
		}
	}
}

// Pool is the endpoints of one service port, and the set outlier
// detection caps its ejections against.
type Pool struct {
	health *outlier.Detector

	mu    sync.Mutex // serialises Update
	hosts atomic.Pointer[[]*Host]
}

// Update makes addrs the Pool's endpoints: the healthy endpoints of the
// service port, from the mesh state. The proxy calls it when the mesh
// state changes; a call that changes nothing costs a comparison. Hosts
// whose address stays keep their in-flight count and health; invalid and
// repeated addresses are ignored.
func (p *Pool) Update(addrs []netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.hosts.Load()
	if slices.EqualFunc(old, addrs, func(h *Host, a netip.AddrPort) bool { return h.Addr == a }) {
		return
	}
	byAddr := make(map[netip.AddrPort]*Host, len(old))
	for _, h := range old {
		byAddr[h.Addr] = h
	}
	hosts := make([]*Host, 0, len(addrs))
	seen := make(map[netip.AddrPort]bool, len(addrs))
	for _, a := range addrs {
		if !a.IsValid() || seen[a] {
			continue
		}
		seen[a] = true
		h := byAddr[a]
		if h == nil {
			h = &Host{Addr: a, health: p.health.NewMonitor()}
		}
		hosts = append(hosts, h)
	}
	monitors := make([]*outlier.Monitor, len(hosts))
	for i, h := range hosts {
		monitors[i] = h.health
	}
	p.health.SetMembers(monitors)
	p.hosts.Store(&hosts)
}

// Hosts returns the Pool's endpoints. The slice is shared: do not modify
// it.
func (p *Pool) Hosts() []*Host { return *p.hosts.Load() }

// Stats returns the Pool's outlier statistics.
func (p *Pool) Stats() outlier.Stats { return p.health.Stats() }

// Pick chooses the endpoint for an attempt: of two endpoints drawn at
// random from those neither ejected nor in tried, the one with fewer
// requests in flight. tried holds the endpoints earlier attempts of the
// request went to, so that a retry goes elsewhere when it can. If every
// endpoint not tried is ejected, ejection is ignored (Envoy's panic mode):
// an endpoint that might be failing beats certain failure. Pick returns
// nil only when there is no endpoint, or every one was tried.
//
// The caller brackets the attempt with Host.Begin and Host.End.
func (p *Pool) Pick(rnd func() uint64, tried []*Host) *Host {
	hosts := *p.hosts.Load()
	switch len(hosts) {
	case 0:
		return nil
	case 1:
		if slices.Contains(tried, hosts[0]) {
			return nil
		}
		return hosts[0]
	}
	now := p.health.Now()
	if len(tried) == 0 && !p.health.AnyEjected(now) {
		i, j := twoOf(rnd, uint64(len(hosts)))
		return lessLoaded(hosts[i], hosts[j])
	}
	eligible := func(h *Host) bool { return !slices.Contains(tried, h) && !h.health.EjectedAt(now) }
	// Most endpoints are usually eligible: a few random draws find two
	// without visiting them all. Rejection keeps the draws uniform.
	if a := draw(hosts, rnd, eligible, nil); a != nil {
		if b := draw(hosts, rnd, eligible, a); b != nil {
			return lessLoaded(a, b)
		}
	}
	panicking := false
	for {
		n := count(hosts, eligible)
		switch {
		case n == 0 && panicking:
			return nil
		case n == 0:
			panicking = true
			eligible = func(h *Host) bool { return !slices.Contains(tried, h) }
			continue
		case n == 1:
			if h := nth(hosts, eligible, 0); h != nil {
				return h
			}
			continue
		}
		i, j := twoOf(rnd, n)
		a, b := nth(hosts, eligible, i), nth(hosts, eligible, j)
		switch {
		case a != nil && b != nil:
			return lessLoaded(a, b)
		case a != nil:
			return a
		case b != nil:
			return b
		}
		// Both were ejected since they were counted: draw again. This
		// ends: ejections only grow the ineligible set at a fixed now,
		// and panic mode's set does not change.
	}
}

// twoOf draws two different numbers in [0, n), n >= 2.
func twoOf(rnd func() uint64, n uint64) (uint64, uint64) {
	i := below(rnd, n)
	j := below(rnd, n-1)
	if j >= i {
		j++
	}
	return i, j
}

// draw returns a random eligible host other than not, or nil if a few
// draws find none.
func draw(hosts []*Host, rnd func() uint64, eligible func(*Host) bool, not *Host) *Host {
	for range 4 {
		if h := hosts[below(rnd, uint64(len(hosts)))]; h != not && eligible(h) {
			return h
		}
	}
	return nil
}

func lessLoaded(a, b *Host) *Host {
	if b.InFlight() < a.InFlight() {
		return b
	}
	return a
}

func count(hosts []*Host, ok func(*Host) bool) uint64 {
	var n uint64
	for _, h := range hosts {
		if ok(h) {
			n++
		}
	}
	return n
}

// nth returns the i-th (from 0) host for which ok holds, or nil if there
// are no longer that many: hosts can be ejected while Pick reads them.
func nth(hosts []*Host, ok func(*Host) bool, i uint64) *Host {
	for _, h := range hosts {
		if ok(h) {
			if i == 0 {
				return h
			}
			i--
		}
	}
	return nil
}

// Host is one endpoint of a Pool.
type Host struct {
	// Addr is the endpoint's address and target port.
	Addr netip.AddrPort

	inFlight atomic.Int64
	health   *outlier.Monitor
}

// Begin records that a request to the endpoint starts.
func (h *Host) Begin() { h.inFlight.Add(1) }

// End records that a request Begin counted has ended, and how, for outlier
// detection.
func (h *Host) End(o outlier.Outcome) {
	h.inFlight.Add(-1)
	h.health.Report(o)
}

// InFlight returns the number of requests to the endpoint in flight.
func (h *Host) InFlight() int64 { return h.inFlight.Load() }

// Ejected reports whether outlier detection has ejected the endpoint now
// (for the admin view; Pick reads the clock once for all endpoints).
func (h *Host) Ejected() bool { return h.health.Ejected() }
