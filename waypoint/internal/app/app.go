// Package app wires the waypoint together: its configuration source
// (xDS or a local file), its own certificate, the HBONE listener, the
// request path, telemetry, the admin, metrics and readiness endpoints,
// and the drain on shutdown.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/exepages"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/pkg/identity"
	"github.com/skiffmesh/skiff/pkg/identity/caclient"
	"github.com/skiffmesh/skiff/pkg/meshstate"
	"github.com/skiffmesh/skiff/pkg/meshstate/localconfig"
	"github.com/skiffmesh/skiff/pkg/meshstate/xdssource"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/telemetry/tracing"
	"github.com/skiffmesh/skiff/pkg/xds"
	"github.com/skiffmesh/skiff/waypoint/internal/balance"
	"github.com/skiffmesh/skiff/waypoint/internal/http1"
	"github.com/skiffmesh/skiff/waypoint/internal/outlier"
	"github.com/skiffmesh/skiff/waypoint/internal/proxy"
	"github.com/skiffmesh/skiff/waypoint/internal/ratelimit"
	"github.com/skiffmesh/skiff/waypoint/internal/retry"
	"github.com/skiffmesh/skiff/waypoint/internal/source"
	"github.com/skiffmesh/skiff/waypoint/internal/upstream"
)

// Config is the waypoint's configuration, from flags.
type Config struct {
	// Waypoint is "<namespace>/<gateway name>".
	Waypoint string
	// ServiceAccount is the waypoint's (default: the gateway name, which
	// is how the deployer names it).
	ServiceAccount string
	TrustDomain    string
	RootNamespace  string
	ClusterID      string

	// LocalConfig is a YAML file (local mode); CACert and CAKey sign the
	// waypoint's certificate locally.
	LocalConfig   string
	CACert, CAKey string
	CertTTL       time.Duration

	// XDS is the control plane (xDS mode); CAAddress the CA (default XDS).
	XDS, CAAddress, TokenFile, XDSRootCert, XDSServerName string

	HBONEAddr, AdminAddr, MetricsAddr, ReadinessAddr string
	// Transport is the hboneTransport setting: unless tcp, HBONE over
	// QUIC is also served (UDP, same port as HBONEAddr) and advertised,
	// and dialed to endpoints that advertise it. Empty means auto.
	Transport hbone.TransportMode

	// DrainDelay is how long, after SIGTERM, the waypoint keeps
	// accepting tunnels while its HTTP connections drain: the control
	// plane takes a moment to tell every ztunnel that it is going away,
	// and a tunnel refused meanwhile would fail a client's connection.
	// DrainTimeout then bounds the wait for what is still in flight.
	DrainDelay     time.Duration
	DrainTimeout   time.Duration
	ConnectTimeout time.Duration
	DetectTimeout  time.Duration
	// PingInterval and PingTimeout are the HTTP/2 health checks of HBONE
	// connections over TCP, to endpoints and from ztunnels
	// (hbone.ClientConfig's: 0 default, negative off).
	PingInterval, PingTimeout time.Duration

	// Retry budget: retries may add at most RetryBudgetRatio of the
	// requests, plus RetryBudgetMinPerSecond.
	RetryBudgetRatio        float64
	RetryBudgetMinPerSecond int
	Outlier                 outlier.Config

	// OTLPEndpoint receives traces over OTLP/gRPC (host:port); empty
	// turns tracing off. OTLPInsecure sends them without TLS.
	OTLPEndpoint     string
	OTLPInsecure     bool
	TraceSampleRatio float64

	// RateLimitService is Envoy's rate-limit service (host:port) for
	// global limits, asked in RateLimitDomain with RateLimitTimeout;
	// RateLimitMaxKeys bounds the buckets of each local limit.
	RateLimitService string
	RateLimitDomain  string
	RateLimitTimeout time.Duration
	RateLimitMaxKeys int

	// PageRelease is how often the pages of the waypoint's binary it is
	// not using are given back (pkg/exepages); 0 never.
	PageRelease time.Duration

	AccessLog bool
	LogLevel  *slog.LevelVar
}

// tunnelWindow is the receive window of each HBONE tunnel, both ways: how
// much a slow client or backend can make the waypoint hold per request.
// HBONE's default (4 MiB) suits ztunnel, which holds bytes only in the
// kernel; the waypoint parses them, and holds what it receives.
const tunnelWindow = 1 << 20

