// Command ztunnel is Skiff's per-node L4 proxy: it carries pod traffic over
// HBONE (mutual TLS), applies L4 authorization and reports Istio's TCP
// metrics. Every flag can also be set by the environment variable named in
// its help text.
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
	fs := envflag.New("ztunnel")
	fs.StringVar(&cfg.Mode, "mode", "ZTUNNEL_MODE", app.ModeInPod, "inpod: listeners inside each pod, handed over by the node agent; shared: listeners in ztunnel's own network namespace")
	fs.StringVar(&cfg.NodeName, "node-name", "NODE_NAME", "", "this node's name; shared mode serves only workloads on it")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "TRUST_DOMAIN", "cluster.local", "SPIFFE trust domain")
	fs.StringVar(&cfg.RootNamespace, "root-namespace", "ROOT_NAMESPACE", "istio-system", "namespace whose policies apply mesh-wide")
	fs.StringVar(&cfg.ClusterID, "cluster-id", "CLUSTER_ID", "Kubernetes", "cluster name for metrics")
	fs.StringVar(&cfg.LocalConfig, "local-config", "LOCAL_XDS_PATH", "", "YAML file with workloads, services and policies (local mode; re-read on change)")
	fs.StringVar(&cfg.CACert, "ca-cert", "CA_CERT", "", "local mode: CA certificate (PEM) that signs workload certificates")
	fs.StringVar(&cfg.CAKey, "ca-key", "CA_KEY", "", "local mode: CA private key (PEM)")
	fs.StringVar(&cfg.XDS, "xds-address", "XDS_ADDRESS", "", "control plane host:port (xDS mode)")
	fs.StringVar(&cfg.CAAddress, "ca-address", "CA_ADDRESS", "", "certificate authority host:port (default: the xDS address)")
	fs.StringVar(&cfg.TokenFile, "token-file", "TOKEN_FILE", "/var/run/secrets/tokens/istio-token", "service-account token for the control plane and CA")
	fs.StringVar(&cfg.XDSRootCert, "xds-root-cert", "XDS_ROOT_CA", "/var/run/secrets/istio/root-cert.pem", "roots that verify the control plane and CA")
	fs.StringVar(&cfg.XDSServerName, "xds-server-name", "XDS_SERVER_NAME", "", "name the control plane's and CA's certificates are checked for (default istiod.istio-system.svc)")
	fs.StringVar(&cfg.ZDSPath, "zds-socket", "ZDS_SOCKET", zds.DefaultPath, "node agent socket (in-pod mode)")
	fs.StringVar(&cfg.Outbound, "outbound-addr", "OUTBOUND_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.OutboundPort), "shared mode: outbound listener")
	fs.StringVar(&cfg.Plaintext, "inbound-plaintext-addr", "INBOUND_PLAINTEXT_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.InboundPlaintextPort), "shared mode: inbound plaintext listener")
	fs.StringVar(&cfg.HBONE, "hbone-addr", "HBONE_ADDR", fmt.Sprintf("0.0.0.0:%d", inpod.InboundHBONEPort), "shared mode: inbound HBONE listener")
	fs.StringVar(&cfg.SOCKS5, "socks5-addr", "SOCKS5_ADDR", "127.0.0.1:15080", "shared mode: SOCKS5 listener (empty disables)")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", "ADMIN_ADDR", "127.0.0.1:15000", "admin endpoint (/config_dump, /debug/pprof, /logging)")
	var heapRate int
	fs.IntVar(&heapRate, "heap-profile-rate", "HEAP_PROFILE_RATE", 0, "bytes allocated between samples of /debug/pprof/heap, on average (Go's default is 524288); 0, the default, samples nothing: each sampled call stack stays resident")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "METRICS_ADDR", ":15020", "Prometheus /metrics")
	fs.StringVar(&cfg.ReadinessAddr, "readiness-addr", "READINESS_ADDR", ":15021", "/healthz/ready")
	fs.IntVar(&cfg.SOCKS5Port, "socks5-port", "SOCKS5_PORT", 0, "in-pod mode: SOCKS5 port (15080) on each pod's loopback; 0, the default, disables it")
	var workers int
	fs.IntVar(&workers, "worker-threads", "ZTUNNEL_WORKER_THREADS", 0, "OS threads running Go code at once (GOMAXPROCS); 0 leaves the Go default, one per CPU")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", "DRAIN_TIMEOUT", 5*time.Second, "how long open connections may finish after SIGTERM")
	fs.DurationVar(&cfg.CertTTL, "cert-ttl", "CERT_TTL", 24*time.Hour, "workload certificate lifetime")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", "CONNECT_TIMEOUT", 10*time.Second, "upstream connect timeout")
	fs.DurationVar(&cfg.PageRelease, "binary-page-release", "BINARY_PAGE_RELEASE", time.Minute, "how often the pages of ztunnel's own binary that it is not using are unmapped, and its free heap returned, so that its RSS counts what it uses; 0 never")
	var pingInterval, pingTimeout time.Duration
	fs.DurationVar(&pingInterval, "hbone-ping-interval", "HBONE_PING_INTERVAL", hbone.DefaultPingInterval, "an HBONE connection over TCP that has read nothing for this long sends an HTTP/2 PING; 0 never (a peer that vanished without closing then holds it until TCP gives up, about 15 minutes)")
	fs.DurationVar(&pingTimeout, "hbone-ping-timeout", "HBONE_PING_TIMEOUT", hbone.DefaultPingTimeout, "after the PING, how long the connection waits for any frame before it closes, failing its tunnels")
	var transport string
	fs.StringVar(&transport, "hbone-transport", "HBONE_TRANSPORT", string(hbone.TransportAuto), "auto: serve HBONE over QUIC (UDP 15008) beside TCP and advertise it, dial QUIC to peers that advertise it; tcp: TCP only; quic: also try QUIC toward peers that advertise nothing. QUIC always falls back to TCP")
	var logLevel string
	var logJSON bool
	fs.StringVar(&logLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	fs.BoolVar(&logJSON, "log-json", "LOG_JSON", false, "log as JSON")
	err := fs.Parse(os.Args[1:])
	if err != nil {
		return err
	}
	if err := admin.SetHeapProfileRate(heapRate); err != nil {
		return err
	}
	if cfg.Transport, err = hbone.ParseTransportMode(transport); err != nil {
		return err
	}
	if cfg.PingInterval, cfg.PingTimeout, err = hbone.PingFlags(pingInterval, pingTimeout); err != nil {
		return err
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
		// Every node pays for ztunnel's memory, and its heap is small
		// and mostly state that lives as long as a pod does. Collecting
		// at 1.5x the live heap rather than 2x keeps about 1 MiB less
		// resident after pods churn under traffic, at no CPU cost
		// measurable at 1k connections a second. GOGC and GOMEMLIMIT in
		// the environment still decide.
		debug.SetGCPercent(50)
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
