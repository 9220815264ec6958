// Package agentapi is the protocol between the skiff-cni plugin and the node
// agent: JSON over HTTP on a unix socket that only root can open. The
// plugin asks the agent to enrol a pod on ADD, to forget it on DEL and to
// verify it on CHECK; the agent answers only once the work is done.
package agentapi

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultSocket is where the node agent listens for the plugin.
const DefaultSocket = "/var/run/skiff-cni/agent.sock"

// Paths on the socket.
const (
	PathAdd   = "/v1/add"
	PathDel   = "/v1/del"
	PathCheck = "/v1/check"
	PathReady = "/v1/ready"
)

// maxBody bounds a request or response body.
const maxBody = 64 << 10

// Pod identifies a Kubernetes pod.
type Pod struct {
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	UID            string `json:"uid,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// AddRequest asks the agent to enrol a pod (CNI ADD) or, as a CheckRequest,
// to verify that it is enrolled (CNI CHECK).
type AddRequest struct {
	Pod Pod `json:"pod"`
	// Netns is the path of the pod's network namespace.
	Netns string `json:"netns"`
	// ContainerID is the sandbox's CNI container ID.
	ContainerID string `json:"containerID"`
	// IPs are the pod's addresses, from the previous plugin's result.
	IPs []netip.Addr `json:"ips"`
}

// CheckRequest asks the agent whether a pod is enrolled as ADD left it.
type CheckRequest = AddRequest

// DelRequest tells the agent a pod's sandbox is going away (CNI DEL).
// Netns may be empty: DEL can come after the namespace is gone.
type DelRequest struct {
	Pod         Pod    `json:"pod"`
	Netns       string `json:"netns,omitempty"`
	ContainerID string `json:"containerID"`
}

// Error is the agent's answer to a request it could not carry out.
type Error struct {
	Message string `json:"error"`
	// Retryable marks a condition expected to clear (ztunnel not yet
	// connected, say): the runtime should try again later.
	Retryable bool `json:"retryable,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// ErrAgentUnavailable reports that the agent's socket could not be reached.
var ErrAgentUnavailable = errors.New("skiff node agent is not reachable")

// Validate checks the fields the agent acts on.
func (p Pod) Validate(needUID bool) error {
	if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
		return fmt.Errorf("pod name %q: %s", p.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
		return fmt.Errorf("pod namespace %q: %s", p.Namespace, strings.Join(errs, "; "))
	}
	if needUID && (p.UID == "" || len(p.UID) > 128) {
		return fmt.Errorf("pod %s: bad or missing UID", p)
	}
	if p.ServiceAccount != "" {
		if errs := validation.IsDNS1123Subdomain(p.ServiceAccount); len(errs) > 0 {
			return fmt.Errorf("pod %s service account %q: %s", p, p.ServiceAccount, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Validate checks an add or check request.
func (r *AddRequest) Validate() error {
	if err := r.Pod.Validate(true); err != nil {
		return err
	}
	if err := validNetns(r.Netns); err != nil {
		return err
	}
	if r.ContainerID == "" {
		return errors.New("missing container ID")
	}
	if len(r.IPs) > 16 {
		return fmt.Errorf("pod %s: %d addresses, at most 16 accepted", r.Pod, len(r.IPs))
	}
	for _, ip := range r.IPs {
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
			return fmt.Errorf("pod %s: bad address %v", r.Pod, ip)
		}
	}
	return nil
}

// Validate checks a delete request.
func (r *DelRequest) Validate() error {
	if err := r.Pod.Validate(false); err != nil {
		return err
	}
	if r.Netns != "" {
		if err := validNetns(r.Netns); err != nil {
			return err
		}
	}
	return nil
}

func validNetns(p string) error {
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p || len(p) > 4096 || strings.ContainsRune(p, 0) {
		return fmt.Errorf("network namespace path %q is not a clean absolute path", p)
	}
	return nil
}
