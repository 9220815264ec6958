package xdsserver

import (
	"fmt"
	"slices"
	"testing"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// TestPushSendsOnlyWhatChanged: in a large state, a push after a change
// carries the changed resources and nothing else, whatever else the update
// repeats; an update that changes nothing sends nothing.
func TestPushSendsOnlyWhatChanged(t *testing.T) {
	const n = 10000
	name := func(i int) string { return fmt.Sprintf("Kubernetes//Pod/ns-%d/pod-%d", i/20, i) }
	all := func(changed map[int]string) []index.Resource {
		out := make([]index.Resource, n)
		for i := range out {
			v := "v1"
			if c, ok := changed[i]; ok {
				v = c
			}
			out[i] = workload(name(i), v)
		}
		return out
	}
	e := newEnv(t, &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel"})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: all(nil)}})
	rec := &recorder{deltas: make(chan xds.Delta, 10)}
	runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	if d := rec.next(t); len(d.Updated) != n {
		t.Fatalf("initial state: %d resources, want %d", len(d.Updated), n)
	}
	for _, tc := range []struct {
		name             string
		pushes           [][]index.Update
		updated, removed []string
	}{
		{
			name:    "one changed, all repeated",
			pushes:  [][]index.Update{{{TypeURL: xds.AddressType, Upserted: all(map[int]string{7: "v2"})}}},
			updated: []string{name(7)},
		},
		{
			name:    "one removed, one that never was",
			pushes:  [][]index.Update{{{TypeURL: xds.AddressType, Removed: []string{name(8), "Kubernetes//Pod/ns-0/ghost"}}}},
			removed: []string{name(8)},
		},
		{
			// The first push sends nothing: the next delta holds only the
			// second one's change.
			name: "nothing changed, then one",
			pushes: [][]index.Update{
				{
					{TypeURL: xds.AddressType, Upserted: slices.DeleteFunc(all(map[int]string{7: "v2"}), func(r index.Resource) bool { return r.Name == name(8) })},
					{TypeURL: xds.AuthorizationType, Removed: []string{"ns-0/none"}},
				},
				{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload(name(9), "v2")}}},
			},
			updated: []string{name(9)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range tc.pushes {
				e.srv.Push(p)
			}
			d := rec.next(t)
			if got := names(d.Updated); !slices.Equal(got, tc.updated) || !slices.Equal(d.Removed, tc.removed) {
				t.Fatalf("pushed: updated %q removed %q; want updated %q removed %q", got, d.Removed, tc.updated, tc.removed)
			}
		})
	}
}
