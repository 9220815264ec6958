// Package proxy is the waypoint's request path. It serves HBONE tunnels
// from ztunnels and other waypoints (an hbone.Handler), each addressed to
// a service's cluster IP and port, or to a workload's address for a
// workload-bound waypoint. The protocol comes from the service port's
// appProtocol or name, or from the tunnel's first bytes: HTTP/1.1 and
// HTTP/2 (and gRPC over it) are served at L7, anything else passes
// through at L4 with L4 authorization. On a port declared HTTP of any
// version, the client picks HTTP/1.1 or HTTP/2 with prior knowledge; the
// port decides what is spoken to endpoints.
//
// One HTTP request goes through, in order (forward.go): path
// normalization, authorization, routing, rate limits, the rule's filters
// (redirect, header edits, rewrite, mirrors), and the retry loop, where
// each attempt draws a backend by weight, picks one of its endpoints by
// least requests and carries the request there over HBONE. The response
// comes back through the response filters and streams to the client.
//
// Decisions are made by pure packages (route, authz, filter, balance,
// retry); this package does the I/O and keeps one record per request or
// connection for the access log, metrics and traces.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/config"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
	"github.com/skiffmesh/skiff/waypoint/internal/upstream"
)

// Defaults.
const (
	DefaultDetectTimeout     = 200 * time.Millisecond
	DefaultConnectTimeout    = 10 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxHeaderCount    = 100
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultBodyTimeout       = 60 * time.Second
	// DefaultReplayLimit is the largest request body kept for retries and
	// mirrors (as Linkerd).
	DefaultReplayLimit = 64 << 10
	// DefaultMaxMirrors bounds mirror requests in flight; beyond it,
	// copies are dropped.
	DefaultMaxMirrors = 256
)

// Config configures a Proxy.
type Config struct {
	// Waypoint returns the current compiled configuration; nil until the
	// first one arrived.
	Waypoint func() *config.Waypoint
	// Mesh holds workloads and services: the endpoints.
	Mesh *meshstate.Store
	// Self is the waypoint's own identity.
	Self     spiffeid.ID
	Upstream *upstream.Pool
	Balancer *balance.Registry
	// Budget makes a retry budget per destination service.
	Budget func() *retry.Budget
	// Limiter applies rate limits; nil lets every request through.
	Limiter Limiter
	// Telemetry records requests and connections.
	Telemetry *Telemetry

	DetectTimeout, ConnectTimeout               time.Duration
	MaxHeaderBytes, MaxHeaderCount              int
	ReadHeaderTimeout, IdleTimeout, BodyTimeout time.Duration
	ReplayLimit                                 int
	MaxMirrors                                  int
	Logger                                      *slog.Logger
}

// Proxy serves the waypoint's tunnels.
type Proxy struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	// draining ends at Drain (or Close): HTTP connections then finish
	// what is in flight and close.
	draining context.Context
	drain    context.CancelFunc

	budgets  sync.Map // destination name → *retry.Budget
	defaults sync.Map // *config.Service → its default *config.Rule
	mirrors  atomic.Int64
	eps      endpointCache

	// wg counts the goroutines Close waits for (tunnels, mirrors); mu
	// orders their start with Close, as a WaitGroup requires.
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
	open    atomic.Int64
}

// New checks cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Waypoint == nil:
		return nil, errors.New("proxy: Config.Waypoint is required")
	case cfg.Mesh == nil:
		return nil, errors.New("proxy: Config.Mesh is required")
	case cfg.Upstream == nil:
		return nil, errors.New("proxy: Config.Upstream is required")
	case cfg.Balancer == nil:
		return nil, errors.New("proxy: Config.Balancer is required")
	case cfg.Budget == nil:
		return nil, errors.New("proxy: Config.Budget is required")
	case cfg.Telemetry == nil:
		return nil, errors.New("proxy: Config.Telemetry is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DetectTimeout, DefaultDetectTimeout)
	def(&cfg.ConnectTimeout, DefaultConnectTimeout)
	def(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&cfg.IdleTimeout, DefaultIdleTimeout)
	def(&cfg.BodyTimeout, DefaultBodyTimeout)
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxHeaderCount <= 0 {
		cfg.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if cfg.ReplayLimit <= 0 {
		cfg.ReplayLimit = DefaultReplayLimit
	}
	if cfg.MaxMirrors <= 0 {
		cfg.MaxMirrors = DefaultMaxMirrors
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel}
	p.draining, p.drain = context.WithCancel(ctx)
	return p, nil
}

// Open counts the tunnels being served.
func (p *Proxy) Open() int64 { return p.open.Load() }

// Drain starts a graceful close of the HTTP connections being served, and
// of those that come later: an HTTP/1 connection closes after the
// response in flight (which says "Connection: close") or at once if it
// waits for a request; an HTTP/2 connection gets a GOAWAY and closes once
// its streams are done. Clients with keep-alive connections move to
// another waypoint meanwhile. Opaque TCP tunnels are left until Close.
func (p *Proxy) Drain() { p.drain() }

// Close ends every tunnel and waits for their goroutines. Tunnels that
// arrive meanwhile are refused.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}

// enter counts a goroutine Close must wait for, unless Close has begun.
// The caller calls p.wg.Done when the goroutine ends.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.wg.Add(1)
	return true
}

// budget returns the retry budget of the destination service key.
func (p *Proxy) budget(key string) *retry.Budget {
	if b, ok := p.budgets.Load(key); ok {
		return b.(*retry.Budget)
	}
	b, _ := p.budgets.LoadOrStore(key, p.cfg.Budget())
	return b.(*retry.Budget)
}

