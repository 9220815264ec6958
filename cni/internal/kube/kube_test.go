package kube

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/skiffmesh/skiff/cni/internal/testenv"
)

// arrive bounds waits for things that must happen; it only limits a broken
// run.
const arrive = 30 * time.Second

func create[T any](t *testing.T, f func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := f(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func names(list []metav1.Object) []string {
	var out []string
	for _, o := range list {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	slices.Sort(out)
	return out
}

// TestListWatch: pods are listed and watched only on the node asked for,
// namespaces all of them, each decoded into its type from protobuf.
func TestListWatch(t *testing.T) {
	cluster := testenv.Start(t)
	admin := cluster.Client
	cfg := rest.CopyConfig(cluster.Config)
	var mu sync.Mutex
	answered := map[string]bool{} // content types of the apiserver's answers
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil {
				mu.Lock()
				answered[resp.Header.Get("Content-Type")] = true
				mu.Unlock()
			}
			return resp, err
		})
	})
	c, err := NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(answered) == 0 {
			t.Error("no answer from the apiserver seen")
		}
		for ct := range answered {
			if !strings.HasPrefix(ct, k8sruntime.ContentTypeProtobuf) {
				t.Errorf("the apiserver answered in %v, want only protobuf", slices.Collect(maps.Keys(answered)))
			}
		}
	})
	for _, ns := range []string{"a", "b"} {
		create(t, admin.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	create(t, admin.CoreV1().Pods("a").Create, pod("a", "here", "node-1"))
	create(t, admin.CoreV1().Pods("b").Create, pod("b", "here-too", "node-1"))
	create(t, admin.CoreV1().Pods("a").Create, pod("a", "elsewhere", "node-2"))

	for _, tc := range []struct {
		name string
		lw   *cache.ListWatch
		// keep picks the objects the test made (not the apiserver's own
		// namespaces); want are those listed (ns/name).
		keep     func(metav1.Object) bool
		want     []string
		ignored  func(t *testing.T) // makes an object the watch must not report (nil: none)
		add      func(t *testing.T) // then one it must report: wantSeen
		wantSeen string
	}{
		{
			name:     "pods on node-1",
			lw:       c.PodsOnNode("node-1"),
			keep:     func(metav1.Object) bool { return true },
			want:     []string{"a/here", "b/here-too"},
			ignored:  func(t *testing.T) { create(t, admin.CoreV1().Pods("b").Create, pod("b", "late-elsewhere", "node-2")) },
			add:      func(t *testing.T) { create(t, admin.CoreV1().Pods("b").Create, pod("b", "late", "node-1")) },
			wantSeen: "b/late",
		},
		{
			name: "namespaces",
			lw:   c.Namespaces(),
			keep: func(o metav1.Object) bool { return len(o.GetName()) == 1 },
			want: []string{"/a", "/b"},
			add: func(t *testing.T) {
				create(t, admin.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "c"}})
			},
			wantSeen: "/c",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), arrive)
			defer cancel()
			list, err := tc.lw.ListWithContext(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			items, err := meta.ExtractList(list)
			if err != nil {
				t.Fatal(err)
			}
			var kept []metav1.Object
			for _, it := range items {
				switch it.(type) {
				case *corev1.Pod, *corev1.Namespace:
				default:
					t.Fatalf("listed a %T", it)
				}
				if o := it.(metav1.Object); tc.keep(o) {
					kept = append(kept, o)
				}
			}
			if got := names(kept); !slices.Equal(got, tc.want) {
				t.Errorf("listed %q, want %q", got, tc.want)
			}

			rv, err := meta.NewAccessor().ResourceVersion(list)
			if err != nil {
				t.Fatal(err)
			}
			w, err := tc.lw.WatchWithContext(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			if tc.ignored != nil {
				tc.ignored(t)
			}
			tc.add(t)
			for {
				select {
				case ev, ok := <-w.ResultChan():
					if !ok {
						t.Fatal("watch closed")
					}
					if ev.Type == watch.Error {
						t.Fatalf("watch error: %v", ev.Object)
					}
					o := ev.Object.(metav1.Object)
					got := o.GetNamespace() + "/" + o.GetName()
					if ev.Type == watch.Added && got == tc.wantSeen {
						return
					}
					if tc.keep(o) && got != tc.wantSeen {
						t.Errorf("watch reported %s %s", ev.Type, got)
					}
				case <-ctx.Done():
					t.Fatalf("no watch event for %s", tc.wantSeen)
				}
			}
		})
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestPatchPod: a merge patch reaches the pod.
func TestPatchPod(t *testing.T) {
	cluster := testenv.Start(t)
	c, err := NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	create(t, cluster.Client.CoreV1().Pods("default").Create, pod("default", "web", "node-1"))
	ctx := context.Background()
	if err := c.PatchPod(ctx, "default", "web", types.MergePatchType, []byte(`{"metadata":{"annotations":{"k":"v"}}}`)); err != nil {
		t.Fatal(err)
	}
	p, err := cluster.Client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Annotations["k"] != "v" {
		t.Errorf("annotations after the patch: %v", p.Annotations)
	}
	if err := c.PatchPod(ctx, "default", "missing", types.MergePatchType, []byte(`{}`)); err == nil {
		t.Error("patching a missing pod succeeded")
	}
}

