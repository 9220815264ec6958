// Command ztunnel is Skiff's per-node L4 proxy: it carries pod traffic over
// HBONE (mutual TLS), applies L4 authorization and reports Istio's TCP
// metrics. Every flag can also be set by the environment variable named in
// its help text.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/zds"
	"github.com/skiffmesh/skiff/ztunnel/internal/app"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg app.Config
	var env envErrors
	envInt := env.int
	envBool := env.bool
	envDuration := env.duration
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	str := func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, envOr(env, def), usage+" (env "+env+")")
	}
	str(&cfg.Mode, "mode", "ZTUNNEL_MODE", app.ModeInPod, "inpod: listeners inside each pod, handed over by the node agent; shared: listeners in ztunnel's own network namespace")
	str(&cfg.NodeName, "node-name", "NODE_NAME", "", "this node's name; shared mode serves only workloads on it")
	str(&cfg.TrustDomain, "trust-domain", "TRUST_DOMAIN", "cluster.local", "SPIFFE trust domain")
	str(&cfg.RootNamespace, "root-namespace", "ROOT_NAMESPACE", "istio-system", "namespace whose policies apply mesh-wide")
	str(&cfg.ClusterID, "cluster-id", "CLUSTER_ID", "Kubernetes", "cluster name for metrics")
	str(&cfg.LocalConfig, "local-config", "LOCAL_XDS_PATH", "", "YAML file with workloads, services and policies (local mode; re-read on change)")
	str(&cfg.CACert, "ca-cert", "CA_CERT", "", "local mode: CA certificate (PEM) that signs workload certificates")
	str(&cfg.CAKey, "ca-key", "CA_KEY", "", "local mode: CA private key (PEM)")
	str(&cfg.XDS, "xds-address", "XDS_ADDRESS", "", "control plane host:port (xDS mode)")
	str(&cfg.CAAddress, "ca-address", "CA_ADDRESS", "", "certificate authority host:port (default: the xDS address)")
	str(&cfg.TokenFile, "token-file", "TOKEN_FILE", "/var/run/secrets/tokens/istio-token", "service-account token for the control plane and CA")
	str(&cfg.XDSRootCert, "xds-root-cert", "XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem", "roots that verify the control plane and CA")
	str(&cfg.XDSServerName, "xds-server-name", "XDS_SERVER_NAME", "", "name the control plane's and CA's certificates are checked for (default istiod.istio-system.svc)")
	str(&cfg.ZDSPath, "zds-socket", "ZDS_SOCKET", zds.DefaultPath, "node agent socket (in-pod mode)")
	str(&cfg.Outbound, "outbound-addr", "OUTBOUND_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.OutboundPort), "shared mode: outbound listener")
	str(&cfg.Plaintext, "inbound-plaintext-addr", "INBOUND_PLAINTEXT_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.InboundPlaintextPort), "shared mode: inbound plaintext listener")
	str(&cfg.HBONE, "hbone-addr", "HBONE_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.InboundHBONEPort), "shared mode: inbound HBONE listener")
	str(&cfg.SOCKS5, "socks5-addr", "SOCKS5_ADDR", "127.0.0.1:15080", "shared mode: SOCKS5 listener (empty disables)")
	str(&cfg.AdminAddr, "admin-addr", "ADMIN_ADDR", "127.0.0.1:15000", "admin endpoint (/config_dump, /debug/pprof, /logging)")
	str(&cfg.MetricsAddr, "metrics-addr", "METRICS_ADDR", ":15020", "Prometheus /metrics")
	str(&cfg.ReadinessAddr, "readiness-addr", "READINESS_ADDR", ":15021", "/healthz/ready")
	fs.IntVar(&cfg.SOCKS5Port, "socks5-port", envInt("SOCKS5_PORT", 0), "in-pod mode: SOCKS5 port (15080) on each pod's loopback; 0, the default, disables it (env SOCKS5_PORT)")
	workers := fs.Int("worker-threads", envInt("ZTUNNEL_WORKER_THREADS", 0), "OS threads running Go code at once (GOMAXPROCS); 0 leaves the Go default, one per CPU (env ZTUNNEL_WORKER_THREADS)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", envDuration("DRAIN_TIMEOUT", 5*time.Second), "how long open connections may finish after SIGTERM (env DRAIN_TIMEOUT)")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", envDuration("CERT_TTL", 24*time.Hour), "workload certificate lifetime (env CERT_TTL)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", envDuration("CONNECT_TIMEOUT", 10*time.Second), "upstream connect timeout (env CONNECT_TIMEOUT)")
	fs.BoolVar(&cfg.QUIC, "hbone-quic", envBool("HBONE_QUIC", false), "also serve and try HBONE over QUIC, falling back to TCP (env HBONE_QUIC)")
	logLevel := fs.String("log-level", envOr("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	logJSON := fs.Bool("log-json", envBool("LOG_JSON", false), "log as JSON (env LOG_JSON)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if err := errors.Join(env...); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *workers < 0 {
		return fmt.Errorf("worker threads %d: want 0 or more", *workers)
	}
	if *workers > 0 {
		runtime.GOMAXPROCS(*workers)
	}
	cfg.LogLevel = new(slog.LevelVar)
	var l slog.Level
	if err := l.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", *logLevel, err)
	}
	cfg.LogLevel.Set(l)
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if *logJSON {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return app.Run(ctx, cfg, slog.New(h))
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// envErrors collects malformed environment variables, reported after the
// flags are parsed.
type envErrors []error

func (e *envErrors) int(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		*e = append(*e, fmt.Errorf("%s=%q: not an integer", name, v))
		return def
	}
	return n
}

func (e *envErrors) bool(name string, def bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		*e = append(*e, fmt.Errorf("%s=%q: not a boolean", name, v))
		return def
	}
	return b
}

func (e *envErrors) duration(name string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		*e = append(*e, fmt.Errorf("%s=%q: not a duration (like 5s)", name, v))
		return def
	}
	return d
}
