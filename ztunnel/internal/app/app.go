// Package app wires ztunnel together: configuration source, certificates,
// the proxy in shared or in-pod mode, telemetry, admin and readiness
// endpoints, and the drain on shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/exepages"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/meshstate/localconfig"
	"github.com/skiffmesh/skiff/pkg/policy"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/zds"
	"github.com/skiffmesh/skiff/ztunnel/internal/certs"
	"github.com/skiffmesh/skiff/ztunnel/internal/inpodmgr"
	"github.com/skiffmesh/skiff/ztunnel/internal/proxy"
)

// Modes.
const (
	ModeInPod  = "inpod"
	ModeShared = "shared"
)

// Config is ztunnel's configuration, from flags.
type Config struct {
	// Mode is ModeInPod (listeners inside each pod, handed over by the node
	// agent) or ModeShared (listeners in ztunnel's own namespace).
	Mode          string
	NodeName      string
	TrustDomain   string
	RootNamespace string
	ClusterID     string

	// LocalConfig is the YAML state file (local mode); CACert and CAKey
	// sign workload certificates locally.
	LocalConfig   string
	CACert, CAKey string
	CertTTL       time.Duration

	// XDS is the control plane address (xDS mode, when LocalConfig is
	// empty); CAAddress the CA (default XDS); TokenFile the
	// service-account token; XDSRootCert the roots that verify both.
	XDS, CAAddress, TokenFile, XDSRootCert string
	// XDSServerName is the name checked in the control plane's and CA's
	// certificates (default istiod.istio-system.svc).
	XDSServerName string

	// ZDSPath is the node agent's socket (in-pod mode).
	ZDSPath string
	// Shared-mode listen addresses ("" disables).
	Outbound, Plaintext, HBONE, SOCKS5 string
	// SOCKS5Port opens SOCKS5 on each pod's loopback in in-pod mode (0:
	// none).
	SOCKS5Port int
	// Mark is set on shared-mode sockets (in-pod always uses the pod mark).
	Mark uint32

	AdminAddr, MetricsAddr, ReadinessAddr string
	// DrainTimeout bounds the drain on shutdown.
	DrainTimeout time.Duration
	// Transport is the hboneTransport setting (default auto).
	Transport      hbone.TransportMode
	ConnectTimeout time.Duration
	// PingInterval and PingTimeout are the HTTP/2 health checks of HBONE
	// connections over TCP (hbone.ClientConfig's: 0 default, negative off).
	PingInterval, PingTimeout time.Duration

	// PageRelease is how often the pages of ztunnel's binary it is not
	// using are given back (pkg/exepages); 0 never.
	PageRelease time.Duration

	// LogLevel is changed at run time by /logging.
	LogLevel *slog.LevelVar
}

