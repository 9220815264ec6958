// Package xdsserver is istiod-lite's delta ADS server. It holds the current
// resources of every type (fed by the index through Push), and for each
// connected client what that client holds, so that it sends each client
// exactly what changed: new or changed resources with their versions, and
// the names of removed ones. A reconnecting client's
// initial_resource_versions tell it what the client still holds, so nothing
// unchanged is resent. What a client rejects (NACK) it does not hold: those
// resources go again with the next response sent to it.
package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// Authenticator identifies the caller of a stream.
type Authenticator interface {
	FromContext(ctx context.Context) (*auth.Caller, error)
}

// Options configures New.
type Options struct {
	Auth   Authenticator
	Logger *slog.Logger
	Meter  metric.Meter
	// NACKRetry is how long after a rejection what was rejected is sent
	// again if no change goes to the client sooner; it doubles with each
	// consecutive rejection, up to a minute (default 500ms).
	NACKRetry time.Duration
	// SendTimeout bounds how long one response may wait for the client to
	// take it (flow control); a stream that does not drain is closed with
	// DeadlineExceeded (default 30s).
	SendTimeout time.Duration
	// MaxStreamsPerCaller bounds the streams open at once per caller: per
	// pod for pod-bound tokens, per service account otherwise (default 8).
	MaxStreamsPerCaller int
	// MaxNamesPerStream bounds the resource names a stream's explicit
	// subscriptions may hold (default 1000); wildcards are not counted,
	// nor are the names node proxies subscribe to.
	MaxNamesPerStream int
	// NodeAccounts ("<namespace>/<service account>") are node proxies
	// (ztunnel), which receive every address and policy (default
	// istio-system/ztunnel). Waypoints receive them too; other callers only
	// their own waypoint configuration.
	NodeAccounts []string
}

// Server serves DeltaAggregatedResources. It implements index.Sink.
type Server struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	auth      Authenticator
	log       *slog.Logger
	nackRetry time.Duration

	mu      sync.RWMutex
	store   map[string]map[string]*entry
	conns   map[*conn]struct{}
	version uint64
	synced  bool

	connID      atomic.Uint64
	m           instruments
	stopping    chan struct{}
	stopOnce    sync.Once
	sendTimeout time.Duration
	maxStreams  int
	maxNames    int
	// nodeAccounts holds NodeAccounts.
	nodeAccounts map[string]bool
	// streams counts open streams per caller key (see callerKey).
	streams map[string]int
}

// Shutdown ends every stream with Unavailable, so that clients reconnect to
// another replica, and refuses new ones.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

type entry struct {
	name    string
	version string
	// wire is the resource encoded as one element of
	// DeltaDiscoveryResponse.resources (tag, length, Resource), shared by
	// every response that carries it; boxed once, so that building a
	// response allocates nothing per resource.
	wire mem.Buffer
}

type instruments struct {
	pushes      metric.Int64Counter
	rejects     metric.Int64Counter
	clients     metric.Int64UpDownCounter
	convergence metric.Float64Histogram
}

