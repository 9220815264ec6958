package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/skiffmesh/skiff/istiod-lite/internal/auth"
	"github.com/skiffmesh/skiff/istiod-lite/internal/index"
	"github.com/skiffmesh/skiff/pkg/xds"
)

// podAuth authenticates every stream as a ztunnel pod named by the
// stream's "x-pod" metadata (a pod-bound token), or by "x-sa" as a
// service account without a pod.
type podAuth struct{}

func (podAuth) FromContext(ctx context.Context) (*auth.Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if sa := md.Get("x-sa"); len(sa) == 1 {
		ns, name, _ := strings.Cut(sa[0], "/")
		return &auth.Caller{Namespace: ns, ServiceAccount: name}, nil
	}
	pod := "ztunnel"
	if v := md.Get("x-pod"); len(v) == 1 {
		pod = v[0]
	}
	return &auth.Caller{Namespace: "istio-system", ServiceAccount: "ztunnel", PodName: pod, PodUID: "uid-" + pod, NodeName: "node-" + pod}, nil
}

func bigState(n int, version string) []index.Resource {
	var rs []index.Resource
	for i := range n {
		rs = append(rs, workload(fmt.Sprintf("w%05d", i), version+strings.Repeat("x", 200)))
	}
	return rs
}

// stalled opens n streams as pods stalled-<i> on one connection with small
// fixed flow-control windows, each subscribed to every address and never
// reading. It returns once each has been sent its first response.
func stalled(t *testing.T, e *env, n int) {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	for i := range n {
		sctx := metadata.AppendToOutgoingContext(ctx, "x-pod", fmt.Sprintf("stalled-%d", i))
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
	}
	waitCounter(t, e, "pilot_xds_pushes", int64(n))
}

// Clients that never read block the server's sends to them on flow
// control; that must not delay anyone else's state.
func TestStalledClientsDoNotStarveOthers(t *testing.T) {
	// No send timeout in this test: the stalled streams stay stalled.
	e := newEnvWith(t, Options{Auth: podAuth{}, SendTimeout: time.Hour, MaxStreamsPerCaller: 1})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: bigState(1500, "v1")}})
	stalled(t, e, 100)
	// A second full-size change: every stalled stream's send now blocks.
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: bigState(1500, "v2")}})

	rec := &recorder{deltas: make(chan xds.Delta, 10)}
	c := runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	if d := rec.next(t); len(d.Updated) != 1500 {
		t.Fatalf("got %d resources, want 1500", len(d.Updated))
	}
	<-c.Ready()
}

// A stream that does not take a response within the send timeout is
// closed; others carry on.
func TestSendTimeoutClosesStalledStreams(t *testing.T) {
	e := newEnvWith(t, Options{Auth: podAuth{}, SendTimeout: 200 * time.Millisecond})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: bigState(1500, "v1")}})
	stalled(t, e, 3)
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: bigState(1500, "v2")}})
	deadline := time.Now().Add(20 * time.Second)
	for e.srv.Clients() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d stalled streams still open", e.srv.Clients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec := &recorder{deltas: make(chan xds.Delta, 10)}
	runClient(t, e.addr, xds.Subscription{TypeURL: xds.AddressType, Apply: rec.apply})
	if d := rec.next(t); len(d.Updated) != 1500 {
		t.Fatalf("got %d resources, want 1500", len(d.Updated))
	}
}

