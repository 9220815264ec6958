package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
)

// Plugin runs the CNI commands. The zero value is not usable; use New.
type Plugin struct {
	stdout io.Writer
	log    *slog.Logger
	// kube builds a Kubernetes client from a kubeconfig path.
	kube func(path string) (*kubeLookup, error)
}

// New returns a plugin that prints results to stdout and logs to stderr.
func New(stdout, stderr io.Writer) *Plugin {
	return &Plugin{
		stdout: stdout,
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		kube:   newKubeLookup,
	}
}

// Funcs returns the plugin's commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// parse decodes stdin and CNI_ARGS into CNI errors on failure.
func parse(args *skel.CmdArgs) (*Config, Args, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, Args{}, cniError(types.ErrInvalidNetworkConfig, "skiff-cni: bad network configuration", err)
	}
	k8s, err := ParseArgs(args.Args)
	if err != nil {
		return nil, Args{}, cniError(types.ErrInvalidEnvironmentVariables, "skiff-cni: bad CNI_ARGS", err)
	}
	return conf, k8s, nil
}

// Add enrols a mesh pod and passes the previous result through.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, k8s, err := parse(args)
	if err != nil {
		return err
	}
	if len(conf.PrevResult) == 0 {
		return cniError(types.ErrInvalidNetworkConfig,
			"skiff-cni is a chained plugin: it must follow a plugin that sets up the interface (no prevResult)", nil)
	}
	ips, err := conf.PrevIPs()
	if err != nil {
		return cniError(types.ErrDecodingFailure, "skiff-cni: bad prevResult", err)
	}
	req, enrol, err := p.decide(conf, k8s, args)
	if err != nil {
		return err
	}
	if enrol {
		req.IPs = ips
		ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
		defer cancel()
		if err := agentapi.NewClient(conf.AgentSocket).Add(ctx, req); err != nil {
			return agentError(fmt.Sprintf("skiff-cni: enrolling pod %s in the mesh", req.Pod), err)
		}
	}
	return p.printPrev(conf)
}

// Check verifies that a mesh pod is still enrolled as ADD left it.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, k8s, err := parse(args)
	if err != nil {
		return err
	}
	if len(conf.PrevResult) == 0 {
		return cniError(types.ErrInvalidNetworkConfig, "skiff-cni: CHECK without prevResult", nil)
	}
	ips, err := conf.PrevIPs()
	if err != nil {
		return cniError(types.ErrDecodingFailure, "skiff-cni: bad prevResult", err)
	}
	req, enrol, err := p.decide(conf, k8s, args)
	if err != nil || !enrol {
		return err
	}
	req.IPs = ips
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	if err := agentapi.NewClient(conf.AgentSocket).Check(ctx, req); err != nil {
		return agentError(fmt.Sprintf("skiff-cni: pod %s is not enrolled as expected", req.Pod), err)
	}
	return nil
}

// Del tells the agent the pod is going away. It succeeds when the agent is
// not running (the agent reconciles when it starts), as the CNI spec asks
// of DEL when there is nothing left to release.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, k8s, err := parse(args)
	if err != nil {
		return err
	}
	if !k8s.IsPod() || slices.Contains(conf.ExcludeNamespaces, k8s.PodNamespace) {
		return nil
	}
	req := &agentapi.DelRequest{
		Pod:         agentapi.Pod{Name: k8s.PodName, Namespace: k8s.PodNamespace, UID: k8s.PodUID},
		Netns:       args.Netns,
		ContainerID: args.ContainerID,
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	err = agentapi.NewClient(conf.AgentSocket).Del(ctx, req)
	if errors.Is(err, agentapi.ErrAgentUnavailable) {
		p.log.Warn("skiff node agent not reachable on DEL; it reconciles when it starts", "pod", req.Pod.String(), "err", err)
		return nil
	}
	if err != nil {
		return agentError(fmt.Sprintf("skiff-cni: removing pod %s from the mesh", req.Pod), err)
	}
	return nil
}

// Status reports whether the plugin can serve ADD now: the agent is up and
// ztunnel connected.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "skiff-cni: bad network configuration", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	if err := agentapi.NewClient(conf.AgentSocket).Ready(ctx); err != nil {
		return cniError(types.ErrPluginNotAvailable, "skiff-cni: node agent not ready", err)
	}
	return nil
}

// GC has nothing to collect: the agent drops pods on DEL and reconciles
// against the pods on its node.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	if _, err := ParseConfig(args.StdinData); err != nil {
		return cniError(types.ErrInvalidNetworkConfig, "skiff-cni: bad network configuration", err)
	}
	return nil
}

// decide looks the pod up and reports whether it is in the mesh, with the
// agent request for it.
func (p *Plugin) decide(conf *Config, k8s Args, args *skel.CmdArgs) (*agentapi.AddRequest, bool, error) {
	if !k8s.IsPod() {
		return nil, false, nil
	}
	if slices.Contains(conf.ExcludeNamespaces, k8s.PodNamespace) {
		return nil, false, nil
	}
	kc, err := p.kube(conf.Kubeconfig)
	if err != nil {
		return nil, false, cniError(types.ErrTryAgainLater, "skiff-cni: cannot load the plugin's kubeconfig", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	pod, err := kc.pod(ctx, k8s.PodNamespace, k8s.PodName)
	if err != nil {
		return nil, false, cniError(types.ErrTryAgainLater, fmt.Sprintf("skiff-cni: looking up pod %s/%s", k8s.PodNamespace, k8s.PodName), err)
	}
	if k8s.PodUID != "" && string(pod.UID) != k8s.PodUID {
		return nil, false, cniError(types.ErrTryAgainLater,
			fmt.Sprintf("skiff-cni: pod %s/%s has UID %s, not the sandbox's %s", k8s.PodNamespace, k8s.PodName, pod.UID, k8s.PodUID), nil)
	}
	ns, err := kc.namespace(ctx, k8s.PodNamespace)
	if err != nil {
		return nil, false, cniError(types.ErrTryAgainLater, fmt.Sprintf("skiff-cni: looking up namespace %s", k8s.PodNamespace), err)
	}
	if d := mesh.Decide(pod, ns, conf.ExcludeNamespaces); !d.Enrol {
		return nil, false, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return &agentapi.AddRequest{
		Pod:         agentapi.Pod{Name: pod.Name, Namespace: pod.Namespace, UID: string(pod.UID), ServiceAccount: sa},
		Netns:       args.Netns,
		ContainerID: args.ContainerID,
	}, true, nil
}

// printPrev writes the previous result exactly as received.
func (p *Plugin) printPrev(conf *Config) error {
	if _, err := p.stdout.Write(conf.PrevResult); err != nil {
		return cniError(types.ErrIOFailure, "skiff-cni: writing result", err)
	}
	return nil
}

// agentError turns an agent failure into a CNI error: unreachable agents
// and conditions the agent marks retryable ask the runtime to try again.
func agentError(msg string, err error) error {
	var ae *agentapi.Error
	switch {
	case errors.Is(err, agentapi.ErrAgentUnavailable):
		return cniError(types.ErrTryAgainLater, msg+": the skiff node agent is not running on this node", err)
	case errors.As(err, &ae) && ae.Retryable:
		return cniError(types.ErrTryAgainLater, msg, err)
	case errors.Is(err, context.DeadlineExceeded):
		return cniError(types.ErrTryAgainLater, msg+": timed out", err)
	}
	return cniError(types.ErrInternal, msg, err)
}