// New returns a server with an empty state.
func New(opts Options) (*Server, error) {
	if opts.Auth == nil {
		return nil, errors.New("xdsserver: an Authenticator is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Meter == nil {
		opts.Meter = noop.NewMeterProvider().Meter("")
	}
	if opts.NACKRetry <= 0 {
		opts.NACKRetry = 500 * time.Millisecond
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 30 * time.Second
	}
	if opts.MaxStreamsPerCaller <= 0 {
		opts.MaxStreamsPerCaller = 8
	}
	if opts.MaxNamesPerStream <= 0 {
		opts.MaxNamesPerStream = 1000
	}
	if opts.NodeAccounts == nil {
		opts.NodeAccounts = []string{"istio-system/ztunnel"}
	}
	s := &Server{
		nackRetry:    opts.NACKRetry,
		auth:         opts.Auth,
		log:          opts.Logger,
		store:        map[string]map[string]*entry{},
		conns:        map[*conn]struct{}{},
		stopping:     make(chan struct{}),
		sendTimeout:  opts.SendTimeout,
		maxStreams:   opts.MaxStreamsPerCaller,
		maxNames:     opts.MaxNamesPerStream,
		nodeAccounts: map[string]bool{},
		streams:      map[string]int{},
	}
	for _, t := range []string{xds.AddressType, xds.AuthorizationType, xds.WaypointType} {
		s.store[t] = map[string]*entry{}
	}
	for _, a := range opts.NodeAccounts {
		s.nodeAccounts[a] = true
	}
	var err error
	m := opts.Meter
	if s.m.pushes, err = m.Int64Counter("pilot_xds_pushes", metric.WithDescription("xDS responses sent, by type")); err != nil {
		return nil, err
	}
	if s.m.rejects, err = m.Int64Counter("pilot_total_xds_rejects", metric.WithDescription("xDS responses rejected (NACKed) by clients, by type")); err != nil {
		return nil, err
	}
	if s.m.clients, err = m.Int64UpDownCounter("pilot_xds", metric.WithDescription("Connected xDS clients")); err != nil {
		return nil, err
	}
	if s.m.convergence, err = m.Float64Histogram("pilot_proxy_convergence_time", metric.WithUnit("s"),
		metric.WithDescription("Time from a configuration change to its push to a client"),
		metric.WithExplicitBucketBoundaries(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 3, 5, 10)); err != nil {
		return nil, err
	}
	return s, nil
}

// Push implements index.Sink: it replaces the changed resources and tells
// every connected client's sender which names changed. A resource pushed
// again at the version the server holds, or the removal of one it does not
// hold, changes nothing and is sent to no one.
func (s *Server) Push(updates []index.Update) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.synced = true
	changed := make([]index.Update, 0, len(updates))
	for _, u := range updates {
		st := s.store[u.TypeURL]
		if st == nil {
			st = map[string]*entry{}
			s.store[u.TypeURL] = st
		}
		c := index.Update{TypeURL: u.TypeURL}
		for _, r := range u.Upserted {
			if e := st[r.Name]; e != nil && e.version == r.Version {
				continue
			}
			wire, err := encodeResource(u.TypeURL, r)
			if err != nil {
				s.log.Error("encode xds resource", "type", u.TypeURL, "name", r.Name, "err", err)
				continue
			}
			st[r.Name] = &entry{name: r.Name, version: r.Version, wire: mem.SliceBuffer(wire)}
			c.Upserted = append(c.Upserted, r)
		}
		for _, name := range u.Removed {
			if _, ok := st[name]; ok {
				delete(st, name)
				c.Removed = append(c.Removed, name)
			}
		}
		if len(c.Upserted)+len(c.Removed) > 0 {
			changed = append(changed, c)
		}
	}
	if len(changed) == 0 {
		return
	}
	for c := range s.conns {
		c.enqueue(changed, now)
	}
	for _, u := range changed {
		if u.TypeURL == xds.WaypointType && len(u.Removed) > 0 {
			s.revokeWaypoints(u.Removed)
		}
	}
}

// revokeWaypoints ends the mesh-state subscriptions of callers whose
// waypoint configuration (named after their account) is gone: access is
// checked when a subscription is made, and must not outlive its reason.
// The caller holds s.mu.
func (s *Server) revokeWaypoints(removed []string) {
	for c := range s.conns {
		if s.isNode(c.caller) || !slices.Contains(removed, c.caller.Account()) {
			continue
		}
		c.mu.Lock()
		_, addrs := c.subs[xds.AddressType]
		_, authz := c.subs[xds.AuthorizationType]
		c.mu.Unlock()
		if addrs || authz {
			c.revokeOnce.Do(func() { close(c.revoked) })
		}
	}
}

// Synced reports whether the index has pushed at least once; before that a
// client would receive an empty state.
func (s *Server) Synced() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.synced
}

// Clients returns the number of connected clients.
func (s *Server) Clients() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.conns)
}

