// Package agent is Skiff's node agent: it enrols the node's mesh pods
// (redirect rules in the pod's network namespace, probe SNAT on the node,
// the namespace handed to ztunnel over ZDS), for the CNI plugin on ADD and
// for running pods whose namespace joins or leaves the mesh, and rebuilds
// its state from the node's pods and the rules it finds when it restarts.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/kube"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
	"github.com/skiffmesh/skiff/cni/internal/netnsfind"
	"github.com/skiffmesh/skiff/cni/internal/probesnat"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// Config wires an Agent.
type Config struct {
	// NodeName is this node; only its pods are handled.
	NodeName string
	// Kube reads the node's pods and the namespaces, annotates pods and
	// records Events.
	Kube *kube.Client
	// ZDS is the server ztunnel connects to; the Agent starts serving it
	// once its state is rebuilt, so ztunnel's first snapshot is complete.
	ZDS *zds.Server
	// Rules is the in-pod redirection (its probe address must match SNAT's).
	Rules inpod.Rules
	SNAT  *probesnat.SNAT
	// Finder locates running pods' namespaces.
	Finder *netnsfind.Finder
	// ExcludeNamespaces are never enrolled (mesh.DefaultExcludedNamespaces
	// when nil).
	ExcludeNamespaces []string
	// Meter records the agent's metrics; none when nil.
	Meter metric.Meter
	Log   *slog.Logger
}

// Agent is the node agent.
type Agent struct {
	cfg Config
	log *slog.Logger

	podLister listersv1.PodLister
	nsLister  listersv1.NamespaceLister
	queue     workqueue.TypedRateLimitingInterface[string]

	locks keyedMutex

	mu   sync.Mutex
	pods map[types.UID]*podState

	synced   atomic.Bool
	recorder recorder // Events on pods
	failures metric.Int64Counter
	events   metric.Int64Counter
}

// podState is a pod the agent has set something up for: an enrolled pod,
// one whose enrolment or removal failed part way, or one found at start
// with rules the agent could not remove yet.
type podState struct {
	uid                    types.UID
	name, namespace, sa    string
	netns                  *os.File
	netnsPath, containerID string
	ips                    []netip.Addr

	// What is in place for the pod, so setting up and tearing down each do
	// only what is left, and a reconcile converges to the desired state
	// whichever step last failed. Written under the pod's lock and a.mu.
	rulesStep, snatStep, ztunnelStep step
}

// step is what the agent knows of one part of a pod's enrolment.
type step uint8

const (
	stepAbsent  step = iota // not in place
	stepDone                // in place
	stepUnknown             // a change failed midway: redo or undo it either way
)

// enrolled reports whether the pod was handed to ztunnel (and not yet
// taken back). The caller holds a.mu or the pod's lock.
func (p *podState) enrolled() bool { return p.ztunnelStep != stepAbsent }

// complete reports whether every part of the enrolment is in place.
func (p *podState) complete() bool {
	return p.rulesStep == stepDone && p.snatStep == stepDone && p.ztunnelStep == stepDone
}

func (p *podState) key() string { return p.namespace + "/" + p.name }

func (p *podState) workload() zds.Workload {
	return zds.Workload{UID: string(p.uid), Name: p.name, Namespace: p.namespace, ServiceAccount: p.sa}
}

func (p *podState) rules(base inpod.Rules) inpod.Rules {
	base.IPv6 = slices.ContainsFunc(p.ips, func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() })
	return base
}

