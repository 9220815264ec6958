// Command skiff-cni-agent is Skiff's CNI node agent (a DaemonSet with the
// host network): it chains the skiff-cni plugin into the node's CNI
// configuration, installs in-pod traffic redirection for mesh pods, SNATs
// kubelet probes, and hands pods to ztunnel. "skiff-cni-agent uninstall"
// removes the plugin and the node rules. Every flag can also be set by the
// environment variable named in its help text.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/app"
	"github.com/skiffmesh/skiff/cni/internal/installer"
	"github.com/skiffmesh/skiff/cni/internal/probesnat"
	"github.com/skiffmesh/skiff/pkg/admin"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/zds"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-cni-agent:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string) error {
	uninstall := len(args) > 0 && args[0] == "uninstall"
	if uninstall {
		args = args[1:]
	}
	var cfg app.Config
	var envErrs []error
	fs := flag.NewFlagSet("skiff-cni-agent", flag.ContinueOnError)
	str := func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, envOr(env, def), usage+" (env "+env+")")
	}
	boolean := func(p *bool, name, env string, def bool, usage string) {
		v := def
		if s, ok := os.LookupEnv(env); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s: %w", env, err))
			}
			v = b
		}
		fs.BoolVar(p, name, v, usage+" (env "+env+")")
	}
	self, _ := os.Executable()
	var exclude, probe, probe6, kubeletUID, netnsDirs, logLevel string
	var timeout, pageRelease string
	str(&cfg.NodeName, "node-name", "NODE_NAME", "", "this node's name (required)")
	str(&cfg.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig for the agent; in-cluster configuration when empty")
	boolean(&cfg.Install, "install", "INSTALL", true, "chain the plugin into the node's CNI configuration and keep it there")
	boolean(&cfg.UninstallOnExit, "uninstall-on-exit", "UNINSTALL_ON_EXIT", false, "remove the plugin and node rules when stopping (not for upgrades: new pods would start outside the mesh)")
	str(&cfg.CNIConfDir, "cni-conf-dir", "CNI_CONF_DIR", "/host/etc/cni/net.d", "the host's CNI configuration directory, as mounted")
	str(&cfg.CNIBinDir, "cni-bin-dir", "CNI_BIN_DIR", "/host/opt/cni/bin", "the host's CNI binary directory, as mounted")
	str(&cfg.HostCNIConfDir, "host-cni-conf-dir", "HOST_CNI_CONF_DIR", "/etc/cni/net.d", "the CNI configuration directory as the host sees it")
	str(&cfg.PluginBinary, "plugin-binary", "PLUGIN_BINARY", filepath.Join(filepath.Dir(self), "skiff-cni"), "the skiff-cni binary to install")
	str(&timeout, "plugin-timeout", "PLUGIN_TIMEOUT", "30s", "how long the plugin's ADD may wait for the agent and ztunnel")
	str(&cfg.TokenFile, "token-file", "SA_TOKEN_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token", "service-account token written into the plugin's kubeconfig")
	str(&cfg.CAFile, "ca-file", "SA_CA_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "cluster CA written into the plugin's kubeconfig")
	str(&cfg.APIServer, "apiserver-url", "KUBERNETES_URL", installer.DefaultServer(), "apiserver URL for the plugin's kubeconfig")
	str(&cfg.AgentSocket, "agent-socket", "AGENT_SOCKET", agentapi.DefaultSocket, "unix socket the plugin calls (a host path)")
	str(&cfg.ZDSSocket, "zds-socket", "ZDS_SOCKET", zds.DefaultPath, "unix socket ztunnel connects to")
	str(&exclude, "exclude-namespaces", "EXCLUDE_NAMESPACES", "kube-system", "comma-separated namespaces never enrolled")
	str(&probe, "probe-snat-address", "PROBE_SNAT_ADDRESS", inpod.ProbeSNATAddress, "IPv4 source kubelet probes are SNATed to")
	str(&probe6, "probe-snat-address-v6", "PROBE_SNAT_ADDRESS_V6", inpod.ProbeSNATAddressV6, "IPv6 source kubelet probes are SNATed to")
	str(&kubeletUID, "kubelet-uid", "KUBELET_UID", "", "SNAT only probes from this UID (default: any local process, as Istio)")
	str(&cfg.SNATTable, "snat-table", "SNAT_TABLE", probesnat.DefaultTable, "nftables table for the node's probe SNAT")
	str(&netnsDirs, "netns-dirs", "NETNS_DIRS", "/var/run/netns", "comma-separated directories of pinned pod network namespaces")
	str(&cfg.ProcRoot, "proc-root", "PROC_ROOT", "/proc", "host /proc, to find pod namespaces by process (empty disables)")
	str(&cfg.HTTPAddr, "http-addr", "HTTP_ADDR", ":15014", "serves /metrics, /healthz and /readyz (empty disables)")
	boolean(&cfg.Profiling, "profiling", "PROFILING", false, "also serve /debug/pprof/ on the HTTP address (heap and CPU profiles)")
	str(&pageRelease, "binary-page-release", "BINARY_PAGE_RELEASE", "1m", "how often the pages of the agent's own binary that it is not using are unmapped, and its free heap returned, so that its RSS counts what it uses; 0 never")
	str(&logLevel, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := errors.Join(envErrs...); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	admin.SampleHeapWhenServed(cfg.Profiling)
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", logLevel, err)
	}
	cfg.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var err error
	if cfg.ProbeAddr, err = netip.ParseAddr(probe); err != nil {
		return fmt.Errorf("probe SNAT address: %w", err)
	}
	if cfg.ProbeAddr6, err = netip.ParseAddr(probe6); err != nil {
		return fmt.Errorf("probe SNAT IPv6 address: %w", err)
	}
	if kubeletUID != "" {
		u, err := strconv.ParseUint(kubeletUID, 10, 32)
		if err != nil {
			return fmt.Errorf("kubelet UID: %w", err)
		}
		u32 := uint32(u)
		cfg.KubeletUID = &u32
	}
	if cfg.PluginTimeout, err = time.ParseDuration(timeout); err != nil {
		return fmt.Errorf("plugin timeout: %w", err)
	}
	if cfg.PageRelease, err = time.ParseDuration(pageRelease); err != nil || cfg.PageRelease < 0 {
		return fmt.Errorf("binary page release %q: want a duration such as 1m, or 0", pageRelease)
	}
	cfg.ExcludeNamespaces = splitList(exclude)
	cfg.NetnsDirs = splitList(netnsDirs)

	if uninstall {
		return app.Uninstall(cfg)
	}
	if cfg.NodeName == "" {
		return errors.New("--node-name (NODE_NAME) is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return app.Run(ctx, cfg)
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
