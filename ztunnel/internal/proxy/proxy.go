// Package proxy is ztunnel's data path. An Instance is one set of listeners:
// a pod's, opened inside the pod's network namespace (in-pod mode), or the
// node's own (shared mode). Each Instance serves
//
//   - outbound (15001): connections redirected from the pod, routed by
//     SO_ORIGINAL_DST to a service endpoint, a waypoint, the destination's
//     ztunnel over HBONE, or passed through;
//   - SOCKS5 (15080): the same for clients that are not redirected;
//   - inbound HBONE (15008): tunnels from other ztunnels, checked against
//     authorization policy and connected to the application from the
//     client's own address;
//   - inbound plaintext (15006): connections from outside the mesh.
//
// The Proxy shared by all instances tracks every connection, so that a
// policy change closes connections it now denies and a drain can wait for
// them, and records Istio's TCP metrics and one access log line per
// connection.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"

	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/ztunnel/internal/acceptor"
)

// Certificates gives the certificate of a workload identity.
type Certificates interface {
	Get(ctx context.Context, id spiffeid.ID) (*identity.Certificate, error)
}

// Config configures a Proxy.
type Config struct {
	// NodeName is this node; in shared mode only workloads on it are
	// served. Empty serves every workload (standalone local mode).
	NodeName    string
	TrustDomain spiffeid.TrustDomain
	Store       *meshstate.Store
	Certs       Certificates
	// Bundles verify peers' certificates.
	Bundles x509bundle.Source
	// Metrics may be nil.
	Metrics *telemetry.TCPMetrics
	// Logger receives operational logs; AccessLog one line per
	// connection (default Logger).
	Logger    *slog.Logger
	AccessLog *slog.Logger
	// ConnectTimeout bounds connecting upstream (default 10s).
	ConnectTimeout time.Duration
	// PingInterval and PingTimeout are the health checks of every HBONE
	// connection over TCP, both ways (hbone.ClientConfig's: 0 default,
	// negative off).
	PingInterval, PingTimeout time.Duration
	// Transport is the hboneTransport setting: unless tcp, HBONE over
	// QUIC is served on UDP 15008 and advertised, and dialed to peers
	// that advertise it, falling back to TCP. Empty means auto.
	Transport hbone.TransportMode
	// ClusterID labels metrics (default "Kubernetes").
	ClusterID string
	// QUICResetKey keys the stateless resets of pods' QUIC servers (see
	// hbone.ServerConfig); nil sends none.
	QUICResetKey []byte
}

// Proxy is shared by every Instance.
type Proxy struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	instances map[*Instance]struct{}

	// acceptor accepts on every instance's listeners.
	acceptor *acceptor.Acceptor

	loadMu sync.Mutex
	load   map[string]*atomic.Int64 // open outbound connections per workload uid

	attrMu   sync.Mutex
	attrSets map[metricLabels]attribute.Set
}

// New returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("proxy: Config.Store is required")
	case cfg.Certs == nil:
		return nil, errors.New("proxy: Config.Certs is required")
	case cfg.Bundles == nil:
		return nil, errors.New("proxy: Config.Bundles is required")
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("proxy: Config.TrustDomain is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessLog == nil {
		cfg.AccessLog = cfg.Logger
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "Kubernetes"
	}
	if cfg.Transport == "" {
		cfg.Transport = hbone.TransportAuto
	}
	if _, err := hbone.ParseTransportMode(string(cfg.Transport)); err != nil {
		return nil, err
	}
	return &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		acceptor:  acceptor.New(cfg.Logger),
		instances: map[*Instance]struct{}{},
		load:      map[string]*atomic.Int64{},
		attrSets:  map[metricLabels]attribute.Set{},
	}, nil
}

// Run re-evaluates open inbound connections against authorization policy
// whenever the state changes, closing those now denied, until ctx is done.
func (p *Proxy) Run(ctx context.Context) error {
	for {
		// Take the channel before the snapshot, so no change between the
		// two goes unnoticed.
		changed := p.cfg.Store.Changed()
		p.reevaluate(p.cfg.Store.Snapshot())
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// errPolicyChanged is the cause of connections closed on re-evaluation.
var errPolicyChanged = errors.New("closed: no longer allowed by authorization policy")

func (p *Proxy) reevaluate(snap *meshstate.Snapshot) {
	p.mu.Lock()
	insts := make([]*Instance, 0, len(p.instances))
	for i := range p.instances {
		insts = append(insts, i)
	}
	p.mu.Unlock()
	closed := 0
	for _, inst := range insts {
		for _, c := range inst.trackedConns() {
			if !c.inbound {
				continue
			}
			dst := snap.Workload(c.destination())
			if dst == nil {
				dst = snap.WorkloadByIP(c.pc.DstIP)
			}
			if dst == nil {
				continue // the pod's own removal closes its connections
			}
			if d := policy.Evaluate(snap.PoliciesFor(dst), c.pc); !d.Allowed {
				c.kill(errPolicyChanged)
				closed++
			}
		}
	}
	if closed > 0 {
		p.log.Info("closed connections denied by changed policy", "count", closed)
	}
}

// Shutdown drains every instance: stops accepting, lets open connections
// finish until ctx ends, then closes them.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	insts := make([]*Instance, 0, len(p.instances))
	for i := range p.instances {
		insts = append(insts, i)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, i := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i.Shutdown(ctx)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// OpenConnections counts tracked connections of every instance.
func (p *Proxy) OpenConnections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for i := range p.instances {
		i.mu.Lock()
		n += len(i.conns)
		i.mu.Unlock()
	}
	return n
}

func (p *Proxy) loadOf(uid string) int64 {
	p.loadMu.Lock()
	defer p.loadMu.Unlock()
	if c := p.load[uid]; c != nil {
		return c.Load()
	}
	return 0
}

// addLoad counts a connection to uid; the returned func uncounts it.
func (p *Proxy) addLoad(uid string) func() {
	p.loadMu.Lock()
	c := p.load[uid]
	if c == nil {
		c = new(atomic.Int64)
		p.load[uid] = c
	}
	c.Add(1)
	p.loadMu.Unlock()
	return func() {
		p.loadMu.Lock()
		if c.Add(-1) == 0 && p.load[uid] == c {
			delete(p.load, uid)
		}
		p.loadMu.Unlock()
	}
}

// local reports whether ztunnel serves w in shared mode.
func (p *Proxy) local(w *meshstate.Workload) bool { return p.Local(w) }

// Local reports whether w runs on this node (always true without a node name).
func (p *Proxy) Local(w *meshstate.Workload) bool {
	return w != nil && (p.cfg.NodeName == "" || w.Node == p.cfg.NodeName)
}