// New returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" || cfg.Kube == nil || cfg.ZDS == nil || cfg.SNAT == nil {
		return nil, errors.New("agent: node name, Kubernetes client, ZDS server and probe SNAT are required")
	}
	if cfg.Finder == nil {
		cfg.Finder = &netnsfind.Finder{}
	}
	if cfg.ExcludeNamespaces == nil {
		cfg.ExcludeNamespaces = mesh.DefaultExcludedNamespaces
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg:  cfg,
		log:  cfg.Log,
		pods: map[types.UID]*podState{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "skiff-cni-pods"}),
	}
	if err := a.initMetrics(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) initMetrics() error {
	m := a.cfg.Meter
	if m == nil {
		return nil
	}
	var err error
	if a.failures, err = m.Int64Counter("skiff_cni_enrolment_failures",
		metric.WithDescription("Failed pod enrolments and removals, by operation.")); err != nil {
		return err
	}
	if a.events, err = m.Int64Counter("nodeagent_reconcile_events",
		metric.WithDescription("Pod reconciliations, by result.")); err != nil {
		return err
	}
	if _, err := m.Int64ObservableGauge("skiff_cni_pods_enrolled",
		metric.WithDescription("Pods whose traffic this node agent redirects to ztunnel."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(a.Enrolled()))
			return nil
		})); err != nil {
		return err
	}
	_, err = m.Int64ObservableGauge("ztunnel_connected",
		metric.WithDescription("Number of ztunnels connected to this node agent."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(0)
			if a.cfg.ZDS.Connected() {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	return err
}

func (a *Agent) countFailure(op string) {
	if a.failures != nil {
		a.failures.Add(context.Background(), 1, metric.WithAttributes(attribute.String("operation", op)))
	}
}

func (a *Agent) countEvent(result string) {
	if a.events != nil {
		a.events.Add(context.Background(), 1, metric.WithAttributes(attribute.String("result", result)))
	}
}

// Enrolled returns the number of enrolled pods (handed to ztunnel, even if
// their removal from the mesh is under way).
func (a *Agent) Enrolled() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, p := range a.pods {
		if p.enrolled() {
			n++
		}
	}
	return n
}

// IsEnrolled reports whether the pod with uid is enrolled.
func (a *Agent) IsEnrolled(uid types.UID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pods[uid]
	return p != nil && p.enrolled()
}

// mark records what is in place for a pod whose lock the caller holds.
func (a *Agent) mark(p *step, v step) {
	a.mu.Lock()
	defer a.mu.Unlock()
	*p = v
}

// Synced reports whether the agent has rebuilt its state and serves.
func (a *Agent) Synced() bool { return a.synced.Load() }

// Run watches the node's pods and their namespaces, rebuilds the agent's
// state, then serves ztunnel (ZDS) and the plugin (on pluginLn), and
// enrols and un-enrols running pods as labels change, until ctx ends.
func (a *Agent) Run(ctx context.Context, pluginLn net.Listener) error {
	defer a.queue.ShutDown()
	stopEvents := a.startEvents(ctx)
	defer stopEvents()
	pods := cache.NewSharedIndexInformer(a.cfg.Kube.PodsOnNode(a.cfg.NodeName), &corev1.Pod{}, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nss := cache.NewSharedIndexInformer(a.cfg.Kube.Namespaces(), &corev1.Namespace{}, 0, cache.Indexers{})
	if err := errors.Join(pods.SetTransform(trimPod), nss.SetTransform(trimNamespace)); err != nil {
		return err
	}
	a.podLister = listersv1.NewPodLister(pods.GetIndexer())
	a.nsLister = listersv1.NewNamespaceLister(nss.GetIndexer())

	enqueuePod := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(k)
		}
	}
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueuePod,
		UpdateFunc: func(_, obj any) { enqueuePod(obj) },
		DeleteFunc: enqueuePod,
	}); err != nil {
		return err
	}
	if _, err := nss.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			o, n := old.(*corev1.Namespace), obj.(*corev1.Namespace)
			if o.Labels[mesh.DataplaneModeLabel] == n.Labels[mesh.DataplaneModeLabel] {
				return
			}
			list, _ := a.podLister.Pods(n.Name).List(labels.Everything())
			for _, p := range list {
				a.queue.Add(p.Namespace + "/" + p.Name)
			}
		},
	}); err != nil {
		return err
	}
	// The informers stop, and are waited for, whenever Run returns.
	var informers sync.WaitGroup
	defer informers.Wait()
	ictx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	informers.Go(func() { pods.RunWithContext(ictx) })
	informers.Go(func() { nss.RunWithContext(ictx) })
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, nss.HasSynced) {
		return ctx.Err()
	}

	if err := a.rebuild(ctx); err != nil {
		return fmt.Errorf("agent: rebuilding state: %w", err)
	}

	errc := make(chan error, 2)
	go func() { errc <- a.cfg.ZDS.Serve(ctx) }()
	go func() { errc <- agentapi.Serve(ctx, pluginLn, agentapi.Handler(a, a.log)) }()
	a.synced.Store(true)
	a.log.Info("node agent ready", "node", a.cfg.NodeName, "enrolled", a.Enrolled())

	go func() {
		for a.processNext(ctx) {
		}
	}()
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
		}
	}
	return first
}

