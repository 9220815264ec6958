// Package plugin is the skiff-cni chained CNI plugin: on ADD it asks the node
// agent to enrol mesh pods (redirect rules installed, ztunnel told) before
// the pod's containers start, and always passes the previous plugin's result
// through unchanged.
package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
)

// TypeName is the plugin's "type" in a CNI configuration, and its binary's
// name.
const TypeName = "skiff-cni"

// DefaultKubeconfig is where the installer writes the plugin's kubeconfig.
const DefaultKubeconfig = "/etc/cni/net.d/skiff-cni.kubeconfig"

// DefaultTimeout bounds one ADD, including the wait for ztunnel's ack.
const DefaultTimeout = 30 * time.Second

// SupportedVersions are the CNI spec versions the plugin speaks. CHECK needs
// 0.4.0 or later, STATUS and GC 1.1.0.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Config is the plugin's entry in the network configuration list, as the
// runtime passes it on stdin (with prevResult added).
type Config struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// AgentSocket is the node agent's unix socket.
	AgentSocket string `json:"agentSocket,omitempty"`
	// Kubeconfig is the kubeconfig the installer wrote for the plugin.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// ExcludeNamespaces are never enrolled; nil means
	// mesh.DefaultExcludedNamespaces, an empty list excludes none.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// Timeout bounds one ADD ("30s"); empty means DefaultTimeout.
	Timeout string `json:"timeout,omitempty"`

	// PrevResult is the previous plugin's result, kept byte for byte.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`

	timeout time.Duration
}

// ParseConfig decodes and validates the plugin's configuration, filling in
// defaults.
func ParseConfig(stdin []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, fmt.Errorf("decoding network configuration: %w", err)
	}
	if c.CNIVersion == "" {
		return nil, fmt.Errorf("network configuration has no cniVersion")
	}
	if _, _, _, err := version.ParseVersion(c.CNIVersion); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	if c.Type != TypeName {
		return nil, fmt.Errorf("network configuration is for plugin type %q, not %q", c.Type, TypeName)
	}
	if c.AgentSocket == "" {
		c.AgentSocket = agentapi.DefaultSocket
	}
	if c.Kubeconfig == "" {
		c.Kubeconfig = DefaultKubeconfig
	}
	for _, p := range []struct{ name, v string }{{"agentSocket", c.AgentSocket}, {"kubeconfig", c.Kubeconfig}} {
		if !filepath.IsAbs(p.v) || strings.ContainsRune(p.v, 0) {
			return nil, fmt.Errorf("network configuration: %s %q is not an absolute path", p.name, p.v)
		}
	}
	if c.ExcludeNamespaces == nil {
		c.ExcludeNamespaces = mesh.DefaultExcludedNamespaces
	}
	for _, ns := range c.ExcludeNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("network configuration: excluded namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	c.timeout = DefaultTimeout
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 || d > time.Hour {
			return nil, fmt.Errorf("network configuration: timeout %q is not a duration between 0 and 1h", c.Timeout)
		}
		c.timeout = d
	}
	if bytes.Equal(bytes.TrimSpace(c.PrevResult), []byte("null")) {
		c.PrevResult = nil
	}
	return &c, nil
}

// PrevIPs returns the addresses in the previous plugin's result.
func (c *Config) PrevIPs() ([]netip.Addr, error) {
	if len(c.PrevResult) == 0 {
		return nil, nil
	}
	res, err := version.NewResult(c.CNIVersion, c.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("parsing prevResult: %w", err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("converting prevResult: %w", err)
	}
	var ips []netip.Addr
	for _, ipc := range cur.IPs {
		if ipc == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, fmt.Errorf("prevResult: bad address %v", ipc.Address.IP)
		}
		ips = append(ips, a.Unmap())
	}
	return ips, nil
}

// Args are the Kubernetes CNI_ARGS the runtime passes.
type Args struct {
	PodName, PodNamespace, PodUID, InfraContainerID string
}

// IsPod reports whether the args name a Kubernetes pod.
func (a Args) IsPod() bool { return a.PodName != "" && a.PodNamespace != "" }

// ParseArgs parses CNI_ARGS ("K=V;K=V"). Unknown keys are ignored; a
// malformed pair, a repeated Kubernetes key or an invalid pod name or
// namespace is an error.
func ParseArgs(s string) (Args, error) {
	var a Args
	if s == "" {
		return a, nil
	}
	seen := map[string]bool{}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return Args{}, fmt.Errorf("CNI_ARGS: malformed pair %q (want KEY=VALUE)", pair)
		}
		var dst *string
		switch k {
		case "K8S_POD_NAME":
			dst = &a.PodName
		case "K8S_POD_NAMESPACE":
			dst = &a.PodNamespace
		case "K8S_POD_UID":
			dst = &a.PodUID
		case "K8S_POD_INFRA_CONTAINER_ID":
			dst = &a.InfraContainerID
		default:
			continue
		}
		if seen[k] {
			return Args{}, fmt.Errorf("CNI_ARGS: %s given twice", k)
		}
		seen[k] = true
		*dst = v
	}
	if a.PodName != "" {
		if errs := validation.IsDNS1123Subdomain(a.PodName); len(errs) > 0 {
			return Args{}, fmt.Errorf("CNI_ARGS: K8S_POD_NAME %q: %s", a.PodName, strings.Join(errs, "; "))
		}
	}
	if a.PodNamespace != "" {
		if errs := validation.IsDNS1123Label(a.PodNamespace); len(errs) > 0 {
			return Args{}, fmt.Errorf("CNI_ARGS: K8S_POD_NAMESPACE %q: %s", a.PodNamespace, strings.Join(errs, "; "))
		}
	}
	if len(a.PodUID) > 128 {
		return Args{}, fmt.Errorf("CNI_ARGS: K8S_POD_UID longer than 128 bytes")
	}
	if (a.PodName == "") != (a.PodNamespace == "") {
		return Args{}, fmt.Errorf("CNI_ARGS: K8S_POD_NAME and K8S_POD_NAMESPACE must be given together")
	}
	return a, nil
}

// cniError builds a CNI error result with a code the runtime understands.
func cniError(code uint, msg string, err error) *types.Error {
	details := ""
	if err != nil {
		details = err.Error()
	}
	return types.NewError(code, msg, details)
}
