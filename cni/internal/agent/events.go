package agent

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffmesh/skiff/cni/internal/kube"
)

// Reasons of the Kubernetes Events the agent records on pods, so problems
// show in `kubectl describe pod` and `kubectl events`.
const (
	// ReasonRedirected (Normal): the pod's traffic is redirected to ztunnel.
	ReasonRedirected = "Redirected"
	// ReasonRedirectionFailed (Warning): enrolling a running pod, or
	// completing or restoring its enrolment, failed; it is retried.
	ReasonRedirectionFailed = "RedirectionFailed"
	// ReasonUnenrolmentFailed (Warning): removing the redirection of a pod
	// outside the mesh failed; the pod stays redirected and it is retried.
	ReasonUnenrolmentFailed = "UnenrolmentFailed"
)

// Actions of the agent's Events (the events.k8s.io "action" field).
const (
	actionEnrol   = "Enrol"
	actionUnenrol = "Unenrol"
)

// EventController is the agent's name as the reporting controller of its
// Events.
const EventController = "skiff-cni-agent"

// maxNote is the apiserver's limit on an Event's note.
const maxNote = 1024

// Reasons of the Events the agent records on its node, about chaining
// skiff-cni into the node's CNI configuration.
const (
	// ReasonChainingFailed (Warning): skiff-cni is not chained, and the
	// configuration is left as it is. When the file is corrupt, the
	// runtime cannot set up new pods on the node either, until it is
	// fixed.
	ReasonChainingFailed = "CNIChainingFailed"
	// ReasonChained (Normal): skiff-cni is chained (again).
	ReasonChained = "CNIChained"
)

const actionChain = "Chain"

// recorder holds the agent's Event recorder, set by Run once it writes to
// the apiserver.
type recorder struct {
	p atomic.Pointer[kube.Recorder]

	// node is the latest node Event given before the recorder was set:
	// the installer's first outcome comes before the agent runs.
	mu   sync.Mutex
	node func(*kube.Recorder)
}

func (r *recorder) set(rec *kube.Recorder) {
	r.mu.Lock()
	r.p.Store(rec)
	pending := r.node
	r.node = nil
	r.mu.Unlock()
	if pending != nil {
		pending(rec)
	}
}

// nodeEvent records an Event on the agent's node, or, before the agent
// runs, the latest one to be recorded once it does.
func (a *Agent) nodeEvent(eventType, reason, note string) {
	if len(note) > maxNote {
		note = strings.ToValidUTF8(note[:maxNote-3], "") + "..."
	}
	// Nodes are cluster-scoped; kubelet uses the node's name as its UID in
	// the Events it records.
	ref := corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: a.cfg.NodeName, UID: types.UID(a.cfg.NodeName)}
	record := func(rec *kube.Recorder) {
		rec.Event(ref, eventType, reason, actionChain, note)
	}
	r := &a.recorder
	r.mu.Lock()
	rec := r.p.Load()
	if rec == nil {
		r.node = record
	}
	r.mu.Unlock()
	if rec != nil {
		record(rec)
	}
}

// ChainingChanged records, as an Event on the node, an outcome of the CNI
// installer: err nil once skiff-cni is chained, or why it is not.
func (a *Agent) ChainingChanged(err error) {
	if err == nil {
		a.nodeEvent(corev1.EventTypeNormal, ReasonChained, "skiff-cni is chained into the node's CNI configuration")
		return
	}
	a.nodeEvent(corev1.EventTypeWarning, ReasonChainingFailed,
		"skiff-cni is not chained until the file is fixed: "+err.Error())
}

// podEvent records an Event on a pod. The recorder folds the same
// reason and action on the same pod into one Event with a series count (the
// first note stays), so an error retried every few seconds is one Event,
// not one per retry.
func (a *Agent) podEvent(ns, name string, uid types.UID, eventType, reason, action, note string) {
	rec := a.recorder.p.Load()
	if rec == nil {
		return // not running (yet)
	}
	if len(note) > maxNote {
		note = strings.ToValidUTF8(note[:maxNote-3], "") + "..."
	}
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: ns, Name: name, UID: uid}
	rec.Event(ref, eventType, reason, action, note)
}

func (a *Agent) warnPod(st *podState, reason, action string, err error) {
	a.podEvent(st.namespace, st.name, st.uid, corev1.EventTypeWarning, reason, action, err.Error())
}

func (a *Agent) redirected(st *podState) {
	a.podEvent(st.namespace, st.name, st.uid, corev1.EventTypeNormal, ReasonRedirected, actionEnrol,
		"traffic is redirected to ztunnel")
}

// startEvents records the agent's Events to the apiserver until ctx ends
// or stop is called (which returns once the recorder has stopped).
func (a *Agent) startEvents(ctx context.Context) (stop func()) {
	rec := kube.NewRecorder(a.cfg.Kube, EventController, a.log.With("component", "events"))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.Run(ctx)
	}()
	a.recorder.set(rec)
	return func() {
		cancel()
		<-done
	}
}
