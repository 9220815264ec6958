// Package app wires istiod-lite together: the index and its reconcilers,
// the xDS and CA gRPC services on one TLS port, the waypoint deployer, the
// root certificate publisher, leader election, /metrics and /readyz.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/go-logr/logr"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/ca"
	"github.com/skiffmesh/skiff/istiod-lite/internal/controllers"
	"github.com/skiffmesh/skiff/istiod-lite/internal/deployer"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/istiod-lite/internal/xdsserver"
	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/apis"
	"github.com/skiffmesh/skiff/pkg/exepages"
	"github.com/skiffmesh/skiff/pkg/identity/caclient/caapi"
)

// Config is everything istiod-lite needs to run.
type Config struct {
	Rest *rest.Config
	// Namespace istiod-lite runs in; it holds the CA secrets and the
	// leader-election lease (default istio-system).
	Namespace   string
	TrustDomain string
	// GRPCAddr serves xDS and the CA over TLS (default :15012).
	GRPCAddr string
	// HTTPAddr serves /metrics, /readyz and /healthz (default :15014).
	HTTPAddr string
	// DNSNames of the serving certificate (clients verify one of them).
	DNSNames []string
	// Audiences accepted in client tokens (default istio-ca).
	Audiences     []string
	NodeAccounts  []string
	TokenCacheTTL time.Duration
	// XDSSendTimeout closes an xDS stream whose client takes no response
	// for that long (default 30s); XDSMaxStreamsPerCaller bounds the xDS
	// streams of one pod (or service account without a pod) (default 8).
	XDSSendTimeout         time.Duration
	XDSMaxStreamsPerCaller int

	LeaderElection bool
	Debounce       time.Duration
	MaxDelay       time.Duration
	CertTTL        time.Duration
	MaxCertTTL     time.Duration
	// GatewayAPI and Policies enable watching those CRDs (they must be
	// installed).
	GatewayAPI bool
	Policies   bool
	Deployer   deployer.Options
	// DrainDelay is how long istiod-lite serves on, not ready, once ctx is
	// done, before it closes its clients' streams: by then the Service has
	// withdrawn its endpoint, so the clients reconnect to another replica
	// (not, in vain, to this one's address once it is gone) and keep
	// receiving pushes meanwhile.
	DrainDelay time.Duration
	// ShutdownGrace bounds graceful shutdown of the servers.
	ShutdownGrace time.Duration
	Logger        *slog.Logger

	// KubeQPS and KubeBurst bound istiod-lite's requests to the apiserver
	// (TokenReviews, status and deployment writes); defaults 100 and 200.
	KubeQPS   float32
	KubeBurst int

	// Profiling serves net/http/pprof under /debug/pprof/ on HTTPAddr.
	Profiling bool
	// PageRelease is how often the pages of istiod-lite's binary it is
	// not using are given back (pkg/exepages); 0 never.
	PageRelease time.Duration

	// Ready, if set, receives the gRPC listener's address once serving.
	Ready func(grpcAddr, httpAddr string)
}

