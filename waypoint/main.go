// Command waypoint is Skiff's L7 proxy: one per namespace (or service
// account), deployed by istiod-lite from a Gateway of class istio-waypoint.
// It receives HBONE tunnels from ztunnels on port 15008, applies the
// HTTPRoutes, GRPCRoutes and AuthorizationPolicies of the services bound to
// it, and carries each request to an endpoint over HBONE. Every flag can
// also be set by the environment variable named in its help text.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/envflag"
	"github.com/skiffmesh/skiff/pkg/hbone"
	"github.com/skiffmesh/skiff/waypoint/internal/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg app.Config
	fs := envflag.New("waypoint")
	fs.StringVar(&cfg.Waypoint, "waypoint", "WAYPOINT", "", "<namespace>/<name> of the waypoint's Gateway (required)")
	fs.StringVar(&cfg.ServiceAccount, "service-account", "SERVICE_ACCOUNT", "", "the waypoint's service account (default: the Gateway's name)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "TRUST_DOMAIN", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&cfg.RootNamespace, "root-namespace", "ROOT_NAMESPACE", "istio-system", "namespace of mesh-wide configuration")
	fs.StringVar(&cfg.ClusterID, "cluster-id", "CLUSTER_ID", "Kubernetes", "cluster name for metrics")
	fs.StringVar(&cfg.LocalConfig, "local-config", "LOCAL_CONFIG", "", "YAML file with workloads, services and the waypoint resource (local mode; re-read on change)")
	fs.StringVar(&cfg.CACert, "ca-cert", "CA_CERT", "", "local mode: CA certificate (PEM) that signs the waypoint's certificate")
	fs.StringVar(&cfg.CAKey, "ca-key", "CA_KEY", "", "local mode: CA private key (PEM)")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", "CERT_TTL", 24*time.Hour, "certificate lifetime asked for")
	fs.StringVar(&cfg.XDS, "xds-address", "XDS_ADDRESS", "", "control plane host:port (xDS mode)")
	fs.StringVar(&cfg.CAAddress, "ca-address", "CA_ADDRESS", "", "certificate authority host:port (default: the xDS address)")
	fs.StringVar(&cfg.TokenFile, "token-file", "TOKEN_FILE", "/var/run/secrets/tokens/istio-token", "service-account token for the control plane and CA")
	fs.StringVar(&cfg.XDSRootCert, "xds-root-cert", "XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem", "roots that verify the control plane, the CA and mesh peers")
	fs.StringVar(&cfg.XDSServerName, "xds-server-name", "XDS_SERVER_NAME", "", "name the control plane's certificate is checked for (default istiod.istio-system.svc)")
	fs.StringVar(&cfg.HBONEAddr, "hbone-addr", "HBONE_ADDR", ":15008", "HBONE listener")
	var transport string
	fs.StringVar(&transport, "hbone-transport", "HBONE_TRANSPORT", string(hbone.TransportAuto), "auto: serve HBONE over QUIC (UDP, the HBONE port) beside TCP and advertise it, dial QUIC to endpoints that advertise it; tcp: TCP only; quic: also try QUIC toward endpoints that advertise nothing. QUIC always falls back to TCP")
	var pingInterval, pingTimeout time.Duration
	fs.DurationVar(&pingInterval, "hbone-ping-interval", "HBONE_PING_INTERVAL", hbone.DefaultPingInterval, "an HBONE connection over TCP that has read nothing for this long sends an HTTP/2 PING; 0 never (a peer that vanished without closing then holds it until TCP gives up, about 15 minutes)")
	fs.DurationVar(&pingTimeout, "hbone-ping-timeout", "HBONE_PING_TIMEOUT", hbone.DefaultPingTimeout, "after the PING, how long the connection waits for any frame before it closes, failing its tunnels")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "ADMIN_ADDR", "127.0.0.1:15000", "admin endpoint (/config_dump, /debug/pprof, /logging)")
	var heapRate int
	fs.IntVar(&heapRate, "heap-profile-rate", "HEAP_PROFILE_RATE", 0, "bytes allocated between samples of /debug/pprof/heap, on average (Go's default is 524288); 0, the default, samples nothing: each sampled call stack stays resident")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "METRICS_ADDR", ":15020", "Prometheus /metrics")
	fs.StringVar(&cfg.ReadinessAddr, "readiness-addr", "READINESS_ADDR", ":15021", "/healthz/ready")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", "DRAIN_DELAY", 5*time.Second, "after SIGTERM, keep accepting tunnels this long while connections drain, until every ztunnel has heard that this waypoint is going away (Istio's terminationDrainDuration)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", "DRAIN_TIMEOUT", 20*time.Second, "how long requests in flight may finish after SIGTERM")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", "CONNECT_TIMEOUT", 10*time.Second, "timeout to open a tunnel to an endpoint")
	fs.DurationVar(&cfg.DetectTimeout, "protocol-detect-timeout", "PROTOCOL_DETECT_TIMEOUT", 200*time.Millisecond, "wait for a client's first bytes on ports without a declared protocol; silence means a server-first protocol, passed through as TCP")
	fs.Float64Var(&cfg.RetryBudgetRatio, "retry-budget-ratio", "RETRY_BUDGET_RATIO", 0.2, "retries may add at most this fraction of the requests to a service")
	fs.IntVar(&cfg.RetryBudgetMinPerSecond, "retry-budget-min-per-second", "RETRY_BUDGET_MIN_PER_SECOND", 10, "retries per second always allowed, whatever the ratio")
	fs.IntVar(&cfg.Outlier.Consecutive, "outlier-consecutive-failures", "OUTLIER_CONSECUTIVE_FAILURES", 5, "consecutive connect failures or 5xx that eject an endpoint")
	fs.DurationVar(&cfg.Outlier.BaseEjection, "outlier-base-ejection", "OUTLIER_BASE_EJECTION", 30*time.Second, "first ejection time; each further ejection of an endpoint lasts longer")
	fs.IntVar(&cfg.Outlier.MaxEjectionPercent, "outlier-max-ejection-percent", "OUTLIER_MAX_EJECTION_PERCENT", 50, "never eject more than this share of a service's endpoints")
	fs.DurationVar(&cfg.Outlier.MaxEjection, "outlier-max-ejection", "OUTLIER_MAX_EJECTION", 300*time.Second, "longest ejection")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "OTLP_ENDPOINT", "", "OpenTelemetry collector (host:port, OTLP/gRPC) for traces; empty: no tracing")
	fs.BoolVar(&cfg.OTLPInsecure, "otlp-insecure", "OTLP_INSECURE", false, "send traces without TLS")
	fs.Float64Var(&cfg.TraceSampleRatio, "trace-sample-ratio", "TRACE_SAMPLE_RATIO", 0.01, "share of requests traced when the caller did not decide (a sampled traceparent is always followed)")
	fs.BoolVar(&cfg.AccessLog, "access-log", "ACCESS_LOG", true, "log one line per request and connection")
	fs.StringVar(&cfg.RateLimitService, "rate-limit-service", "RATE_LIMIT_SERVICE", "", "Envoy rate-limit service (host:port, gRPC, e.g. envoyproxy/ratelimit) for RateLimitPolicies of mode Global")
	fs.StringVar(&cfg.RateLimitDomain, "rate-limit-domain", "RATE_LIMIT_DOMAIN", "skiff", "domain of the descriptors sent to the rate-limit service")
	fs.DurationVar(&cfg.RateLimitTimeout, "rate-limit-timeout", "RATE_LIMIT_TIMEOUT", 20*time.Millisecond, "how long a request waits for the rate-limit service before its policy's failureMode decides")
	fs.IntVar(&cfg.RateLimitMaxKeys, "rate-limit-max-keys", "RATE_LIMIT_MAX_KEYS", 10000, "buckets kept per local rate limit; the least recently used is dropped beyond")
	fs.DurationVar(&cfg.PageRelease, "binary-page-release", "BINARY_PAGE_RELEASE", time.Minute, "how often the pages of the waypoint's own binary that it is not using are unmapped, and its free heap returned, so that its RSS counts what it uses; 0 never")
	var workers int
	fs.IntVar(&workers, "worker-threads", "WAYPOINT_WORKER_THREADS", 0, "OS threads running Go code at once (GOMAXPROCS); 0 leaves the Go default")
	var logLevel string
	var logJSON bool
	fs.StringVar(&logLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	fs.BoolVar(&logJSON, "log-json", "LOG_JSON", false, "log as JSON")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if err := admin.SetHeapProfileRate(heapRate); err != nil {
		return err
	}
	mode, err := hbone.ParseTransportMode(transport)
	if err != nil {
		return err
	}
	cfg.Transport = mode
	if cfg.PingInterval, cfg.PingTimeout, err = hbone.PingFlags(pingInterval, pingTimeout); err != nil {
		return err
	}
	if cfg.Waypoint == "" {
		return fmt.Errorf("--waypoint=<namespace>/<name> is required")
	}
	if cfg.PageRelease < 0 {
		return fmt.Errorf("binary page release %s: want a positive interval, or 0", cfg.PageRelease)
	}
	if workers < 0 {
		return fmt.Errorf("worker threads %d: want 0 or more", workers)
	}
	if workers > 0 {
		runtime.GOMAXPROCS(workers)
	}
	if os.Getenv("GOGC") == "" {
		// The live heap is small (configuration, connections) and the
		// allocation rate high: collecting at 5x the live heap rather than
		// 2x costs a few MB and saves about 8% of the CPU per request.
		// GOGC and GOMEMLIMIT in the environment still decide.
		debug.SetGCPercent(400)
	}
	logger, level, err := admin.NewLogger(os.Stderr, logLevel, logJSON)
	if err != nil {
		return err
	}
	cfg.LogLevel = level
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return app.Run(ctx, cfg, logger)
}
