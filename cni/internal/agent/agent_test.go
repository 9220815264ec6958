package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/skiffmesh/skiff/cni/internal/agentapi"
	"github.com/skiffmesh/skiff/cni/internal/kube"
	"github.com/skiffmesh/skiff/cni/internal/mesh"
	"github.com/skiffmesh/skiff/cni/internal/netnsfind"
	"github.com/skiffmesh/skiff/cni/internal/probesnat"
	"github.com/skiffmesh/skiff/cni/internal/testenv"
	"github.com/skiffmesh/skiff/pkg/inpod"
	"github.com/skiffmesh/skiff/pkg/inpod/inpodtest"
	"github.com/skiffmesh/skiff/pkg/leaktest"
	"github.com/skiffmesh/skiff/pkg/zds"
)

// arrive bounds waits for things that must happen; it only limits a broken
// run.
const arrive = 30 * time.Second

const testNode = "node-1"

// ztunnel is the ztunnel side of ZDS: it records the pods it holds.
type ztunnel struct {
	mu   sync.Mutex
	pods map[string]bool
	kept map[string]bool // UIDs the node agent said to keep
	dels int
	// refuseDel makes DelWorkload fail (and keep the pod).
	refuseDel bool
}

func (z *ztunnel) AddWorkload(_ context.Context, w zds.Workload, netns *os.File) error {
	netns.Close()
	z.mu.Lock()
	defer z.mu.Unlock()
	z.pods[w.UID] = true
	return nil
}

func (z *ztunnel) KeepWorkload(_ context.Context, uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.kept[uid] = true
	return nil
}

func (z *ztunnel) wasKept(uid string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.kept[uid]
}

func (z *ztunnel) delCount() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.dels
}

func (z *ztunnel) DelWorkload(_ context.Context, uid string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.refuseDel {
		return errors.New("test ztunnel refuses to delete")
	}
	delete(z.pods, uid)
	z.dels++
	return nil
}

func (z *ztunnel) setRefuseDel(v bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.refuseDel = v
}

func (z *ztunnel) SnapshotSent(context.Context) error { return nil }

func (z *ztunnel) has(uid string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.pods[uid]
}

// node is a running agent with its apiserver, ztunnel and node namespace.
type node struct {
	agent   *Agent
	kube    *testenv.Cluster
	zt      *ztunnel
	snat    *probesnat.SNAT
	metrics *sdkmetric.ManualReader
	podDir  string
}

func startNode(t *testing.T) *node { return startNodeAfter(t, nil) }