// Run starts ztunnel and blocks until ctx is done, then drains and returns.
// Errors in start-up (bad configuration, ports in use) are returned at once.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LogLevel == nil {
		cfg.LogLevel = new(slog.LevelVar)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.Mode != ModeInPod && cfg.Mode != ModeShared {
		return fmt.Errorf("mode %q: want %s or %s", cfg.Mode, ModeInPod, ModeShared)
	}
	// Background work stops with runCtx, after the drain.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stop()
	goBG := func(name string, f func(context.Context) error) {
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				logger.Error(name+" stopped", "err", err)
			}
		}()
	}

	store := meshstate.NewStore(cfg.RootNamespace, td.Name())
	src, err := newSource(runCtx, cfg, td, store, logger)
	if err != nil {
		return err
	}
	goBG("config source", src.run)
	goBG("certificate renewal", src.certs.Run)
	certStore := certs.New(src.certs, logger)

	tel, err := telemetry.NewProvider(telemetry.ProviderOptions{ProcessMetrics: true})
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())
	tcpMetrics, err := telemetry.NewTCPMetrics(tel.Meter("ztunnel"))
	if err != nil {
		return err
	}
	accessLog := logger.With("scope", "access")
	var resetKey []byte
	if cfg.Mode == ModeInPod && cfg.ZDSPath != "" {
		if resetKey, err = quicResetKey(filepath.Dir(cfg.ZDSPath)); err != nil {
			logger.Warn("no QUIC stateless-reset key: after a crash, peers' QUIC connections end at their idle timeout", "err", err)
		}
	}
	px, err := proxy.New(proxy.Config{
		NodeName:       cfg.NodeName,
		TrustDomain:    td,
		Store:          store,
		Certs:          certStore,
		Bundles:        src.bundles,
		Metrics:        tcpMetrics,
		Logger:         logger,
		AccessLog:      accessLog,
		ConnectTimeout: cfg.ConnectTimeout,
		PingInterval:   cfg.PingInterval,
		PingTimeout:    cfg.PingTimeout,
		Transport:      cfg.Transport,
		ClusterID:      cfg.ClusterID,
		QUICResetKey:   resetKey,
	})
	if err != nil {
		return err
	}
	goBG("policy re-evaluation", px.Run)
	if cfg.PageRelease > 0 {
		goBG("binary page release", func(ctx context.Context) error {
			exepages.Run(ctx, cfg.PageRelease, logger)
			return nil
		})
	}

	var draining atomic.Bool
	var mgr *inpodmgr.Manager
	var shared *proxy.Instance
	switch cfg.Mode {
	case ModeShared:
		shared, err = px.Start(proxy.InstanceConfig{
			Name:      "shared",
			Outbound:  cfg.Outbound,
			Plaintext: cfg.Plaintext,
			HBONE:     cfg.HBONE,
			SOCKS5:    cfg.SOCKS5,
			Mark:      cfg.Mark,
			ReusePort: true,
		})
		if err != nil {
			return err
		}
		goBG("certificate prefetch", func(ctx context.Context) error {
			return prefetchLocal(ctx, store, certStore, px)
		})
	case ModeInPod:
		mgr = inpodmgr.New(runCtx, inpodmgr.Config{
			Proxy: px, Certs: certStore, TrustDomain: td, SOCKS5Port: cfg.SOCKS5Port, Logger: logger,
		})
		goBG("node agent connection", func(ctx context.Context) error {
			// Take pods only with configuration to serve them: during an
			// upgrade the kernel shares each pod's new connections between
			// the old ztunnel and this one (SO_REUSEPORT) as soon as this one
			// listens there, and without configuration it could only refuse
			// them.
			select {
			case <-store.Loaded():
			case <-ctx.Done():
				return nil
			}
			return zds.Run(ctx, cfg.ZDSPath, mgr, logger)
		})
	}

	ready := func() error {
		switch {
		case draining.Load():
			return errors.New("draining")
		case !isClosed(store.Loaded()):
			return errors.New("configuration not loaded")
		case mgr != nil && !isClosed(mgr.Synced()):
			return errors.New("waiting for the node agent's snapshot")
		case !certStore.Ready():
			return errors.New("workload certificates pending")
		}
		return nil
	}
	dump := func(ctx context.Context) any { return configDump(ctx, store, src, certStore, mgr) }
	servers := []struct {
		name, addr string
		h          http.Handler
	}{
		{"admin", cfg.AdminAddr, admin.Admin(cfg.LogLevel, dump)},
		{"metrics", cfg.MetricsAddr, admin.Metrics(tel.Handler())},
		{"readiness", cfg.ReadinessAddr, admin.Readiness(ready)},
	}
	var https []*http.Server
	for _, s := range servers {
		if s.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("%s endpoint: %w", s.name, err)
		}
		hs := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
		https = append(https, hs)
		go hs.Serve(ln)
		logger.Info("serving "+s.name, "addr", ln.Addr().String())
	}
	logger.Info("ztunnel started", "mode", cfg.Mode, "node", cfg.NodeName, "trustDomain", td.Name())

	<-ctx.Done()
	draining.Store(true)
	logger.Info("draining", "timeout", cfg.DrainTimeout, "open", px.OpenConnections())
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	px.Shutdown(dctx)
	cancel()
	if mgr != nil {
		mgr.Close()
	}
	if shared != nil {
		shared.Close()
	}
	for _, hs := range https {
		hs.Close()
	}
	logger.Info("ztunnel stopped")
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// prefetchLocal keeps certificates of the node's workloads (shared mode)
// fetched: acquired when they appear, released when they go.
func prefetchLocal(ctx context.Context, store *meshstate.Store, cs *certs.Store, px *proxy.Proxy) error {
	held := map[spiffeid.ID]bool{}
	defer func() {
		for id := range held {
			cs.Release(id)
		}
	}()
	for {
		changed := store.Changed()
		want := map[spiffeid.ID]bool{}
		for _, w := range store.Snapshot().Workloads() {
			if px.Local(w) && w.Protocol == meshstate.TunnelHBONE {
				want[w.Identity()] = true
			}
		}
		for id := range want {
			if !held[id] {
				cs.Acquire(ctx, id)
				held[id] = true
			}
		}
		for id := range held {
			if !want[id] {
				cs.Release(id)
				delete(held, id)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// dumpWorkload adds the identity to a workload's dump.
type dumpWorkload struct {
	*meshstate.Workload
	Identity string `json:"identity"`
}

type dumpPolicy struct {
	Key    string         `json:"key"`
	Scope  string         `json:"scope"`
	Action string         `json:"action"`
	Groups []policy.Group `json:"groups"`
}

func configDump(ctx context.Context, store *meshstate.Store, src *source, cs *certs.Store, mgr *inpodmgr.Manager) any {
	snap := store.Snapshot()
	ws := snap.Workloads()
	workloads := make([]dumpWorkload, len(ws))
	for i, w := range ws {
		workloads[i] = dumpWorkload{w, w.Identity().String()}
	}
	ps := snap.Policies()
	policies := make([]dumpPolicy, len(ps))
	for i, p := range ps {
		policies[i] = dumpPolicy{Key: p.Key(), Scope: p.Scope.String(), Action: p.Action.String(), Groups: p.Groups}
	}
	out := map[string]any{
		"workloads":    workloads,
		"services":     snap.Services(),
		"policies":     policies,
		"certificates": cs.Dump(ctx),
		"config":       src.status(store),
	}
	if mgr != nil {
		out["pods"] = mgr.Dump()
	}
	return out
}

// newIdentityManager is shared by the sources.
func newIdentityManager(client identity.CAClient, cfg Config, logger *slog.Logger) *identity.Manager {
	return identity.NewManager(client, identity.ManagerOptions{TTL: cfg.CertTTL, Logger: logger})
}

// localSourceStatus reports the local file's state.
func localSourceStatus(s *localconfig.Source, store *meshstate.Store, path string) map[string]any {
	st := map[string]any{"source": "local", "path": path, "version": store.Version()}
	if err := s.LastError(); err != nil {
		st["lastError"] = err.Error()
	}
	return st
}