func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.reconcile(ctx, key); err != nil {
		a.countEvent("error")
		a.log.Warn("reconciling pod", "pod", key, "err", err)
		a.queue.AddRateLimited(key)
		return true
	}
	a.countEvent("success")
	a.queue.Forget(key)
	return true
}

// lastApplied is kubectl's copy of the object as applied, often its
// largest annotation.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// trimPod keeps, of a pod the informer caches, only what the agent reads
// (here and in mesh.Decide): specs, statuses and managed fields are most
// of a pod and none of them is needed.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	p.ObjectMeta = trimMeta(p.ObjectMeta)
	p.Spec = corev1.PodSpec{
		NodeName:           p.Spec.NodeName,
		HostNetwork:        p.Spec.HostNetwork,
		ServiceAccountName: p.Spec.ServiceAccountName,
	}
	p.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs}
	return p, nil
}

// trimNamespace keeps a namespace's name and labels.
func trimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	*n = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels,
	}}
	return n, nil
}

// trimMeta keeps what identifies an object, its labels and annotations
// (the informer hands over a fresh object, so they may be changed in place).
func trimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	delete(m.Annotations, lastApplied)
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, Annotations: m.Annotations, DeletionTimestamp: m.DeletionTimestamp,
	}
}

func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// wants reports whether the running pod belongs in the mesh now.
func (a *Agent) wants(p *corev1.Pod) bool {
	if terminal(p) || p.Spec.HostNetwork {
		return false
	}
	ns, err := a.nsLister.Get(p.Namespace)
	if err != nil {
		ns = nil
	}
	return mesh.Decide(p, ns, a.cfg.ExcludeNamespaces).Enrol
}

