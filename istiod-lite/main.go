// Command istiod-lite is Skiff's control plane: it watches the cluster,
// signs workload certificates and pushes configuration to ztunnels and
// waypoints over delta xDS. Every flag can also be set with an environment
// variable (the flag name upper-cased, dashes as underscores, prefixed with
// ISTIOD_), which the flag overrides.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/skiffmesh/skiff/istiod-lite/internal/app"
	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/envflag"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "istiod-lite:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("istiod-lite", flag.ContinueOnError)
	var (
		cfg       app.Config
		dns       = fs.String("dns-names", "", "comma-separated DNS names of the serving certificate (default istiod.<namespace>.svc,...)")
		audiences = fs.String("token-audiences", "istio-ca", "comma-separated audiences accepted in client tokens")
		nodeAccts = fs.String("node-accounts", "istio-system/ztunnel", "comma-separated <ns>/<sa> of node proxies: they receive every address and policy, and may request other identities on their node")
		logLevel  = fs.String("log-level", "info", "debug, info, warn or error")
		pull      = fs.String("waypoint-image-pull-policy", "IfNotPresent", "waypoint image pull policy")
		kubecfg   = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster)")
	)
	fs.StringVar(&cfg.Namespace, "namespace", "istio-system", "namespace istiod-lite runs in (CA secrets, leader lease)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", ":15012", "xDS and CA gRPC (TLS) listen address")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", ":15014", "/metrics, /readyz and /healthz listen address")
	fs.BoolVar(&cfg.Profiling, "profiling", false, "serve /debug/pprof/ on the HTTP address")
	fs.DurationVar(&cfg.PageRelease, "binary-page-release", time.Minute, "how often the pages of istiod-lite's own binary that it is not using are unmapped, and its free heap returned, so that its RSS counts what it uses; 0 never")
	fs.BoolVar(&cfg.LeaderElection, "leader-elect", true, "elect a leader for status and deployment writes")
	fs.DurationVar(&cfg.Debounce, "debounce", 20*time.Millisecond, "quiet period after a change before a push")
	fs.DurationVar(&cfg.MaxDelay, "debounce-max", 100*time.Millisecond, "longest a push waits under constant change")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", 24*time.Hour, "default workload certificate lifetime")
	fs.DurationVar(&cfg.MaxCertTTL, "max-cert-ttl", 90*24*time.Hour, "maximum workload certificate lifetime")
	fs.BoolVar(&cfg.GatewayAPI, "gateway-api", true, "watch Gateway API resources and deploy waypoints (CRDs must be installed)")
	fs.BoolVar(&cfg.Policies, "policies", true, "watch AuthorizationPolicy and RateLimitPolicy (CRDs must be installed)")
	fs.DurationVar(&cfg.DrainDelay, "drain-delay", 5*time.Second, "after SIGTERM, serve on this long, not ready, before closing xDS streams, so that clients reconnect to another replica once the Service has withdrawn this one")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 10*time.Second, "graceful shutdown deadline")
	fs.DurationVar(&cfg.XDSSendTimeout, "xds-send-timeout", 30*time.Second, "close an xDS stream whose client takes no response for this long")
	fs.IntVar(&cfg.XDSMaxStreamsPerCaller, "xds-max-streams-per-caller", 8, "xDS streams open at once per pod (or per service account for tokens not bound to a pod)")
	fs.StringVar(&cfg.Deployer.Image, "waypoint-image", "skiff/waypoint:latest", "waypoint container image")
	fs.StringVar(&cfg.Deployer.XDSAddress, "waypoint-xds-address", "istiod.istio-system.svc:15012", "istiod-lite address given to waypoints")
	fs.StringVar(&cfg.Deployer.CPURequest, "waypoint-cpu-request", "100m", "waypoint CPU request")
	fs.StringVar(&cfg.Deployer.MemoryRequest, "waypoint-memory-request", "64Mi", "waypoint memory request")
	fs.StringVar(&cfg.Deployer.CPULimit, "waypoint-cpu-limit", "", "waypoint CPU limit")
	fs.StringVar(&cfg.Deployer.MemoryLimit, "waypoint-memory-limit", "512Mi", "waypoint memory limit")
	fs.StringVar(&cfg.Deployer.OTLPEndpoint, "waypoint-otlp-endpoint", "", "OpenTelemetry collector (host:port, OTLP/gRPC) that waypoints send traces to; empty: no tracing")
	fs.BoolVar(&cfg.Deployer.OTLPInsecure, "waypoint-otlp-insecure", false, "waypoints send traces without TLS (an in-cluster collector)")
	fs.StringVar(&cfg.Deployer.HBONETransport, "waypoint-hbone-transport", "auto", "waypoints' HBONE transport: auto (QUIC on UDP 15008 beside TCP, advertised, and dialed to peers that advertise it), tcp, or quic (also tried toward peers that advertise nothing)")
	fs.StringVar(&cfg.Deployer.RateLimitService, "waypoint-rate-limit-service", "", "Envoy rate-limit service (host:port, gRPC) that waypoints ask for global rate limits; a Gateway's parameters may name another")
	var qps float64
	fs.Float64Var(&qps, "kube-qps", 100, "requests per second to the apiserver")
	fs.IntVar(&cfg.KubeBurst, "kube-burst", 200, "request burst to the apiserver")
	var replicas int
	fs.IntVar(&replicas, "waypoint-replicas", 1, "waypoint replicas")

	// Environment variables (ISTIOD_<FLAG>) first, so that flags override them.
	if err := envflag.ParsePrefixed(fs, os.Args[1:], "ISTIOD_"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	admin.SampleHeapWhenServed(cfg.Profiling)
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.DNSNames = split(*dns)
	cfg.Audiences = split(*audiences)
	cfg.NodeAccounts = split(*nodeAccts)
	cfg.Deployer.ImagePullPolicy = corev1.PullPolicy(*pull)
	cfg.Deployer.Replicas = int32(replicas)
	cfg.KubeQPS = float32(qps)
	if cfg.PageRelease < 0 {
		return fmt.Errorf("binary page release %s: want a positive interval, or 0", cfg.PageRelease)
	}
	cfg.Deployer.TrustDomain = cfg.TrustDomain

	var rest *rest.Config
	var err error
	if *kubecfg != "" {
		rest, err = clientcmd.BuildConfigFromFlags("", *kubecfg)
	} else {
		rest, err = ctrl.GetConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	cfg.Rest = rest
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return app.Run(ctx, cfg)
}

func split(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