// Run starts the waypoint and blocks until ctx is done, then drains.
// Start-up errors (bad flags or file, ports in use) are returned at once.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LogLevel == nil {
		cfg.LogLevel = new(slog.LevelVar)
	}
	ns, name, ok := strings.Cut(cfg.Waypoint, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("waypoint %q: want <namespace>/<name>", cfg.Waypoint)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", cfg.TrustDomain, err)
	}
	sa := cfg.ServiceAccount
	if sa == "" {
		sa = name
	}
	self, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		return fmt.Errorf("waypoint identity: %w", err)
	}
	logger = logger.With("waypoint", cfg.Waypoint)

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	bg := newGroup(runCtx, logger)
	defer bg.wait()
	defer stop()

	tel, err := telemetry.NewProvider(telemetry.ProviderOptions{ProcessMetrics: true})
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())

	mesh := meshstate.NewStore(cfg.RootNamespace, td.Name())
	wp := source.NewWaypoint(ns, name, logger)
	// The limiter sees each configuration before requests do; it must
	// exist before the source delivers the first.
	limiter, err := ratelimit.New(ratelimit.Options{
		MaxKeys: cfg.RateLimitMaxKeys, ServiceAddress: cfg.RateLimitService, Domain: cfg.RateLimitDomain,
		Timeout: cfg.RateLimitTimeout, Meter: tel.Meter("waypoint"), Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("rate limits: %w", err)
	}
	defer limiter.Close()
	wp.BeforeInstall(limiter.Update)
	src, err := newSource(cfg, td, self, mesh, wp, logger)
	if err != nil {
		return err
	}
	bg.run("configuration source", src.run)
	bg.run("certificate renewal", src.certs.Run)
	if cfg.PageRelease > 0 {
		bg.run("binary page release", func(ctx context.Context) error {
			exepages.Run(ctx, cfg.PageRelease, logger)
			return nil
		})
	}
	var certReady atomic.Bool
	getCert := func(ctx context.Context) (*tls.Certificate, error) {
		c, err := src.certs.Get(ctx, self)
		if err != nil {
			return nil, err
		}
		certReady.Store(true)
		return &c.TLS, nil
	}
	bg.run("certificate prefetch", func(ctx context.Context) error {
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 10*time.Second) {
			if _, err := getCert(ctx); err == nil || ctx.Err() != nil {
				return nil
			} else {
				logger.Warn("fetching the waypoint's certificate; will retry", "identity", self, "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
		}
	})

	reqMetrics, err := telemetry.NewRequestMetrics(tel.Meter("waypoint"))
	if err != nil {
		return err
	}
	tcpMetrics, err := telemetry.NewTCPMetrics(tel.Meter("waypoint"))
	if err != nil {
		return err
	}
	wpMetrics, err := telemetry.NewWaypointMetrics(tel.Meter("waypoint"))
	if err != nil {
		return err
	}
	tracer, err := tracing.New(runCtx, tracing.Options{
		Endpoint: cfg.OTLPEndpoint, Insecure: cfg.OTLPInsecure, ServiceName: name + "." + ns,
		SampleRatio: cfg.TraceSampleRatio, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer tracer.Shutdown(context.Background())
	ptel := &proxy.Telemetry{Requests: reqMetrics, TCP: tcpMetrics, Waypoint: wpMetrics, Tracing: tracer, Logger: logger, Cluster: cfg.ClusterID}
	if cfg.AccessLog {
		ptel.AccessLog = logger.With("scope", "access")
	}

	hc, err := hbone.NewTransportDialer(hbone.ClientConfig{
		Bundles: src.bundles, HandshakeTimeout: cfg.ConnectTimeout, Logger: logger,
		StreamWindow: tunnelWindow,
		// One thread serves many tunnels: their writes leave together.
		GatherWrites: true,
		PingInterval: cfg.PingInterval,
		PingTimeout:  cfg.PingTimeout,
	}, hbone.TransportConfig{Mode: cfg.Transport})
	if err != nil {
		return err
	}
	defer hc.Close()
	pool := upstream.New(upstream.Config{
		Tunnels:    &upstream.HBONE{Client: hc, Cert: getCert},
		NewH1:      func(c net.Conn) upstream.H1Conn { return http1.NewClientConn(c, http1.ClientConfig{}) },
		NoResponse: func(err error) bool { return errors.Is(err, http1.ErrNoResponse) },
		// The tunnels' own connections have health checks; these find an
		// endpoint whose HTTP/2 server hangs behind a live tunnel.
		H2:     hbone.H2CClientConfig{WriteByteTimeout: 30 * time.Second, PingInterval: 30 * time.Second, PingTimeout: 15 * time.Second},
		Logger: logger,
	})
	bg.run("upstream pool", pool.Run)

	balancer, err := balance.NewRegistry(cfg.Outlier)
	if err != nil {
		return fmt.Errorf("outlier detection: %w", err)
	}
	budgetCfg := retry.BudgetConfig{Ratio: cfg.RetryBudgetRatio, MinPerSecond: float64(cfg.RetryBudgetMinPerSecond)}
	if _, err := retry.NewBudget(budgetCfg); err != nil {
		return fmt.Errorf("retry budget: %w", err)
	}
	px, err := proxy.New(proxy.Config{
		Waypoint: wp.Load,
		Mesh:     mesh,
		Self:     self,
		Upstream: pool,
		Balancer: balancer,
		Budget: func() *retry.Budget {
			b, _ := retry.NewBudget(budgetCfg) // checked above
			return b
		},
		Limiter:        limiter,
		Telemetry:      ptel,
		ConnectTimeout: cfg.ConnectTimeout,
		DetectTimeout:  cfg.DetectTimeout,
		Logger:         logger,
	})
	if err != nil {
		return err
	}
	bg.run("outlier metrics", px.Run)
	srvCfg := hbone.ServerConfig{
		TrustDomain: td,
		Bundles:     src.bundles,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return getCert(hello.Context())
		},
		Handler:      px,
		Logger:       logger,
		StreamWindow: tunnelWindow,
		GatherWrites: true,
		PingInterval: cfg.PingInterval,
		PingTimeout:  cfg.PingTimeout,
	}
	ln, err := net.Listen("tcp", cfg.HBONEAddr)
	if err != nil {
		return fmt.Errorf("HBONE listener: %w", err)
	}
	var qs *hbone.QUICServer
	if cfg.Transport == "" || cfg.Transport.ServesQUIC() {
		// The same port on UDP, bound before it is advertised.
		udp, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			return fmt.Errorf("HBONE QUIC listener: %w", err)
		}
		srvCfg.AltSvc = hbone.FormatAltSvc(uint16(udp.LocalAddr().(*net.UDPAddr).Port), time.Hour)
		if qs, err = hbone.NewQUICServer(srvCfg); err != nil {
			ln.Close()
			udp.Close()
			return err
		}
		go qs.Serve(udp)
		logger.Info("serving HBONE over QUIC", "addr", udp.LocalAddr().String())
	}
	hs, err := hbone.NewServer(srvCfg)
	if err != nil {
		ln.Close()
		if qs != nil {
			qs.Close()
		}
		return err
	}
	go hs.Serve(ln)
	logger.Info("serving HBONE", "addr", ln.Addr().String(), "identity", self)

	var draining atomic.Bool
	ready := func() error {
		switch {
		case draining.Load():
			return errors.New("draining")
		case !mesh.IsLoaded():
			return errors.New("mesh state not loaded")
		case wp.Load() == nil:
			return errors.New("waypoint configuration not loaded")
		case !certReady.Load():
			return errors.New("waypoint certificate pending")
		}
		return nil
	}
	dump := func(ctx context.Context) any {
		return map[string]any{
			"waypoint": cfg.Waypoint, "identity": self.String(),
			"config": src.status(), "configVersion": wp.Version(), "meshVersion": mesh.Version(),
			"services": mesh.Snapshot().Services(), "workloads": len(mesh.Snapshot().Workloads()),
			"openTunnels": px.Open(),
		}
	}
	servers, err := serveAdmin(logger, []endpoint{
		{"admin", cfg.AdminAddr, admin.Admin(cfg.LogLevel, dump)},
		{"metrics", cfg.MetricsAddr, admin.Metrics(tel.Handler())},
		{"readiness", cfg.ReadinessAddr, admin.Readiness(ready)},
	})
	if err != nil {
		ln.Close()
		if qs != nil {
			qs.Close()
		}
		return err
	}
	logger.Info("waypoint started", "trustDomain", td.Name())

	<-ctx.Done()
	draining.Store(true)
	px.Drain()
	logger.Info("draining", "delay", cfg.DrainDelay, "timeout", cfg.DrainTimeout, "open", px.Open())
	if cfg.DrainDelay > 0 {
		time.Sleep(cfg.DrainDelay)
	}
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	if qs != nil {
		go qs.Shutdown(dctx)
	}
	hs.Shutdown(dctx)
	cancel()
	px.Close()
	for _, s := range servers {
		s.Close()
	}
	logger.Info("waypoint stopped")
	return nil
}

type endpoint struct {
	name, addr string
	h          http.Handler
}

func serveAdmin(logger *slog.Logger, eps []endpoint) ([]*http.Server, error) {
	var out []*http.Server
	for _, e := range eps {
		if e.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", e.addr)
		if err != nil {
			for _, s := range out {
				s.Close()
			}
			return nil, fmt.Errorf("%s endpoint: %w", e.name, err)
		}
		s := &http.Server{Handler: e.h, ReadHeaderTimeout: 10 * time.Second}
		out = append(out, s)
		go s.Serve(ln)
		logger.Info("serving "+e.name, "addr", ln.Addr().String())
	}
	return out, nil
}

// configSource is where configuration and the certificate come from.
type configSource struct {
	run     func(context.Context) error
	status  func() map[string]any
	certs   *identity.Manager
	bundles *identity.Bundles
}

func newSource(cfg Config, td spiffeid.TrustDomain, self spiffeid.ID, mesh *meshstate.Store, wp *source.Waypoint, logger *slog.Logger) (*configSource, error) {
	switch {
	case cfg.LocalConfig != "":
		return newLocalSource(cfg, td, mesh, wp, logger)
	case cfg.XDS != "":
		return newXDSSource(cfg, td, self, mesh, wp, logger)
	}
	return nil, errors.New("no configuration source: set a local config file or an xDS address")
}

func newLocalSource(cfg Config, td spiffeid.TrustDomain, mesh *meshstate.Store, wp *source.Waypoint, logger *slog.Logger) (*configSource, error) {
	if cfg.CACert == "" || cfg.CAKey == "" {
		return nil, errors.New("local mode needs a CA certificate and key to sign the waypoint's certificate")
	}
	ca, err := identity.NewCA(identity.CAOptions{TrustDomain: td, CertFile: cfg.CACert, KeyFile: cfg.CAKey, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	file := localconfig.NewFuncSource(cfg.LocalConfig, func(data []byte) error {
		return source.ApplyFile(data, mesh, wp)
	}, wp.Version, logger)
	if err := file.Load(); err != nil {
		return nil, err
	}
	return &configSource{
		run: file.Run,
		status: func() map[string]any {
			st := map[string]any{"source": "local", "path": cfg.LocalConfig}
			if err := file.LastError(); err != nil {
				st["lastError"] = err.Error()
			}
			return st
		},
		certs:   identity.NewManager(identity.LocalCAClient{CA: ca}, identity.ManagerOptions{TTL: cfg.CertTTL, Logger: logger}),
		bundles: identity.NewBundles(ca.Bundle()),
	}, nil
}

// newXDSSource takes the waypoint's resource and the mesh's addresses
// from the control plane, and the waypoint's own certificate from its CA.
func newXDSSource(cfg Config, td spiffeid.TrustDomain, self spiffeid.ID, mesh *meshstate.Store, wp *source.Waypoint, logger *slog.Logger) (*configSource, error) {
	roots, err := identity.ReadRootsFile(cfg.XDSRootCert)
	if err != nil {
		return nil, fmt.Errorf("mesh %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	addrs := xdssource.New(mesh, xdssource.WithLogger(logger))
	var subs []xds.Subscription
	for _, s := range addrs.Subscriptions() {
		if s.TypeURL == xds.AddressType {
			subs = append(subs, s)
		}
	}
	subs = append(subs, wp.Subscription())
	client, err := xds.NewClient(xds.ClientOptions{
		Address: cfg.XDS, Subscriptions: subs,
		NodeID: "waypoint~" + cfg.Waypoint, NodeMetadata: map[string]string{"WAYPOINT": cfg.Waypoint, "CLUSTER_ID": cfg.ClusterID},
		TokenFile: cfg.TokenFile, Roots: pool, ServerName: cfg.XDSServerName, Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("xDS client: %w", err)
	}
	caAddr := cfg.CAAddress
	if caAddr == "" {
		caAddr = cfg.XDS
	}
	ca, err := caclient.New(caclient.Options{Address: caAddr, ServerName: cfg.XDSServerName, Roots: pool, TokenFile: cfg.TokenFile})
	if err != nil {
		return nil, fmt.Errorf("CA client: %w", err)
	}
	return &configSource{
		run: func(ctx context.Context) error {
			go addrs.Run(ctx, client.Ready())
			err := client.Run(ctx)
			ca.Close()
			return err
		},
		status: func() map[string]any {
			return map[string]any{"source": "xds", "address": cfg.XDS, "ca": caAddr, "loaded": mesh.IsLoaded()}
		},
		certs:   identity.NewManager(ca, identity.ManagerOptions{TTL: cfg.CertTTL, Logger: logger}),
		bundles: identity.NewBundles(x509bundle.FromX509Authorities(td, roots)),
	}, nil
}