// StreamAggregatedResources is not served: Skiff speaks delta xDS only.
func (s *Server) StreamAggregatedResources(discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "istiod-lite serves delta xDS only (DeltaAggregatedResources)")
}

// allowed reports whether caller may receive the named resource. Waypoint
// configurations go only to the waypoint's own service account, which the
// deployer names after the Gateway.
func allowed(typeURL string, c *auth.Caller, name string) bool {
	if typeURL == xds.WaypointType {
		return name == c.Account()
	}
	return true
}

// mayReceive reports whether caller may subscribe to typeURL at all. The
// mesh's addresses and policies go to node proxies (the NodeAccounts) and
// to waypoints (whose service account is named after their Gateway, for
// which a waypoint configuration exists), not to any workload.
func (s *Server) mayReceive(typeURL string, c *auth.Caller) bool {
	if typeURL != xds.AddressType && typeURL != xds.AuthorizationType {
		return true
	}
	if s.isNode(c) {
		return true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, waypoint := s.store[xds.WaypointType][c.Account()]
	return waypoint
}

// isNode reports whether c is a node proxy (one of the NodeAccounts).
func (s *Server) isNode(c *auth.Caller) bool { return s.nodeAccounts[c.Account()] }

// DeltaAggregatedResources serves one client.
func (s *Server) DeltaAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	ctx := stream.Context()
	caller, err := s.auth.FromContext(ctx)
	if err != nil {
		return err
	}
	c := &conn{
		id:      strconv.FormatUint(s.connID.Add(1), 10),
		caller:  caller,
		subs:    map[string]*sub{},
		pending: map[string]map[string]bool{},
		wake:    make(chan struct{}, 1),
		sent:    map[string]sentResponse{},
		revoked: make(chan struct{}),
	}
	log := s.log.With("conn", c.id, "caller", caller.Account())
	key := callerKey(caller)
	s.mu.Lock()
	if s.streams[key] >= s.maxStreams {
		s.mu.Unlock()
		log.Warn("xds stream refused: too many streams for one caller", "limit", s.maxStreams)
		return status.Errorf(codes.ResourceExhausted, "too many xDS streams for %s (limit %d)", key, s.maxStreams)
	}
	s.streams[key]++
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.m.clients.Add(ctx, 1)
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.streams[key]--; s.streams[key] <= 0 {
			delete(s.streams, key)
		}
		s.mu.Unlock()
		s.m.clients.Add(context.WithoutCancel(ctx), -1)
	}()

	reqs := make(chan *discoveryv3.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	log.Info("xds client connected")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "istiod-lite is shutting down")
		case err := <-recvErr:
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return nil
			}
			log.Info("xds client disconnected", "err", err)
			return nil
		case req := <-reqs:
			if c.node == nil && req.GetNode() != nil {
				c.node = req.GetNode()
				log = log.With("node", c.node.GetId())
			}
			if err := s.handleRequest(ctx, c, req, stream, log); err != nil {
				log.Info("xds stream closed", "err", err)
				return err
			}
		case <-c.revoked:
			log.Warn("xds stream closed: the caller is no longer a waypoint")
			return status.Error(codes.PermissionDenied, "addresses and policies are served to node proxies and waypoints only; this caller's waypoint configuration was removed")
		case <-c.wake:
			if err := s.sendPending(ctx, c, stream); err != nil {
				log.Info("xds stream closed", "err", err)
				return err
			}
		}
	}
}

// callerKey is what MaxStreamsPerCaller counts by: the pod for a pod-bound
// token (every ztunnel has its own, though they share an account), the
// service account otherwise.
func callerKey(c *auth.Caller) string {
	if c.PodUID != "" {
		return "pod " + c.Namespace + "/" + c.PodName + " (" + c.PodUID + ")"
	}
	return "service account " + c.Account()
}