// podStateOf is the state of pod p with addresses ips, with no step done.
func podStateOf(p *corev1.Pod, ips []netip.Addr) *podState {
	return &podState{uid: p.UID, name: p.Name, namespace: p.Namespace, sa: serviceAccount(p), ips: ips}
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// rebuild restores the state after a (re)start, before ztunnel or the
// plugin are served: every pod of the node that belongs in the mesh gets
// complete rules and is remembered for ztunnel's snapshot (one enrolled
// before whose namespace is not found is remembered as one for ztunnel to
// keep); rules and annotations on pods that no longer belong are removed.
func (a *Agent) rebuild(ctx context.Context) error {
	list, err := a.podLister.List(labels.Everything())
	if err != nil {
		return err
	}
	var ips []netip.Addr
	idx := a.cfg.Finder.Index() // one scan of the node's namespaces
	for _, p := range list {
		pips := podIPs(p)
		if p.Spec.HostNetwork || terminal(p) || len(pips) == 0 {
			continue
		}
		want := a.wants(p)
		annotated := p.Annotations[mesh.RedirectionAnnotation] == mesh.RedirectionEnabled
		netns, path, err := netnsfind.Open(idx, pips)
		if err != nil {
			if want && annotated && p.DeletionTimestamp == nil {
				// Enrolled before the restart and not going away: ztunnel
				// is told to keep the pod (its rules are in place, its
				// listeners open), not to drop it for want of a namespace;
				// the worker looks again.
				a.log.Warn("pod's network namespace not found at start; ztunnel keeps serving it", "pod", p.Namespace+"/"+p.Name, "err", err)
				st := podStateOf(p, pips)
				st.rulesStep, st.snatStep, st.ztunnelStep = stepUnknown, stepDone, stepUnknown // SNAT: Reset below
				if err := a.cfg.ZDS.AddWorkload(ctx, st.workload(), nil); err != nil {
					a.log.Warn("registering pod with ZDS", "pod", st.key(), "err", err)
				}
				a.store(st)
				ips = append(ips, pips...)
				a.queue.Add(st.key())
			} else if want {
				// Retried by the worker once serving.
				a.log.Warn("pod's network namespace not found at start", "pod", p.Namespace+"/"+p.Name, "err", err)
				a.queue.Add(p.Namespace + "/" + p.Name)
			}
			continue
		}
		if !want {
			// Whatever an earlier agent left (even mid-enrolment) goes.
			if found, err := a.cfg.Rules.Inspect(netns); err != nil || !found.Absent() {
				a.log.Info("removing rules from a pod outside the mesh", "pod", p.Namespace+"/"+p.Name, "state", found.String())
				if err := a.cfg.Rules.Remove(netns); err != nil {
					// Remembered with only the rules in place: the worker
					// retries the removal (rate-limited) until it succeeds.
					a.countFailure("restore")
					a.log.Warn("removing rules from a pod outside the mesh; will retry", "pod", p.Namespace+"/"+p.Name, "err", err)
					st := podStateOf(p, pips)
					st.netns, st.netnsPath, st.rulesStep = netns, path, stepUnknown
					a.warnPod(st, ReasonUnenrolmentFailed, actionUnenrol, fmt.Errorf(
						"removing redirect rules left from an earlier enrolment of %s: %w; its traffic may still go to ztunnel until the removal, which is retried, succeeds", st.key(), err))
					a.store(st)
					a.queue.AddRateLimited(p.Namespace + "/" + p.Name)
					continue
				}
			}
			netns.Close()
			if annotated {
				if err := a.setAnnotation(ctx, p.Namespace, p.Name, false); err != nil {
					a.log.Warn("removing annotation", "pod", p.Namespace+"/"+p.Name, "err", err)
				}
			}
			continue
		}
		st := podStateOf(p, pips)
		st.netns, st.netnsPath = netns, path
		st.rulesStep, st.snatStep, st.ztunnelStep = stepDone, stepDone, stepDone // SNAT: Reset below
		rules := st.rules(a.cfg.Rules)
		found, err := rules.Inspect(netns)
		if err != nil || !found.Complete() {
			a.log.Info("repairing pod rules found at start", "pod", st.key(), "state", found.String(), "err", err)
			if err := rules.Install(netns); err != nil {
				a.countFailure("restore")
				a.log.Error("installing pod rules", "pod", st.key(), "err", err)
				a.warnPod(st, ReasonRedirectionFailed, actionEnrol, fmt.Errorf("restoring redirect rules of %s: %w", st.key(), err))
				netns.Close()
				a.queue.Add(st.key())
				continue
			}
		}
		// Not connected yet: the server remembers the pod for the snapshot.
		if err := a.cfg.ZDS.AddWorkload(ctx, st.workload(), netns); err != nil && !errors.Is(err, zds.ErrNotConnected) {
			a.log.Warn("registering pod with ZDS", "pod", st.key(), "err", err)
			st.ztunnelStep = stepUnknown
			a.queue.Add(st.key()) // the worker hands it over again
		}
		a.store(st)
		ips = append(ips, pips...)
		if !annotated {
			if err := a.setAnnotation(ctx, p.Namespace, p.Name, true); err != nil {
				a.log.Warn("annotating pod", "pod", st.key(), "err", err)
			}
		}
	}
	return a.cfg.SNAT.Reset(ips)
}

func (a *Agent) store(st *podState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.pods[st.uid]; old != nil && old.netns != st.netns {
		old.netns.Close()
	}
	a.pods[st.uid] = st
}

func (a *Agent) forget(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.pods[uid]; old != nil {
		old.netns.Close()
		delete(a.pods, uid)
	}
}

func (a *Agent) lookup(uid types.UID) *podState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[uid]
}