// startNodeAfter is startNode with before run once the apiserver and the
// node's directories exist, before the agent starts.
func startNodeAfter(t *testing.T, before func(*node)) *node {
	inpodtest.RequireRoot(t)
	cluster := testenv.Start(t)
	n := &node{kube: cluster, zt: &ztunnel{pods: map[string]bool{}, kept: map[string]bool{}}, podDir: t.TempDir()}
	short, err := os.MkdirTemp("", "ska") // unix socket paths must be short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })

	nodeNS := inpodtest.NewNetNSIn(t, n.podDir, "node-")
	n.snat, err = probesnat.New(probesnat.Config{Table: inpodtest.RandName("ska-"), NetNS: nodeNS.File})
	if err != nil {
		t.Fatal(err)
	}
	zsrv, err := zds.NewServer(filepath.Join(short, "zds.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zsrv.Close() })
	n.metrics = sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(n.metrics))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	kc, err := kube.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	n.agent, err = New(Config{
		NodeName: testNode, Kube: kc, ZDS: zsrv, SNAT: n.snat,
		Finder:            &netnsfind.Finder{Dirs: []string{n.podDir}},
		ExcludeNamespaces: []string{"kube-system"},
		Meter:             mp.Meter("test"),
		Log:               slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(n)
	}
	ln, err := agentapi.Listen(filepath.Join(short, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	agentDone, ztDone := make(chan error, 1), make(chan struct{})
	go func() { agentDone <- n.agent.Run(ctx, ln) }()
	go func() { defer close(ztDone); _ = zds.Run(ctx, filepath.Join(short, "zds.sock"), n.zt, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-agentDone; err != nil {
			t.Errorf("agent: %v", err)
		}
		<-ztDone
		_ = n.snat.Teardown()
	})
	eventually(t, "agent ready with ztunnel connected", func() bool { return n.agent.Ready() == nil })
	return n
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// eventually polls cond until it holds (it observes the agent's work; it
// does not stand in for it).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(arrive)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *node) namespace(t *testing.T, name string, ambient bool) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{}
	if ambient {
		labels[mesh.DataplaneModeLabel] = "ambient"
	}
	ns, err := n.kube.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		_, err = n.kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	} else {
		ns.Labels = labels
		_, err = n.kube.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (n *node) annotation(t *testing.T, ns, name string) string {
	t.Helper()
	p, err := n.kube.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Annotations[mesh.RedirectionAnnotation]
}

// failures reads skiff_cni_enrolment_failures{operation}.
func (n *node) failures(t *testing.T, op string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := n.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "skiff_cni_enrolment_failures" {
				for _, dp := range sum.DataPoints {
					if v, _ := dp.Attributes.Value("operation"); v.AsString() == op {
						return dp.Value
					}
				}
			}
		}
	}
	return 0
}

// podEvents returns the Events of the given reason recorded on the pod.
func (n *node) podEvents(t *testing.T, ns string, uid types.UID, reason string) []eventsv1.Event {
	t.Helper()
	list, err := n.kube.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == uid && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits for an Event of the reason on the pod and checks its
// type, reporter and that its note says what is wrong (names want).
func (n *node) waitEvent(t *testing.T, ns string, uid types.UID, reason, eventType, want string) eventsv1.Event {
	t.Helper()
	var got []eventsv1.Event
	eventually(t, "a "+reason+" event on the pod", func() bool {
		got = n.podEvents(t, ns, uid, reason)
		return len(got) > 0
	})
	e := got[0]
	t.Logf("%s %s event: %s", e.Type, reason, e.Note)
	if e.Type != eventType || e.Regarding.Kind != "Pod" || e.ReportingController != EventController ||
		!strings.Contains(e.Note, want) {
		t.Errorf("%s event: type %q, regarding %s, reporter %q, note %q; want type %q, a Pod, reporter %q, a note naming %q",
			reason, e.Type, e.Regarding.Kind, e.ReportingController, e.Note, eventType, EventController, want)
	}
	return e
}

// enrolledPod creates a pod of ns on the node and enrols it as the plugin
// does on ADD, in a network namespace of its own.
func (n *node) enrolledPod(t *testing.T, ns, name string, ip netip.Addr) (*corev1.Pod, *inpodtest.NetNS) {
	t.Helper()
	ctx := context.Background()
	pod, err := n.kube.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	netns := inpodtest.NewNetNSIn(t, n.podDir, "pod-")
	if err := n.agent.Add(ctx, &agentapi.AddRequest{
		Pod:   agentapi.Pod{Name: name, Namespace: ns, UID: string(pod.UID)},
		Netns: netns.Path, ContainerID: "c-" + name, IPs: []netip.Addr{ip},
	}); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	return pod, netns
}

// annotatedPod creates a running pod of ns on the node with ip, annotated
// as redirected: what an agent that enrolled it before a restart left.
func (n *node) annotatedPod(t *testing.T, ns, name string, ip netip.Addr) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod, err := n.kube.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{mesh.RedirectionAnnotation: mesh.RedirectionEnabled}},
		Spec: corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	pod, err = n.kube.Client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func rulesIn(t *testing.T, ns *inpodtest.NetNS) inpod.State {
	t.Helper()
	st, err := inpod.Rules{}.Inspect(ns.File)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// lockRules puts a table named inpod.TableName into ns that only the
// returned connection may change, as another program owning a table there
// would: until release closes the connection (and the table with it),
// removing or installing the pod's rules fails.
func lockRules(t *testing.T, ns *inpodtest.NetNS) (release func()) {
	t.Helper()
	return inpodtest.ForeignTable(t, ns, inpodtest.TableOwner)
}

// TestUnenrolRetriesRuleRemoval: when a pod leaves the mesh and its
// redirect rules cannot be removed, the agent keeps the pod (enrolled,
// annotated, served by ztunnel, in the probe SNAT) and retries until the
// rules are gone, then finishes the un-enrolment.
func TestUnenrolRetriesRuleRemoval(t *testing.T) {
	n := startNode(t)
	n.namespace(t, "shop", true)
	ip := netip.MustParseAddr("10.77.0.5")
	pod, netns := n.enrolledPod(t, "shop", "web", ip)
	uid := string(pod.UID)

	// Enrolled: rules installed, ztunnel serves it, annotated by the agent.
	if st := rulesIn(t, netns); !st.Complete() {
		t.Fatalf("rules after ADD: %s", st)
	}
	if !n.zt.has(uid) || !n.agent.IsEnrolled(pod.UID) {
		t.Fatal("pod not with ztunnel / not enrolled after ADD")
	}
	n.waitEvent(t, "shop", pod.UID, ReasonRedirected, corev1.EventTypeNormal, "ztunnel")
	eventually(t, "pod annotated "+mesh.RedirectionAnnotation+"="+mesh.RedirectionEnabled, func() bool {
		return n.annotation(t, "shop", "web") == mesh.RedirectionEnabled
	})

	release := lockRules(t, netns)
	n.namespace(t, "shop", false) // the pod leaves the mesh

	// Removal fails, and is retried: the failure count keeps rising. The
	// pod shows why, in one Event however often the removal is retried.
	n.waitEvent(t, "shop", pod.UID, ReasonUnenrolmentFailed, corev1.EventTypeWarning, inpod.TableName)
	seen := n.failures(t, "del")
	eventually(t, "a retried removal failure", func() bool { return n.failures(t, "del") >= seen+2 })
	if evs := n.podEvents(t, "shop", pod.UID, ReasonUnenrolmentFailed); len(evs) != 1 {
		t.Errorf("%d %s events after %d failed removals, want them folded into one", len(evs), ReasonUnenrolmentFailed, n.failures(t, "del"))
	}
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"pod still enrolled", n.agent.IsEnrolled(pod.UID)},
		{"ztunnel still serves it", n.zt.has(uid)},
		{"still annotated", n.annotation(t, "shop", "web") == mesh.RedirectionEnabled},
		{"rules not absent", !rulesIn(t, netns).Absent()},
		{"probe SNAT kept", slices.Contains(members(t, n.snat), ip)},
	} {
		if !c.ok {
			t.Errorf("while the rules cannot be removed: %s: false", c.what)
		}
	}

	// The obstacle goes: the next retry finishes the un-enrolment.
	release()
	eventually(t, "pod un-enrolled", func() bool { return !n.agent.IsEnrolled(pod.UID) })
	eventually(t, "annotation removed", func() bool { return n.annotation(t, "shop", "web") == "" })
	if st := rulesIn(t, netns); !st.Absent() {
		t.Errorf("rules after un-enrolment: %s", st)
	}
	if n.zt.has(uid) {
		t.Error("ztunnel still has the pod")
	}
	if slices.Contains(members(t, n.snat), ip) {
		t.Error("probe SNAT still has the pod's address")
	}
}

func members(t *testing.T, s *probesnat.SNAT) []netip.Addr {
	t.Helper()
	m, err := s.Members()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRejoinBeforeRetryConverges: a pod leaves the mesh, its rules are
// removed but a later step of the removal fails; before the retry succeeds
// the pod rejoins the mesh. The agent must not stop at its record of the
// pod: the rules come back, ztunnel serves the pod and it is annotated,
// whichever step failed.
func TestRejoinBeforeRetryConverges(t *testing.T) {
	for _, tc := range []struct {
		name string
		// block makes the removal fail after (some of) the rules went;
		// unblock lifts that once the pod is back in the mesh.
		block func(t *testing.T, n *node, netns *inpodtest.NetNS) (unblock func())
	}{
		{"ztunnel refuses the delete", func(t *testing.T, n *node, _ *inpodtest.NetNS) func() {
			n.zt.setRefuseDel(true)
			return func() { n.zt.setRefuseDel(false) }
		}},
		{"rules table taken over midway", func(t *testing.T, _ *node, netns *inpodtest.NetNS) func() {
			return lockRules(t, netns)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t)
			n.namespace(t, "shop", true)
			ip := netip.MustParseAddr("10.77.0.6")
			pod, netns := n.enrolledPod(t, "shop", "web", ip)
			uid := string(pod.UID)
			eventually(t, "pod annotated", func() bool { return n.annotation(t, "shop", "web") == mesh.RedirectionEnabled })

			unblock := tc.block(t, n, netns)
			n.namespace(t, "shop", false) // the pod leaves the mesh
			eventually(t, "a failed removal with the redirection gone", func() bool {
				return n.failures(t, "del") >= 1 && !rulesIn(t, netns).Complete()
			})

			n.namespace(t, "shop", true) // and comes back before the removal is retried
			unblock()
			eventually(t, "the pod fully enrolled again", func() bool {
				return rulesIn(t, netns).Complete() && n.zt.has(uid) && n.agent.IsEnrolled(pod.UID) &&
					n.annotation(t, "shop", "web") == mesh.RedirectionEnabled &&
					slices.Contains(members(t, n.snat), ip)
			})
		})
	}
}

// TestStartRetriesLeftoverRuleRemoval: at start, a pod outside the mesh
// still carries redirection an earlier agent left, and its removal fails.
// The agent keeps retrying it (rate-limited) rather than logging it once,
// the pod keeps its redirection annotation while the removal fails, and
// once the obstacle goes the pod is left clean and unannotated.
func TestStartRetriesLeftoverRuleRemoval(t *testing.T) {
	ip := netip.MustParseAddr("10.77.0.9")
	var netns *inpodtest.NetNS
	var release func()
	var podUID types.UID
	n := startNodeAfter(t, func(n *node) {
		n.namespace(t, "legacy", false)
		podUID = n.annotatedPod(t, "legacy", "old", ip).UID
		netns = inpodtest.NewNetNSIn(t, n.podDir, "pod-")
		inpodtest.AddAddr(t, netns, "lo", netip.PrefixFrom(ip, 32))
		// What an earlier agent left, then a table the agent cannot remove.
		if err := (inpod.Rules{}).Install(netns.File); err != nil {
			t.Fatal(err)
		}
		release = lockRules(t, netns)
	})

	eventually(t, "the failed removal retried", func() bool { return n.failures(t, "del") >= 2 })
	n.waitEvent(t, "legacy", podUID, ReasonUnenrolmentFailed, corev1.EventTypeWarning, inpod.TableName)
	if got := n.annotation(t, "legacy", "old"); got != mesh.RedirectionEnabled {
		t.Errorf("annotation while the rules cannot be removed = %q, want it kept", got)
	}
	if n.agent.Enrolled() != 0 {
		t.Errorf("%d pods enrolled, want none", n.agent.Enrolled())
	}

	release()
	eventually(t, "the pod left clean and unannotated", func() bool {
		return rulesIn(t, netns).Absent() && n.annotation(t, "legacy", "old") == ""
	})
}

// TestStartKeepsPodWithoutNamespace: at start the agent cannot find the
// network namespace of a pod it had enrolled. It tells ztunnel to keep the
// pod (dropping it would cut the pod off: its rules still redirect to
// ztunnel), keeps its probe SNAT, and completes the enrolment once the
// namespace is found, without ztunnel ever being told to delete it.
func TestStartKeepsPodWithoutNamespace(t *testing.T) {
	ip := netip.MustParseAddr("10.77.0.11")
	var podUID types.UID
	n := startNodeAfter(t, func(n *node) {
		n.namespace(t, "app", true)
		podUID = n.annotatedPod(t, "app", "web", ip).UID
	})
	if !n.zt.wasKept(string(podUID)) {
		t.Fatal("ztunnel was not told to keep the pod whose namespace is missing")
	}
	if got := members(t, n.snat); !slices.Contains(got, ip) {
		t.Errorf("probe SNAT members %v, want %v kept", got, ip)
	}

	netns := inpodtest.NewNetNSIn(t, n.podDir, "pod-")
	inpodtest.AddAddr(t, netns, "lo", netip.PrefixFrom(ip, 32))
	eventually(t, "the enrolment completed once the namespace is found", func() bool {
		return n.zt.has(string(podUID)) && rulesIn(t, netns).Complete()
	})
	if d := n.zt.delCount(); d != 0 {
		t.Errorf("ztunnel was told to delete %d pods, want none", d)
	}
}

// TestLiveEnrolmentFailureIsAnEvent: a running pod whose namespace joins
// the mesh cannot get its redirect rules (another program's table is in
// the way). The pod carries a Warning Event saying so, naming the table,
// and stays out of the mesh; once the table goes, the retried enrolment
// succeeds and the pod carries a Normal Redirected Event.
func TestLiveEnrolmentFailureIsAnEvent(t *testing.T) {
	n := startNode(t)
	ctx := context.Background()
	ip := netip.MustParseAddr("10.77.0.12")
	n.namespace(t, "shop", false)
	pod, err := n.kube.Client.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec:       corev1.PodSpec{NodeName: testNode, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	netns := inpodtest.NewNetNSIn(t, n.podDir, "pod-")
	inpodtest.AddAddr(t, netns, "lo", netip.PrefixFrom(ip, 32))
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if _, err := n.kube.Client.CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	release := lockRules(t, netns)

	n.namespace(t, "shop", true) // the running pod joins the mesh
	n.waitEvent(t, "shop", pod.UID, ReasonRedirectionFailed, corev1.EventTypeWarning, inpod.TableName)
	seen := n.failures(t, "live_enrol")
	eventually(t, "the failed enrolment retried", func() bool { return n.failures(t, "live_enrol") >= seen+2 })
	if evs := n.podEvents(t, "shop", pod.UID, ReasonRedirectionFailed); len(evs) != 1 {
		t.Errorf("%d %s events after %d failed enrolments, want them folded into one", len(evs), ReasonRedirectionFailed, n.failures(t, "live_enrol"))
	}
	if n.agent.IsEnrolled(pod.UID) || n.zt.has(string(pod.UID)) {
		t.Error("pod enrolled while its rules cannot be installed")
	}
	if evs := n.podEvents(t, "shop", pod.UID, ReasonRedirected); len(evs) != 0 {
		t.Errorf("%s event while the rules cannot be installed: %q", ReasonRedirected, evs[0].Note)
	}

	release()
	eventually(t, "the pod enrolled", func() bool {
		return n.agent.IsEnrolled(pod.UID) && rulesIn(t, netns).Complete() && n.zt.has(string(pod.UID)) &&
			n.annotation(t, "shop", "web") == mesh.RedirectionEnabled
	})
	n.waitEvent(t, "shop", pod.UID, ReasonRedirected, corev1.EventTypeNormal, "ztunnel")
}

// The installer's outcomes are Events on the node, the first one even when
// it comes before the agent runs.
func TestChainingOutcomeIsANodeEvent(t *testing.T) {
	bad := errors.New("CNI configuration /etc/cni/net.d/10-net.conflist left untouched: not valid JSON")
	n := startNodeAfter(t, func(n *node) { n.agent.ChainingChanged(bad) })
	nodeEvents := func(reason string) []eventsv1.Event {
		list, err := n.kube.Client.EventsV1().Events(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Regarding.Kind == "Node" && e.Regarding.Name == testNode && e.Reason == reason {
				out = append(out, e)
			}
		}
		return out
	}
	for _, tc := range []struct {
		reason, eventType, note string
		report                  func()
	}{
		{ReasonChainingFailed, corev1.EventTypeWarning, "not valid JSON", func() {}},
		{ReasonChained, corev1.EventTypeNormal, "is chained", func() { n.agent.ChainingChanged(nil) }},
	} {
		tc.report()
		var got []eventsv1.Event
		eventually(t, "a "+tc.reason+" event on the node", func() bool {
			got = nodeEvents(tc.reason)
			return len(got) > 0
		})
		e := got[0]
		t.Logf("%s %s event: %s", e.Type, e.Reason, e.Note)
		if e.Type != tc.eventType || e.ReportingController != EventController || !strings.Contains(e.Note, tc.note) {
			t.Errorf("%s event: type %q, reporter %q, note %q; want type %q, reporter %q, a note saying %q",
				tc.reason, e.Type, e.ReportingController, e.Note, tc.eventType, EventController, tc.note)
		}
	}
}

// TestEnrolmentCyclesLeakNothing: pods enrolled and removed (CNI DEL, then
// the object deleted) a hundred times leave the agent with the goroutines
// and file descriptors it had, network-namespace handles included.
func TestEnrolmentCyclesLeakNothing(t *testing.T) {
	n := startNode(t)
	n.namespace(t, "shop", true)
	ctx := context.Background()
	cycle := func(i int) {
		name := "cycle-" + strconv.Itoa(i)
		pod, netns := n.enrolledPod(t, "shop", name, netip.AddrFrom4([4]byte{10, 9, byte(i / 200), byte(i%200 + 1)}))
		eventually(t, name+" served by ztunnel", func() bool { return n.zt.has(string(pod.UID)) })
		if err := n.agent.Del(ctx, &agentapi.DelRequest{
			Pod:   agentapi.Pod{Name: name, Namespace: "shop", UID: string(pod.UID)},
			Netns: netns.Path, ContainerID: "c-" + name,
		}); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if err := n.kube.Client.CoreV1().Pods("shop").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, name+" gone from ztunnel", func() bool { return !n.zt.has(string(pod.UID)) })
		if err := netns.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	// A few cycles first, so that what is made once (connections,
	// informers' buffers) exists before the baseline.
	const warm, cycles = 5, 100
	for i := range warm {
		cycle(i)
	}
	base := leaktest.Take(t)
	for i := warm; i < warm+cycles; i++ {
		cycle(i)
	}
	now := leaktest.Settle(t, base, arrive)
	t.Logf("after %d cycles: %d goroutines (baseline %d), %d open files (baseline %d)", cycles, now.Goroutines, base.Goroutines, now.Files, base.Files)
}