// TestRecorder: Events are written with what they were given, on pods and
// on cluster-scoped objects, and one that repeats becomes a series instead
// of another Event.
func TestRecorder(t *testing.T) {
	cluster := testenv.Start(t)
	c, err := NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	rec := NewRecorder(c, "test-controller", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	podRef := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "default", Name: "web", UID: "uid-1"}
	nodeRef := corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: "node-1", UID: "node-1"}
	for _, tc := range []struct {
		name              string
		ref               corev1.ObjectReference
		eventType         string
		reason, action    string
		note              string
		times             int
		wantNS            string
		wantSeriesAtLeast int32 // 0: no series
	}{
		{"once on a pod", podRef, corev1.EventTypeNormal, "Redirected", "Enrol", "traffic is redirected", 1, "default", 0},
		{"repeated on a pod", podRef, corev1.EventTypeWarning, "RedirectionFailed", "Enrol", "first failure", 3, "default", 2},
		{"on a node", nodeRef, corev1.EventTypeWarning, "CNIChainingFailed", "Chain", "not valid JSON", 1, "default", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range tc.times {
				rec.Event(tc.ref, tc.eventType, tc.reason, tc.action, tc.note)
			}
			var got []eventsv1.Event
			deadline := time.Now().Add(arrive)
			for {
				list, err := cluster.Client.EventsV1().Events(tc.wantNS).List(context.Background(), metav1.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got = got[:0]
				for _, e := range list.Items {
					if e.Reason == tc.reason && e.Regarding.UID == tc.ref.UID {
						got = append(got, e)
					}
				}
				if len(got) == 1 && (tc.wantSeriesAtLeast == 0 || got[0].Series != nil && got[0].Series.Count >= tc.wantSeriesAtLeast) {
					break
				}
				if len(got) > 1 {
					t.Fatalf("%d Events, want one", len(got))
				}
				if time.Now().After(deadline) {
					t.Fatalf("timed out waiting for the Event; have %+v", got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			e := got[0]
			if e.Type != tc.eventType || e.Action != tc.action || e.Note != tc.note || e.Regarding != tc.ref ||
				e.ReportingController != "test-controller" || e.ReportingInstance == "" || e.EventTime.IsZero() {
				t.Errorf("Event: %+v", e)
			}
			if tc.wantSeriesAtLeast == 0 && e.Series != nil {
				t.Errorf("series %+v on a single Event", e.Series)
			}
		})
	}
}