type conn struct {
	id     string
	caller *auth.Caller
	node   *corev3.Node

	mu      sync.Mutex
	subs    map[string]*sub
	pending map[string]map[string]bool
	since   time.Time // when the oldest pending change was pushed
	wake    chan struct{}
	nonce   uint64
	// sent records each response until it is (N)ACKed, so that what a
	// client rejects can be sent again.
	sent map[string]sentResponse // by nonce
	// nacks counts rejections since the last ACK: what was rejected is
	// resent after retryDelay(nacks) if no change is pushed sooner.
	nacks int
	// known is in subs; it is only touched by the stream's goroutine.

	// revoked is closed when the caller may no longer receive what it
	// subscribed to (its waypoint configuration was removed).
	revoked    chan struct{}
	revokeOnce sync.Once
}

// maxUnacked bounds the responses remembered per client awaiting an ACK;
// a client that acknowledges nothing is not remembered further.
const maxUnacked = 100

type sentResponse struct {
	typeURL string
	names   []string // updated and removed
}

type sub struct {
	wildcard bool
	names    map[string]bool
	// known holds the version the client has of each resource, for
	// explicit subscriptions. A wildcard subscriber is kept equal to the
	// store (every change is sent to it), so it needs no such map: with
	// 10,000 workloads and 100 clients that saves a million entries.
	known map[string]string
}

func (sb *sub) wants(name string) bool { return sb.wildcard || sb.names[name] }

