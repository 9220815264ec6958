// Package app runs the Skiff CNI node agent: the installer, the node agent,
// the ZDS server for ztunnel and the HTTP endpoints for metrics and
// readiness.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/metric"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiffmesh/skiff/cni/internal/agent"
	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/installer"
	"github.com/skiffmesh/skiff/cni/internal/kube"
	"github.com/skiffmesh/skiff/cni/internal/netnsfind"
	"github.com/skiffmesh/skiff/cni/internal/probesnat"
	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/exepages"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/telemetry"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// Config is the node agent's configuration (see the binary's flags).
type Config struct {
	NodeName   string
	Kubeconfig string // empty: in-cluster

	// Install chains the plugin into the node's CNI configuration.
	Install bool
	// UninstallOnExit removes the plugin and the node rules when the agent
	// stops (for removing Skiff from the node; not for upgrades).
	UninstallOnExit bool
	// CNIConfDir and CNIBinDir are the host's directories as mounted.
	CNIConfDir, CNIBinDir string
	// HostCNIConfDir is CNIConfDir as the host sees it (for the plugin's
	// kubeconfig path in its entry).
	HostCNIConfDir string
	// Profiling serves net/http/pprof under /debug/pprof/ on HTTPAddr.
	Profiling bool
	// PageRelease is how often the pages of the agent's binary it is not
	// using are given back (pkg/exepages); 0 never.
	PageRelease time.Duration
	// PluginBinary is the skiff-cni binary to copy.
	PluginBinary string
	// PluginTimeout bounds one ADD in the plugin.
	PluginTimeout time.Duration
	// TokenFile, CAFile and APIServer build the plugin's kubeconfig.
	TokenFile, CAFile, APIServer string

	AgentSocket string
	ZDSSocket   string

	ExcludeNamespaces []string
	ProbeAddr         netip.Addr
	ProbeAddr6        netip.Addr
	KubeletUID        *uint32
	SNATTable         string
	// NodeNetNS is where the probe SNAT goes; nil for the agent's own
	// namespace (the node's: the agent runs with the host network).
	NodeNetNS *os.File

	NetnsDirs []string
	ProcRoot  string

	// HTTPAddr serves /metrics, /healthz and /readyz; empty disables.
	HTTPAddr string
	Log      *slog.Logger

	// ready, when set, is called with the HTTP address once serving (tests).
	Ready func(httpAddr string)
}

