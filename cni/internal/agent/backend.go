package agent

import (
	"context"
	"errors"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
)

// The Agent serves the plugin's requests (agentapi.Backend).
var _ agentapi.Backend = (*Agent)(nil)

// Add enrols the pod of a CNI ADD and returns once its rules are installed
// and ztunnel acknowledged it.
func (a *Agent) Add(ctx context.Context, req *agentapi.AddRequest) error {
	uid := types.UID(req.Pod.UID)
	unlock := a.locks.lock(req.Pod.UID)
	defer unlock()
	netns, err := os.Open(req.Netns)
	if err != nil {
		a.countFailure("add")
		return fmt.Errorf("opening network namespace of %s: %w", req.Pod, err)
	}
	sa := req.Pod.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	st := &podState{uid: uid, name: req.Pod.Name, namespace: req.Pod.Namespace, sa: sa,
		netns: netns, netnsPath: req.Netns, containerID: req.ContainerID, ips: req.IPs}
	if err := a.enrol(ctx, st); err != nil {
		netns.Close()
		a.countFailure("add")
		return err
	}
	return nil
}

// Check verifies a pod is enrolled in the namespace the runtime names, with
// complete rules, and that ztunnel is connected.
func (a *Agent) Check(ctx context.Context, req *agentapi.CheckRequest) error {
	unlock := a.locks.lock(req.Pod.UID)
	defer unlock()
	st := a.lookup(types.UID(req.Pod.UID))
	if st == nil || !st.complete() {
		return fmt.Errorf("pod %s is not enrolled", req.Pod)
	}
	fi, err := os.Stat(req.Netns)
	if err != nil {
		return fmt.Errorf("network namespace of %s: %w", req.Pod, err)
	}
	have, err := st.netns.Stat()
	if err != nil || !os.SameFile(fi, have) {
		return fmt.Errorf("pod %s is enrolled in another network namespace", req.Pod)
	}
	state, err := st.rules(a.cfg.Rules).Inspect(st.netns)
	if err != nil {
		return fmt.Errorf("inspecting rules of %s: %w", req.Pod, err)
	}
	if !state.Complete() {
		return fmt.Errorf("redirect rules of %s are %s", req.Pod, state)
	}
	if !a.cfg.ZDS.Connected() {
		return &agentapi.Error{Message: "ztunnel is not connected to the node agent", Retryable: true}
	}
	return nil
}

// Del forgets a pod whose sandbox is being torn down. A DEL for an older
// sandbox of the pod than the enrolled one is ignored.
func (a *Agent) Del(ctx context.Context, req *agentapi.DelRequest) error {
	var targets []*podState
	if req.Pod.UID != "" {
		if st := a.lookup(types.UID(req.Pod.UID)); st != nil {
			targets = append(targets, st)
		}
	} else {
		targets = a.byName(req.Pod.Namespace, req.Pod.Name)
	}
	var errs []error
	for _, st := range targets {
		if st.containerID != "" && req.ContainerID != "" && st.containerID != req.ContainerID {
			a.log.Info("ignoring DEL of an older sandbox", "pod", st.key(), "container", req.ContainerID)
			continue
		}
		// The namespace is going away with its rules; leave them.
		if err := a.unenrol(ctx, st.uid, false, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ready reports whether pods can be enrolled now.
func (a *Agent) Ready() error {
	if !a.Synced() {
		return &agentapi.Error{Message: "node agent is starting", Retryable: true}
	}
	if !a.cfg.ZDS.Connected() {
		return &agentapi.Error{Message: "ztunnel is not connected to the node agent", Retryable: true}
	}
	return nil
}