// retryDelay is how long after its n-th consecutive rejection a client is
// sent again what it rejected, if no change goes to it sooner: soon at
// first (the cause may be gone, e.g. a conflict resolved meanwhile), then
// backing off, so a client that keeps rejecting costs little.
func retryDelay(first time.Duration, n int) time.Duration {
	limit := max(first, time.Minute)
	d := first
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// poke wakes the stream's sender.
func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// forgetLocked treats the named resources of typeURL as not held by the
// client, which rejected the response that carried them (it keeps its last
// accepted state): they go again, at their current version or as removals,
// with the next response sent to it, or after a delay (see retryDelay). Not
// at once: a rejection that does not depend on other resources would loop.
// The caller holds c.mu.
func (c *conn) forgetLocked(typeURL string, names []string) {
	sb := c.subs[typeURL]
	if sb == nil || len(names) == 0 {
		return
	}
	p := c.pending[typeURL]
	if p == nil {
		p = map[string]bool{}
		c.pending[typeURL] = p
	}
	for _, n := range names {
		if !sb.wildcard {
			delete(sb.known, n)
		}
		p[n] = true
	}
}

func (c *conn) enqueue(updates []index.Update, at time.Time) {
	c.mu.Lock()
	any := false
	for _, u := range updates {
		if c.subs[u.TypeURL] == nil {
			continue
		}
		p := c.pending[u.TypeURL]
		if p == nil {
			p = map[string]bool{}
			c.pending[u.TypeURL] = p
		}
		for _, r := range u.Upserted {
			p[r.Name] = true
		}
		for _, n := range u.Removed {
			p[n] = true
		}
		any = true
	}
	if any && c.since.IsZero() {
		c.since = at
	}
	c.mu.Unlock()
	if any {
		c.poke()
	}
}

func (s *Server) handleRequest(ctx context.Context, c *conn, req *discoveryv3.DeltaDiscoveryRequest, stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, log *slog.Logger) error {
	typeURL := req.GetTypeUrl()
	if _, ok := s.storeHas(typeURL); !ok {
		log.Warn("xds request for an unknown type", "type", typeURL)
		return status.Errorf(codes.InvalidArgument, "unknown resource type %q", typeURL)
	}
	if n := req.GetResponseNonce(); n != "" {
		c.mu.Lock()
		sent, known := c.sent[n]
		delete(c.sent, n)
		c.mu.Unlock()
		if e := req.GetErrorDetail(); e != nil {
			s.m.rejects.Add(ctx, 1, metric.WithAttributes(attribute.String("type", typeURL)))
			log.Warn("xds response rejected by client (NACK)", "type", typeURL, "nonce", n, "error", e.GetMessage())
			if known && sent.typeURL == typeURL {
				c.mu.Lock()
				c.forgetLocked(typeURL, sent.names)
				c.nacks++
				delay := retryDelay(s.nackRetry, c.nacks)
				c.mu.Unlock()
				time.AfterFunc(delay, c.poke)
			}
		} else {
			c.mu.Lock()
			c.nacks = 0
			c.mu.Unlock()
		}
		if len(req.GetResourceNamesSubscribe())+len(req.GetResourceNamesUnsubscribe()) == 0 {
			return nil
		}
	}

	// A new subscription or a change to one.
	if !s.mayReceive(typeURL, c.caller) {
		log.Warn("xds subscription refused: not a node proxy or waypoint", "type", typeURL)
		return status.Errorf(codes.PermissionDenied, "%s is served to node proxies (ztunnel) and waypoints only; %s is neither",
			typeURL, c.caller.Account())
	}
	c.mu.Lock()
	sb, existed := c.subs[typeURL]
	if !existed {
		sb = &sub{names: map[string]bool{}, known: map[string]string{}}
		if len(req.GetResourceNamesSubscribe()) == 0 {
			sb.wildcard = true // legacy wildcard: empty first subscription
		}
	}
	var added []string
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			sb.wildcard = true
			continue
		}
		if !sb.names[n] {
			sb.names[n] = true
			added = append(added, n)
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			if sb.wildcard {
				// From now on only named resources are tracked; the client
				// keeps what it has of the others (as the protocol says).
				sb.wildcard = false
				sb.known = map[string]string{}
			}
			continue
		}
		delete(sb.names, n)
		if !sb.wildcard {
			delete(sb.known, n)
		}
	}
	held := len(sb.names)
	for t, other := range c.subs {
		if t != typeURL {
			held += len(other.names)
		}
	}
	c.mu.Unlock()
	// Node proxies are trusted with the whole mesh, and their on-demand
	// lookups by name grow with it: only other callers are bounded.
	if held > s.maxNames && !s.isNode(c.caller) {
		log.Warn("xds subscription refused: too many resource names", "names", held, "limit", s.maxNames)
		return status.Errorf(codes.InvalidArgument, "subscriptions name %d resources; at most %d per stream (subscribe to \"*\" for all)", held, s.maxNames)
	}

	// Compute what to send under the store lock, and register the
	// subscription before releasing it, so no Push falls in between.
	s.mu.RLock()
	c.mu.Lock()
	c.subs[typeURL] = sb
	c.mu.Unlock()
	var d *delta
	if !existed {
		d = s.initialLocked(c, typeURL, sb, req.GetInitialResourceVersions())
	} else if len(added) > 0 {
		d = s.diffLocked(c, typeURL, sb, added)
	}
	version := s.version
	s.mu.RUnlock()
	if d == nil || (existed && d.empty()) {
		return nil
	}
	return s.send(ctx, c, stream, d, version, time.Time{})
}

// delta is one response's content.
type delta struct {
	typeURL string
	entries []*entry
	removed []string
}

func (d *delta) empty() bool { return len(d.entries)+len(d.removed) == 0 }

// initialLocked answers a new subscription: everything subscribed whose
// version differs from what the client says it has (initial), and removals
// for what it has that no longer exists. The caller holds s.mu for reading.
func (s *Server) initialLocked(c *conn, typeURL string, sb *sub, initial map[string]string) *delta {
	st := s.store[typeURL]
	d := &delta{typeURL: typeURL}
	if sb.wildcard {
		d.entries = make([]*entry, 0, len(st))
	}
	give := func(name string, e *entry) {
		if initial[name] != e.version {
			d.entries = append(d.entries, e)
		}
		if !sb.wildcard {
			sb.known[name] = e.version
		}
	}
	if sb.wildcard {
		for name, e := range st {
			if allowed(typeURL, c.caller, name) {
				give(name, e)
			}
		}
	} else {
		for name := range sb.names {
			if e := st[name]; e != nil && allowed(typeURL, c.caller, name) {
				give(name, e)
			} else if _, had := initial[name]; !had {
				d.removed = append(d.removed, name) // requested but does not exist
			}
		}
	}
	for name := range initial {
		e := st[name]
		if e == nil || !sb.wants(name) || !allowed(typeURL, c.caller, name) {
			d.removed = append(d.removed, name)
		}
	}
	return d
}