// Run runs the node agent until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	kc, err := kubeClient(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	prov, err := telemetry.NewProvider(telemetry.ProviderOptions{ProcessMetrics: true})
	if err != nil {
		return err
	}
	defer prov.Shutdown(context.WithoutCancel(ctx))
	meter := prov.Meter("skiff-cni")

	zsrv, err := zds.NewServer(cfg.ZDSSocket, log.With("component", "zds"))
	if err != nil {
		return err
	}
	defer zsrv.Close()

	snat, err := probesnat.New(probesnat.Config{
		Table: cfg.SNATTable, ProbeAddr: cfg.ProbeAddr, ProbeAddr6: cfg.ProbeAddr6,
		KubeletUID: cfg.KubeletUID, NetNS: cfg.NodeNetNS,
	})
	if err != nil {
		return err
	}
	ag, err := agent.New(agent.Config{
		NodeName:          cfg.NodeName,
		Kube:              kc,
		ZDS:               zsrv,
		Rules:             inpod.Rules{ProbeAddr: cfg.ProbeAddr, ProbeAddr6: cfg.ProbeAddr6},
		SNAT:              snat,
		Finder:            &netnsfind.Finder{Dirs: cfg.NetnsDirs, ProcRoot: cfg.ProcRoot},
		ExcludeNamespaces: cfg.ExcludeNamespaces,
		Meter:             meter,
		Log:               log.With("component", "agent"),
	})
	if err != nil {
		return err
	}

	var inst *installer.Installer
	if cfg.Install {
		inst = installer.New(installer.Config{
			ConfDir:      cfg.CNIConfDir,
			BinDir:       cfg.CNIBinDir,
			PluginBinary: cfg.PluginBinary,
			Entry: installer.Entry{
				AgentSocket:       cfg.AgentSocket,
				Kubeconfig:        filepath.Join(cfg.HostCNIConfDir, installer.DefaultKubeconfigName),
				ExcludeNamespaces: cfg.ExcludeNamespaces,
				Timeout:           durationString(cfg.PluginTimeout),
			},
			Credentials: &installer.Credentials{Server: cfg.APIServer, TokenFile: cfg.TokenFile, CAFile: cfg.CAFile},
			HostConfDir: cfg.HostCNIConfDir,
			Changed:     ag.ChainingChanged,
			Log:         log.With("component", "installer"),
		})
	}
	if err := installMetrics(meter, inst); err != nil {
		return err
	}

	ln, err := agentapi.Listen(cfg.AgentSocket)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	running := 0
	start := func(name string, f func() error) {
		running++
		go func() {
			err := f()
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", name, err)
				cancel()
			} else {
				err = nil
			}
			errc <- err
		}()
	}
	if inst != nil {
		start("installer", func() error { return inst.Run(ctx) })
	}
	start("agent", func() error { return ag.Run(ctx, ln) })
	if cfg.PageRelease > 0 {
		start("binary page release", func() error {
			exepages.Run(ctx, cfg.PageRelease, log)
			return nil
		})
	}
	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			cancel()
			return errors.Join(err, drain(errc, running))
		}
		if cfg.Ready != nil {
			cfg.Ready(hl.Addr().String())
		}
		start("http", func() error { return serveHTTP(ctx, hl, prov.Handler(), ag, inst, cfg.Profiling) })
	}
	runErr := drain(errc, running)
	log.Info("node agent stopping")
	if cfg.UninstallOnExit {
		var errs []error
		if inst != nil {
			errs = append(errs, inst.Uninstall())
		}
		errs = append(errs, snat.Teardown())
		if err := errors.Join(errs...); err != nil {
			log.Error("uninstalling", "err", err)
			runErr = errors.Join(runErr, err)
		}
	}
	return runErr
}

func drain(errc chan error, n int) error {
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func durationString(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

func kubeClient(kubeconfig string) (*kube.Client, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	cfg.UserAgent = "skiff-cni-agent"
	return kube.NewForConfig(cfg)
}

func installMetrics(m metric.Meter, inst *installer.Installer) error {
	_, err := m.Int64ObservableGauge("istio_cni_install_ready",
		metric.WithDescription("Whether the CNI plugin is chained into the node's CNI configuration (1) or not (0)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(0)
			if inst != nil && inst.Installed() {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	return err
}

func serveHTTP(ctx context.Context, ln net.Listener, metrics http.Handler, ag *agent.Agent, inst *installer.Installer, profiling bool) error {
	mux := http.NewServeMux()
	if profiling {
		admin.HandleProfiling(mux)
	}
	mux.Handle("/metrics", metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !ag.Synced():
			http.Error(w, "node agent is rebuilding its state", http.StatusServiceUnavailable)
		case inst != nil && !inst.Installed():
			http.Error(w, "the CNI plugin is not chained into the node's configuration", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// Uninstall removes the plugin, its configuration entry and the node's
// probe SNAT table, for removing Skiff from a node.
func Uninstall(cfg Config) error {
	inst := installer.New(installer.Config{
		ConfDir: cfg.CNIConfDir, BinDir: cfg.CNIBinDir, Log: cfg.Log,
	})
	snat, err := probesnat.New(probesnat.Config{Table: cfg.SNATTable, ProbeAddr: cfg.ProbeAddr, ProbeAddr6: cfg.ProbeAddr6, NetNS: cfg.NodeNetNS})
	if err != nil {
		return err
	}
	return errors.Join(inst.Uninstall(), snat.Teardown())
}