func TestStreamsPerCallerAreLimited(t *testing.T) {
	e := newEnvWith(t, Options{Auth: podAuth{}, MaxStreamsPerCaller: 2})
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1")}}})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// open starts a stream with metadata key=value and returns it with
	// the outcome of its first response.
	open := func(key, value string) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), key, value))
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		// A stream the server already refused fails Send with io.EOF;
		// its status comes from Recv (grpc.ClientStream.SendMsg).
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}); err != nil && !errors.Is(err, io.EOF) {
			cancel()
			return nil, err
		}
		if _, err = st.Recv(); err != nil {
			cancel()
			return nil, err
		}
		return cancel, nil
	}
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for _, tc := range []struct {
		key, value string
		want       codes.Code
	}{
		{"x-pod", "a", codes.OK},
		{"x-pod", "a", codes.OK},
		{"x-pod", "a", codes.ResourceExhausted},
		{"x-pod", "b", codes.OK}, // another ztunnel of the same account
		{"x-sa", "istio-system/ztunnel", codes.OK},
		{"x-sa", "istio-system/ztunnel", codes.OK},
		{"x-sa", "istio-system/ztunnel", codes.ResourceExhausted},
	} {
		cancel, err := open(tc.key, tc.value)
		if status.Code(err) != tc.want {
			t.Fatalf("stream for %s: %v, want %v", tc.value, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "limit 2") {
			t.Fatalf("refusal does not say why: %v", err)
		}
		if cancel != nil {
			cancels = append(cancels, cancel)
		}
	}
	// Closing a stream makes room.
	cancels[0]()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cancel, err := open("x-pod", "a")
		if err == nil {
			cancels = append(cancels, cancel)
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after closing a stream: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Addresses and policies describe the whole mesh: only node proxies and
// waypoints may subscribe to them.
func TestMeshStateGoesToNodeProxiesAndWaypointsOnly(t *testing.T) {
	e := newEnvWith(t, Options{Auth: podAuth{}})
	e.srv.Push([]index.Update{
		{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1")}},
		{TypeURL: xds.WaypointType, Upserted: []index.Resource{workload("shop/wp", "v1")}},
	})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name, sa string
		req      *discoveryv3.DeltaDiscoveryRequest
		want     codes.Code
	}{
		{"ztunnel addresses", "istio-system/ztunnel", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}, codes.OK},
		{"ztunnel policies", "istio-system/ztunnel", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AuthorizationType, ResourceNamesSubscribe: []string{"*"}}, codes.OK},
		{"waypoint addresses", "shop/wp", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}, codes.OK},
		{"workload addresses", "shop/default", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}, codes.PermissionDenied},
		{"workload policies", "shop/default", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AuthorizationType}, codes.PermissionDenied},
		{"too many names", "shop/wp", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: manyNames(1001)}, codes.InvalidArgument},
		{"names at the limit", "shop/wp", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: manyNames(1000)}, codes.OK},
		{"node proxies are not limited", "istio-system/ztunnel", &discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: manyNames(5000)}, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-sa", tc.sa))
			defer cancel()
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			_, err = st.Recv()
			if status.Code(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func manyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("name-%d", i)
	}
	return out
}

// A waypoint's access to the mesh state ends with its configuration.
func TestRemovedWaypointLosesMeshState(t *testing.T) {
	e := newEnvWith(t, Options{Auth: podAuth{}})
	e.srv.Push([]index.Update{
		{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("a", "v1")}},
		{TypeURL: xds.WaypointType, Upserted: []index.Resource{workload("shop/wp", "v1"), workload("shop/other", "v1")}},
	})
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	open := func(sa string) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-sa", sa))
		t.Cleanup(cancel)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.AddressType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		return st
	}
	wp, other, zt := open("shop/wp"), open("shop/other"), open("istio-system/ztunnel")

	e.srv.Push([]index.Update{{TypeURL: xds.WaypointType, Removed: []string{"shop/wp"}}})
	if _, err := wp.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed waypoint's stream: %v, want PermissionDenied", err)
	}
	// The others carry on: they receive the next change.
	e.srv.Push([]index.Update{{TypeURL: xds.AddressType, Upserted: []index.Resource{workload("b", "v1")}}})
	for name, st := range map[string]discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient{"other waypoint": other, "ztunnel": zt} {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rs := resp.GetResources(); len(rs) != 1 || rs[0].GetName() != "b" {
			t.Fatalf("%s received %v, want b", name, rs)
		}
	}
}