func (c *Config) defaults() {
	if c.Namespace == "" {
		c.Namespace = "istio-system"
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "cluster.local"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = ":15012"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":15014"
	}
	if len(c.DNSNames) == 0 {
		c.DNSNames = []string{"istiod." + c.Namespace + ".svc", "istiod-lite." + c.Namespace + ".svc", "istiod"}
	}
	if c.Audiences == nil {
		c.Audiences = []string{"istio-ca"}
	}
	if c.TokenCacheTTL == 0 {
		c.TokenCacheTTL = time.Minute
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.KubeQPS == 0 {
		c.KubeQPS = 100
	}
	if c.KubeBurst == 0 {
		c.KubeBurst = 200
	}
}

// maxConcurrentStreams bounds the streams of one gRPC connection (HTTP/2's
// SETTINGS_MAX_CONCURRENT_STREAMS, the minimum the specification
// recommends).
const maxConcurrentStreams = 100

// byObject configures the manager's cache per kind: pods trimmed to what
// the index reads; ConfigMaps limited to the ones istiod-lite publishes.
func byObject() map[client.Object]cache.ByObject {
	cm, cmOpts := ca.CacheByObject()
	return map[client.Object]cache.ByObject{&corev1.Pod{}: {Transform: controllers.TrimPod}, cm: cmOpts}
}

// Run runs istiod-lite until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	logger := cfg.Logger
	cfg.Rest = rest.CopyConfig(cfg.Rest)
	cfg.Rest.QPS, cfg.Rest.Burst = cfg.KubeQPS, cfg.KubeBurst
	log.SetLogger(logr.FromSlogHandler(logger.Handler()))
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain: %w", err)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := apis.AddToScheme(scheme); err != nil {
		return err
	}

	// Metrics: OpenTelemetry instruments, exported in Prometheus format.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Names as written, as Istio's istiod exports them (pilot_xds_pushes,
	// pilot_total_xds_rejects, citadel_server_csr_count): dashboards and
	// alerts written for Istio find them.
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithoutSuffixes))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.WithoutCancel(ctx))
	meter := mp.Meter("istiod-lite")

	direct, err := client.New(cfg.Rest, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	material, err := ca.LoadOrCreate(ctx, direct, cfg.Namespace, td, cfg.CertTTL, cfg.MaxCertTTL)
	if err != nil {
		return err
	}
	logger.Info("certificate authority ready", "root", material.Source, "trust_domain", td.Name())
	// Renewed at half-life, so a long-running istiod never serves an
	// expired certificate.
	serving, err := material.NewServingCertificates(cfg.DNSNames, spiffeid.ID{}, 365*24*time.Hour, logger.With("component", "ca"))
	if err != nil {
		return err
	}

	clientset, err := kubernetes.NewForConfig(cfg.Rest)
	if err != nil {
		return err
	}
	authn := auth.NewTokenReviewer(clientset.AuthenticationV1().TokenReviews(), cfg.Audiences, cfg.TokenCacheTTL)

	xdsSrv, err := xdsserver.New(xdsserver.Options{
		Auth: authn, Logger: logger.With("component", "xds"), Meter: meter,
		SendTimeout: cfg.XDSSendTimeout, MaxStreamsPerCaller: cfg.XDSMaxStreamsPerCaller,
		NodeAccounts: cfg.NodeAccounts,
	})
	if err != nil {
		return err
	}
	ix := index.New(index.Options{
		TrustDomain: cfg.TrustDomain, RootNamespace: cfg.Namespace,
		Debounce: cfg.Debounce, MaxDelay: cfg.MaxDelay, Logger: logger.With("component", "index"),
	}, xdsSrv)

	mgr, err := ctrl.NewManager(cfg.Rest, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                cfg.LeaderElection,
		LeaderElectionID:              "istiod-lite-leader",
		LeaderElectionNamespace:       cfg.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         byObject(),
		},
		GracefulShutdownTimeout: &cfg.ShutdownGrace,
		// Run may be called more than once in a process (tests, benchmarks);
		// controller names are otherwise required to be process-unique.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := controllers.Setup(mgr, ix, controllers.Options{GatewayAPI: cfg.GatewayAPI, Policies: cfg.Policies}); err != nil {
		return err
	}
	if cfg.Policies && cfg.GatewayAPI {
		if err := controllers.SetupPolicyStatus(mgr); err != nil {
			return err
		}
	}
	if err := ca.SetupRootPublisher(mgr, material.RootPEM); err != nil {
		return err
	}
	if cfg.GatewayAPI {
		cfg.Deployer.RateLimitPolicies = cfg.Policies
		if err := deployer.Setup(mgr, cfg.Deployer); err != nil {
			return err
		}
	}
	caSrv, err := ca.NewServer(ca.ServerOptions{
		CA: material.CA, Auth: authn, Nodes: ix, Pods: mgr.GetAPIReader(),
		NodeAccounts: cfg.NodeAccounts, Logger: logger.With("component", "ca"), Meter: meter,
	})
	if err != nil {
		return err
	}

	grpcSrv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{GetCertificate: serving.GetCertificate, MinVersion: tls.VersionTLS12})),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Per connection: a ztunnel holds one xDS stream and a burst of
		// certificate requests (which wait for room client-side).
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.ForceServerCodecV2(xdsserver.Codec{}),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(grpcSrv, xdsSrv)
	caapi.RegisterIstioCertificateServiceServer(grpcSrv, caSrv)

	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.GRPCAddr, err)
	}
	defer grpcLis.Close()
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: waiting for the cluster state", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if cfg.Profiling {
		admin.HandleProfiling(mux)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// The controllers and servers run on through the drain delay.
	stop := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() {
		if err := mgr.Start(ctx); err != nil {
			errs <- fmt.Errorf("manager: %w", err)
		}
	})
	wg.Go(func() { ix.Run(ctx) })
	if cfg.PageRelease > 0 {
		wg.Go(func() { exepages.Run(ctx, cfg.PageRelease, logger) })
	}
	wg.Go(func() {
		if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
		}
	})
	wg.Go(func() {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return
		}
		// Serve only a complete state: a client that resumes against a
		// partial one would be told that resources it holds were removed.
		if err := controllers.Prime(ctx, mgr.GetCache(), ix, controllers.Options{GatewayAPI: cfg.GatewayAPI, Policies: cfg.Policies}); err != nil {
			errs <- err
			return
		}
		ix.Flush()
		ready.Store(true)
		logger.Info("istiod-lite ready", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String())
		if err := grpcSrv.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errs <- fmt.Errorf("grpc: %w", err)
		}
	})
	if cfg.Ready != nil {
		cfg.Ready(grpcLis.Addr().String(), httpLis.Addr().String())
	}

	var runErr error
	select {
	case <-stop.Done():
	case runErr = <-errs:
	}
	ready.Store(false)
	if runErr == nil && cfg.DrainDelay > 0 {
		logger.Info("draining: not ready, serving on before closing streams", "delay", cfg.DrainDelay)
		select {
		case <-time.After(cfg.DrainDelay):
		case runErr = <-errs:
		}
	}
	logger.Info("shutting down")
	cancel()
	xdsSrv.Shutdown()
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.ShutdownGrace):
		grpcSrv.Stop()
	}
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer scancel()
	_ = httpSrv.Shutdown(sctx)
	wg.Wait()
	return runErr
}