// byName returns the enrolled pods named ns/name (there may be an old UID
// still enrolled after a pod was replaced under the same name).
func (a *Agent) byName(ns, name string) []*podState {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*podState
	for _, p := range a.pods {
		if p.namespace == ns && p.name == name {
			out = append(out, p)
		}
	}
	return out
}

// reconcile brings one pod (namespace/name) to its desired state.
func (a *Agent) reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := a.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		for _, st := range a.byName(ns, name) {
			if err := a.unenrol(ctx, st.uid, false, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	// A pod replaced under the same name leaves its predecessor behind.
	for _, st := range a.byName(ns, name) {
		if st.uid != pod.UID {
			if err := a.unenrol(ctx, st.uid, false, false); err != nil {
				return err
			}
		}
	}
	want := a.wants(pod)
	st := a.lookup(pod.UID)
	annotated := pod.Annotations[mesh.RedirectionAnnotation] == mesh.RedirectionEnabled
	switch {
	case want && st == nil:
		if pod.DeletionTimestamp != nil {
			return nil
		}
		ips := podIPs(pod)
		if len(ips) == 0 {
			return nil // not networked yet; the plugin enrols it on ADD
		}
		return a.enrolRunning(ctx, pod, ips)
	case want:
		// Known, but perhaps half removed (the pod left the mesh and came
		// back before a failed step was retried): finish the enrolment.
		if err := a.resume(ctx, pod.UID); err != nil {
			return err
		}
		if !annotated {
			return a.setAnnotation(ctx, ns, name, true)
		}
	case st != nil:
		a.log.Info("pod left the mesh", "pod", key)
		return a.unenrol(ctx, pod.UID, true, !terminal(pod) && pod.DeletionTimestamp == nil)
	case annotated && pod.DeletionTimestamp == nil:
		return a.setAnnotation(ctx, ns, name, false)
	}
	return nil
}

// resume puts in place whatever part of a known pod's enrolment is not.
func (a *Agent) resume(ctx context.Context, uid types.UID) error {
	unlock := a.locks.lock(string(uid))
	defer unlock()
	st := a.lookup(uid)
	if st == nil {
		return nil
	}
	return a.finishEnrolment(ctx, st)
}

// finishEnrolment puts in place whatever part of known st's enrolment is not.
// The caller holds st's lock.
func (a *Agent) finishEnrolment(ctx context.Context, st *podState) error {
	if st.complete() {
		return nil
	}
	a.log.Info("completing the enrolment of a pod", "pod", st.key(), "uid", st.uid)
	err := a.findNetns(st)
	if err == nil {
		err = a.setUp(ctx, st)
	}
	if err != nil {
		// What is in place stays, recorded; the worker retries the rest.
		a.countFailure("live_enrol")
		a.warnPod(st, ReasonRedirectionFailed, actionEnrol, err)
		return err
	}
	a.log.Info("pod enrolled", "pod", st.key(), "uid", st.uid, "ips", st.ips)
	a.redirected(st)
	return nil
}

// findNetns opens st's network namespace if the agent has not got it (a
// pod kept at start without one). The caller holds st's lock.
func (a *Agent) findNetns(st *podState) error {
	if st.netns != nil {
		return nil
	}
	netns, path, err := a.cfg.Finder.Find(st.ips)
	if err != nil {
		return fmt.Errorf("finding the network namespace of %s (ztunnel keeps serving it meanwhile): %w", st.key(), err)
	}
	a.mu.Lock()
	st.netns, st.netnsPath = netns, path
	a.mu.Unlock()
	return nil
}

// enrolRunning enrols an already running pod (live enrolment).
func (a *Agent) enrolRunning(ctx context.Context, pod *corev1.Pod, ips []netip.Addr) error {
	unlock := a.locks.lock(string(pod.UID))
	defer unlock()
	if st := a.lookup(pod.UID); st != nil {
		// Known meanwhile (enrolled by the plugin, or found at start).
		return a.finishEnrolment(ctx, st)
	}
	st := podStateOf(pod, ips)
	netns, path, err := a.cfg.Finder.Find(ips)
	if err != nil {
		a.countFailure("live_enrol")
		err = fmt.Errorf("enrolling running pod %s: %w", st.key(), err)
		a.warnPod(st, ReasonRedirectionFailed, actionEnrol, err)
		return err
	}
	st.netns, st.netnsPath = netns, path
	a.log.Info("enrolling running pod", "pod", st.key(), "netns", path)
	if err := a.enrol(ctx, st); err != nil {
		netns.Close()
		a.countFailure("live_enrol")
		a.warnPod(st, ReasonRedirectionFailed, actionEnrol, err)
		return err
	}
	return nil
}

// enrol sets everything up for a new podState st and hands it to ztunnel;
// on failure it leaves nothing behind. The caller holds st's lock; on
// success the state owns st.netns.
func (a *Agent) enrol(ctx context.Context, st *podState) error {
	if !a.cfg.ZDS.Connected() {
		return &agentapi.Error{Message: "ztunnel is not connected to the node agent", Retryable: true}
	}
	if err := a.setUp(ctx, st); err != nil {
		handedOver := st.ztunnelStep != stepAbsent
		// Rolled back with the context's values but not its end: a
		// cancelled ADD must not leave a half-enrolled pod.
		if rerr := a.tearDown(context.WithoutCancel(ctx), st, true, true); rerr != nil {
			a.log.Warn("rolling back a failed enrolment", "pod", st.key(), "err", rerr)
		}
		if handedOver {
			// ztunnel's record of the pod is gone (or void), so is any
			// previous enrolment of it.
			a.forget(st.uid)
		}
		if errors.Is(err, zds.ErrNotConnected) {
			return &agentapi.Error{Message: fmt.Sprintf("handing %s to ztunnel: ztunnel is not connected to the node agent", st.key()), Retryable: true}
		}
		return err
	}
	a.store(st)
	if err := a.setAnnotation(ctx, st.namespace, st.name, true); err != nil {
		// Redirection works; the annotation is retried by the worker.
		a.log.Warn("annotating enrolled pod", "pod", st.key(), "err", err)
		a.queue.AddRateLimited(st.key())
	}
	a.log.Info("pod enrolled", "pod", st.key(), "uid", st.uid, "ips", st.ips)
	a.redirected(st)
	return nil
}

// setUp puts in place, in order, whatever of st's rules, probe SNAT and
// ztunnel hand-off is not, recording each step. Every step is idempotent,
// so one that failed midway is simply done again. The caller holds st's
// lock.
func (a *Agent) setUp(ctx context.Context, st *podState) error {
	if st.rulesStep != stepDone {
		if err := st.rules(a.cfg.Rules).Install(st.netns); err != nil {
			a.mark(&st.rulesStep, stepUnknown)
			return fmt.Errorf("installing redirect rules for %s: %w", st.key(), err)
		}
		a.mark(&st.rulesStep, stepDone)
	}
	if st.snatStep != stepDone {
		if err := a.cfg.SNAT.Add(st.ips...); err != nil {
			a.mark(&st.snatStep, stepUnknown)
			return fmt.Errorf("probe SNAT for %s: %w", st.key(), err)
		}
		a.mark(&st.snatStep, stepDone)
	}
	if st.ztunnelStep != stepDone {
		if err := a.cfg.ZDS.AddWorkload(ctx, st.workload(), st.netns); err != nil {
			a.mark(&st.ztunnelStep, stepUnknown)
			return fmt.Errorf("handing %s to ztunnel: %w", st.key(), err)
		}
		a.mark(&st.ztunnelStep, stepDone)
	}
	return nil
}

// tearDown undoes, in order, st's rules (when removeRules), ztunnel
// hand-off and probe SNAT, skipping what is known absent and recording
// each step. It stops at the first failure unless rollback: rules go
// first, so while they cannot be removed ztunnel keeps serving the traffic
// they still redirect. The caller holds st's lock.
func (a *Agent) tearDown(ctx context.Context, st *podState, removeRules, rollback bool) error {
	var errs []error
	if removeRules && st.rulesStep != stepAbsent {
		if err := a.findNetns(st); err != nil {
			a.mark(&st.rulesStep, stepUnknown)
			errs = append(errs, err)
		} else if err := st.rules(a.cfg.Rules).Remove(st.netns); err != nil {
			a.mark(&st.rulesStep, stepUnknown)
			errs = append(errs, fmt.Errorf("removing redirect rules of %s: %w", st.key(), err))
		} else {
			a.mark(&st.rulesStep, stepAbsent)
		}
	}
	if st.ztunnelStep != stepAbsent && (rollback || len(errs) == 0) {
		if err := a.cfg.ZDS.DelWorkload(ctx, string(st.uid)); err != nil {
			a.mark(&st.ztunnelStep, stepUnknown)
			errs = append(errs, fmt.Errorf("removing %s from ztunnel: %w", st.key(), err))
		} else {
			a.mark(&st.ztunnelStep, stepAbsent)
		}
	}
	if st.snatStep != stepAbsent && (rollback || len(errs) == 0) {
		if err := a.cfg.SNAT.Remove(st.ips...); err != nil {
			a.mark(&st.snatStep, stepUnknown)
			errs = append(errs, fmt.Errorf("removing probe SNAT of %s: %w", st.key(), err))
		} else {
			a.mark(&st.snatStep, stepAbsent)
		}
	}
	return errors.Join(errs...)
}

// unenrol removes the pod's rules (for a running pod leaving the mesh),
// tells ztunnel, removes its probe SNAT, forgets the pod and optionally
// removes its annotation. The pod is remembered until every step before
// the annotation succeeded, so a failure is retried (by the worker's
// rate-limited requeue, or the runtime's next DEL) instead of leaving rules
// behind that nothing remembers; and if the pod rejoins the mesh first,
// resume redoes what was undone.
func (a *Agent) unenrol(ctx context.Context, uid types.UID, removeRules, removeAnnotation bool) error {
	unlock := a.locks.lock(string(uid))
	defer unlock()
	st := a.lookup(uid)
	if st == nil {
		return nil
	}
	if err := a.tearDown(ctx, st, removeRules, false); err != nil {
		a.countFailure("del")
		if removeRules {
			// A running pod leaving the mesh (the others are going away).
			a.warnPod(st, ReasonUnenrolmentFailed, actionUnenrol, unenrolError(err))
		}
		return fmt.Errorf("%w (the pod stays known to the agent until this succeeds)", err)
	}
	a.forget(uid)
	a.log.Info("pod removed from the mesh", "pod", st.key(), "uid", uid)
	if removeAnnotation {
		// A failure is retried by the worker: the pod is annotated but not
		// enrolled.
		if err := a.setAnnotation(ctx, st.namespace, st.name, false); err != nil && !apierrors.IsNotFound(err) {
			a.countFailure("del")
			return err
		}
	}
	return nil
}

// unenrolError says what a failed removal means for the pod.
func unenrolError(err error) error {
	return fmt.Errorf("%w; the pod stays in the mesh until the removal, which is retried, succeeds", err)
}

// setAnnotation adds or removes the redirection annotation.
func (a *Agent) setAnnotation(ctx context.Context, ns, name string, enabled bool) error {
	val := "null"
	if enabled {
		val = `"` + mesh.RedirectionEnabled + `"`
	}
	patch := []byte(`{"metadata":{"annotations":{"` + mesh.RedirectionAnnotation + `":` + val + `}}}`)
	if err := a.cfg.Kube.PatchPod(ctx, ns, name, types.MergePatchType, patch); err != nil {
		return fmt.Errorf("annotating pod %s/%s: %w", ns, name, err)
	}
	return nil
}

// keyedMutex serialises work per pod UID (ZDS requires it, and the
// plugin's ADD may race the watcher).
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*refMutex{}
	}
	m := k.m[key]
	if m == nil {
		m = &refMutex{}
		k.m[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