// endpoint is one endpoint an attempt goes to.
type endpoint struct {
	host *balance.Host
	w    *meshstate.Workload
	ep   upstream.Endpoint
	// addrText is ep.Addr for the access log, made once per endpoint.
	addrText string
}

// endpointSet is one backend service port's endpoints: the balancer's pool
// and what the proxy needs to reach each address.
type endpointSet struct {
	pool   *balance.Pool
	byAddr map[netip.AddrPort]endpointInfo
}

type endpointInfo struct {
	w        *meshstate.Workload
	ep       upstream.Endpoint
	addrText string
}

// endpointCache keeps, per mesh-state snapshot, each backend's endpoints,
// so that requests do not rebuild them; the balancer's pools are updated
// when the snapshot changes.
type endpointCache struct {
	mu   sync.Mutex
	snap *meshstate.Snapshot
	m    map[balance.PoolKey]*endpointSet
}

// endpoints returns the healthy endpoints of the service with key on
// servicePort, with addresses of the family v4 says where they have one.
func (p *Proxy) endpoints(snap *meshstate.Snapshot, key string, servicePort uint16, v4 bool) *endpointSet {
	c := &p.eps
	k := balance.PoolKey{Service: key, Port: servicePort}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != snap {
		c.snap, c.m = snap, map[balance.PoolKey]*endpointSet{}
		p.cfg.Balancer.Prune(func(k balance.PoolKey) bool {
			return snap.Service(k.Service) != nil || strings.HasPrefix(k.Service, workloadPoolPrefix)
		})
	}
	if set, ok := c.m[k]; ok {
		return set
	}
	set := &endpointSet{pool: p.cfg.Balancer.Pool(k), byAddr: map[netip.AddrPort]endpointInfo{}}
	var addrs []netip.AddrPort
	if svc := snap.Service(key); svc != nil && exposes(svc, servicePort) {
		for _, w := range snap.Endpoints(key) {
			if !w.Healthy {
				continue
			}
			addr, ok := w.Address(v4)
			if !ok {
				continue
			}
			ap := netip.AddrPortFrom(addr, svc.EndpointPort(w, servicePort))
			set.byAddr[ap] = endpointInfo{w: w, ep: meshEndpoint(w, ap), addrText: ap.String()}
			addrs = append(addrs, ap)
		}
	}
	set.pool.Update(addrs)
	c.m[k] = set
	return set
}

// workloadPoolPrefix keys the pools of workload-addressed traffic.
const workloadPoolPrefix = "workload:"

// workloadEndpoints is the one endpoint of workload-addressed traffic.
func (p *Proxy) workloadEndpoints(w *meshstate.Workload, dst netip.AddrPort) *endpointSet {
	set := &endpointSet{
		pool:   p.cfg.Balancer.Pool(balance.PoolKey{Service: workloadPoolPrefix + w.UID, Port: dst.Port()}),
		byAddr: map[netip.AddrPort]endpointInfo{dst: {w: w, ep: meshEndpoint(w, dst), addrText: dst.String()}},
	}
	set.pool.Update([]netip.AddrPort{dst})
	return set
}

// meshEndpoint is how to reach w at addr: over HBONE if it is in the
// mesh, else plain TCP.
func meshEndpoint(w *meshstate.Workload, addr netip.AddrPort) upstream.Endpoint {
	ep := upstream.Endpoint{Addr: addr}
	if w.Protocol == meshstate.TunnelHBONE {
		ep.ID = w.Identity()
	}
	return ep
}

// pick chooses an endpoint of set by least requests, skipping tried ones.
func (set *endpointSet) pick(tried []*balance.Host) (endpoint, bool) {
	h := set.pool.Pick(rand.Uint64, tried)
	if h == nil {
		return endpoint{}, false
	}
	info, ok := set.byAddr[h.Addr]
	if !ok {
		return endpoint{}, false
	}
	return endpoint{host: h, w: info.w, ep: info.ep, addrText: info.addrText}, true
}

// exposes reports whether svc has servicePort (a service that lists no
// ports, such as a headless one, takes any).
func exposes(svc *meshstate.Service, servicePort uint16) bool {
	_, ok := svc.TargetPort(servicePort)
	return ok || len(svc.Ports) == 0
}

// outlierReportInterval is how often ejection counts become metrics.
const outlierReportInterval = 10 * time.Second

// Run reports outlier detection's counters as metrics until ctx is done.
func (p *Proxy) Run(ctx context.Context) error {
	w := p.cfg.Telemetry.Waypoint
	if w == nil {
		<-ctx.Done()
		return nil
	}
	type seen struct{ ejections, skipped uint64 }
	last := map[balance.PoolKey]seen{}
	t := time.NewTicker(outlierReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		perService := map[string]int{}
		for k, st := range p.cfg.Balancer.Stats() {
			prev := last[k]
			for range st.Ejections - min(prev.ejections, st.Ejections) {
				w.OutlierEjection(ctx, k.Service, false)
			}
			for range st.SkippedByCap - min(prev.skipped, st.SkippedByCap) {
				w.OutlierEjection(ctx, k.Service, true)
			}
			last[k] = seen{st.Ejections, st.SkippedByCap}
			perService[k.Service] += st.Ejected
		}
		for svc, n := range perService {
			w.OutlierEjected(ctx, svc, n)
		}
	}
}