func (s *Server) storeHas(typeURL string) (map[string]*entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.store[typeURL]
	return st, ok
}

// diffLocked brings the client's view of the named resources of typeURL up
// to date. The caller holds s.mu for reading.
func (s *Server) diffLocked(c *conn, typeURL string, sb *sub, names []string) *delta {
	st := s.store[typeURL]
	d := &delta{typeURL: typeURL}
	for _, name := range names {
		e := st[name]
		ok := e != nil && sb.wants(name) && allowed(typeURL, c.caller, name)
		if sb.wildcard {
			// The name changed since the last push: send it, or its
			// removal (harmless if the client never had it).
			if ok {
				d.entries = append(d.entries, e)
			} else if e == nil {
				d.removed = append(d.removed, name)
			}
			continue
		}
		if ok {
			if sb.known[name] != e.version {
				sb.known[name] = e.version
				d.entries = append(d.entries, e)
			}
			continue
		}
		if _, had := sb.known[name]; had {
			delete(sb.known, name)
			d.removed = append(d.removed, name)
		} else if e == nil && sb.names[name] {
			d.removed = append(d.removed, name) // requested but does not exist
		}
	}
	return d
}

// sendPending sends what changed since the last push to this client.
func (s *Server) sendPending(ctx context.Context, c *conn, stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	c.mu.Lock()
	pending, since := c.pending, c.since
	c.pending, c.since = map[string]map[string]bool{}, time.Time{}
	c.mu.Unlock()
	for typeURL, names := range pending {
		c.mu.Lock()
		sb := c.subs[typeURL]
		c.mu.Unlock()
		if sb == nil {
			continue
		}
		list := make([]string, 0, len(names))
		for n := range names {
			list = append(list, n)
		}
		s.mu.RLock()
		d := s.diffLocked(c, typeURL, sb, list)
		version := s.version
		s.mu.RUnlock()
		if d.empty() {
			continue
		}
		if err := s.send(ctx, c, stream, d, version, since); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) send(ctx context.Context, c *conn, stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, d *delta, version uint64, since time.Time) error {
	c.mu.Lock()
	c.nonce++
	nonce := c.id + "-" + strconv.FormatUint(c.nonce, 10)
	if len(c.sent) < maxUnacked {
		names := make([]string, 0, len(d.entries)+len(d.removed))
		for _, e := range d.entries {
			names = append(names, e.name)
		}
		c.sent[nonce] = sentResponse{typeURL: d.typeURL, names: append(names, d.removed...)}
	}
	c.mu.Unlock()
	msg, err := encodeResponse(d, nonce, strconv.FormatUint(version, 10))
	if err != nil {
		return err
	}
	if err := s.sendMsg(stream, msg); err != nil {
		return fmt.Errorf("send %s: %w", d.typeURL, err)
	}
	attrs := metric.WithAttributes(attribute.String("type", d.typeURL))
	s.m.pushes.Add(ctx, 1, attrs)
	if !since.IsZero() {
		s.m.convergence.Record(ctx, time.Since(since).Seconds(), attrs)
	}
	return nil
}

// sendMsg sends msg, or gives up after the send timeout: a client that
// does not read blocks SendMsg on flow control for good. Returning the
// error ends the stream, which unblocks the abandoned SendMsg. Nothing
// shared is held meanwhile: a response's encoding refers to the resources'
// shared buffers, so one waiting costs little but its list of them.
func (s *Server) sendMsg(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, msg any) error {
	done := make(chan error, 1)
	go func() { done <- stream.SendMsg(msg) }()
	t := time.NewTimer(s.sendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return status.Errorf(codes.DeadlineExceeded, "the client took no response for %v; closing the stream", s.sendTimeout)
	}
}
